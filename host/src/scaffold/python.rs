//! The Python template: an `app.py` for componentize-py.

use super::{COMPONENTIZE_PY_VERSION, wasm_file_name};

/// The componentize-py command that builds plugin `name` in its directory.
pub(super) fn build_command(name: &str) -> String {
    format!(
        "componentize-py -d wit -w rooms componentize app -o {}",
        wasm_file_name(name)
    )
}

/// (relative path, contents) of the Python template's own files.
pub(super) fn files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", app_py(name)),
        ("README.md", readme(name)),
        (".gitignore", "*.wasm\n__pycache__/\nbindings/\n".to_owned()),
    ]
}

fn app_py(name: &str) -> String {
    const TEMPLATE: &str = r#""""__NAME__: a roomlet rooms plugin in Python.

One instance of this component serves one room, and the host calls it one
hook at a time. This starting point accepts every join, sends room messages
to everyone else and messages addressed to a peer to that peer. The guide is
docs/plugins.md in the roomlet repository.

Build:  __BUILD__
Run:    roomlet serve --dev --module rooms=__WASM__

A hook must not raise (except `Err` where the WIT has a result): any other
exception is a trap. Its traceback goes to the host's log and event log
(`roomlet events tail`), never to the client, which gets `module-error`.
"""

from wit_world import exports
from wit_world.exports import room
from wit_world.imports import log, types

# Stored beside every snapshot; change it when the snapshot format changes.
STATE_VERSION = "__NAME__/1"


class Room(exports.Room):
    def on_create(self, cause: room.CreateCause) -> room.RoomSettings:
        log.log(log.Level.DEBUG, f"room starts ({cause.name.lower()})")
        # observe_messages off: the host routes messages as on_message below
        # does, without calling it. Turn it off if you keep that routing.
        return room.RoomSettings(observe_signals=False, observe_messages=True)

    def on_join(self, peer: types.Peer) -> list[room.Action]:
        # To refuse the join:
        #   from componentize_py_types import Err
        #   raise Err(types.Rejection(code="...", reason="..."))
        return []

    def on_leave(self, peer: types.Peer) -> list[room.Action]:
        return []

    def on_message(self, message: types.RoomMessage) -> list[room.Action]:
        out = room.Outgoing(sender=message.sender, data=message.data)
        if isinstance(message.target, types.Target_Peer):
            return [room.Action_Send(([message.target.value], out))]
        return [room.Action_Broadcast((out, [message.sender]))]

    def on_signal(self, signal: types.Signal) -> list[room.Action]:
        return []

    def on_timer(self) -> list[room.Action]:
        return []

    def state_version(self) -> str:
        return STATE_VERSION

    def snapshot(self) -> bytes:
        return b""

    def restore(self, version: str, state: bytes) -> None:
        # Nothing in memory yet, so any snapshot will do. Once you keep
        # state, check `version` and refuse what you cannot read with
        # `raise Err("why")` (from componentize_py_types): that rolls a hot
        # reload back.
        return None
"#;
    TEMPLATE
        .replace("__BUILD__", &build_command(name))
        .replace("__WASM__", &wasm_file_name(name))
        .replace("__NAME__", name)
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\n\
         A roomlet rooms plugin in Python (a WebAssembly component for the `rooms` world in `wit/`,\n\
         built with componentize-py).\n\n\
         ```sh\n\
         pip install 'componentize-py=={COMPONENTIZE_PY_VERSION}.*'   # once\n\
         {build}\n\
         roomlet serve --dev --module rooms={wasm}\n\
         ```\n\n\
         `componentize-py -d wit -w rooms bindings bindings` writes the generated `wit_world`\n\
         package into `bindings/` for an editor's completion. The component carries the\n\
         Python interpreter (about 18 MB) and takes seconds to compile the first time a\n\
         node loads it; the node caches the compiled artifact.\n\n\
         `wit/` is a copy of the contract of the roomlet that generated this plugin;\n\
         replace it when you upgrade roomlet. The guide is `docs/plugins.md` in\n\
         the roomlet repository.\n",
        build = build_command(name),
        wasm = wasm_file_name(name)
    )
}
