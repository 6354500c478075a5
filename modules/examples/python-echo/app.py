"""python-echo: a roomlet rooms plugin written in Python.

Every room message goes to the other peers (a message addressed to one peer
goes to that peer), and the sender gets a reply from the room itself:
``{"echo": <data>, "by": "python"}``.

Build the component from this directory (see README.md):

    componentize-py -d ../../../wit -w rooms componentize app -o python-echo.wasm

The class must be called ``Room`` (the exported interface's name). A hook
must not raise: a Python exception inside an export is a trap, which
discards the instance and the call's kv writes, and counts against the
room's trap budget.
"""

import json

from wit_world import exports
from wit_world.exports import room
from wit_world.imports import log, types

STATE_VERSION = "python-echo/1"


class Room(exports.Room):
    def on_create(self, cause: room.CreateCause) -> room.RoomSettings:
        log.log(log.Level.DEBUG, f"python-echo room starts ({cause.name.lower()})")
        return room.RoomSettings(observe_signals=False, observe_messages=True)

    def on_join(self, peer: types.Peer) -> list[room.Action]:
        # To refuse the join:
        #   from componentize_py_types import Err
        #   raise Err(types.Rejection(code="...", reason="..."))
        return []

    def on_leave(self, peer: types.Peer) -> list[room.Action]:
        return []

    def on_message(self, message: types.RoomMessage) -> list[room.Action]:
        sender = message.sender
        forward = room.Outgoing(sender=sender, data=message.data)
        if isinstance(message.target, types.Target_Peer):
            actions: list[room.Action] = [room.Action_Send(([message.target.value], forward))]
        else:
            actions = [room.Action_Broadcast((forward, [sender]))]
        # `data` is JSON text, whatever the client's encoding.
        echo = json.dumps({"echo": json.loads(message.data), "by": "python"})
        actions.append(room.Action_Send(([sender], room.Outgoing(sender="", data=echo))))
        return actions

    def on_signal(self, signal: types.Signal) -> list[room.Action]:
        return []

    def on_timer(self) -> list[room.Action]:
        return []

    def state_version(self) -> str:
        return STATE_VERSION

    def snapshot(self) -> bytes:
        return b""

    def restore(self, version: str, state: bytes) -> None:
        # No in-memory state, so any snapshot will do (even another
        # plugin's). A plugin with state checks `version` and refuses what
        # it cannot read with `raise Err("why")`.
        return None
