//! The default modules' logic compiled natively, behind the same host
//! types (feature `native-modules`, for benchmarks only: never ship it).
//!
//! It answers one question: what does running auth, relay and rooms as
//! WebAssembly cost end to end, compared with the same Rust code called
//! directly? So everything but the guest call stays as it is: the host
//! imports (`kv`, `config`, `log`, `membership`, `secrets`, `clock`) are the
//! very `HostState` implementations a component reaches, the call is timed
//! into the same metric, and room instances are still created (a room's
//! store carries its kv transaction and membership). Only the call into the
//! component becomes a call into `roomlet_module_auth`, `roomlet_module_relay` and
//! `roomlet_module_rooms`.

use super::bindings::authenticator::{AuthError, AuthRequest};
use super::bindings::relay_policy::{Frame, FrameKind, Verdict};
use super::bindings::room::{Action, CreateCause, Outgoing, RoomSettings};
use super::bindings::rooms::roomlet::signal::{config, kv, log, membership};
use super::bindings::types::{Grants, Identity, Peer, Rejection, RoomMessage, Signal, Target};
use super::state::{HostState, ModuleEnv};
use std::cell::RefCell;

/// A room's native policy state: what the component keeps in its `static`.
#[derive(Debug)]
pub struct NativeRoom(roomlet_module_rooms::policy::Room);

impl Default for NativeRoom {
    fn default() -> Self {
        Self(roomlet_module_rooms::policy::Room::new())
    }
}

/// `policy::Host` over the store's own host imports.
struct Imports<'a>(RefCell<&'a mut HostState>);

impl roomlet_module_rooms::policy::Host for Imports<'_> {
    fn config(&self, key: &str) -> Option<String> {
        config::Host::get(*self.0.borrow_mut(), key.to_string())
    }

    fn peer_ids(&self) -> Vec<String> {
        membership::Host::peers(*self.0.borrow_mut())
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        kv::Host::get(*self.0.borrow_mut(), key.to_string())
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        kv::Host::set(*self.0.borrow_mut(), key.to_string(), value.to_vec())
            .map_err(|e| format!("{e:?}"))
    }

    fn log(&self, level: roomlet_module_rooms::policy::Level, message: &str) {
        use log::Level;
        let level = match level {
            roomlet_module_rooms::policy::Level::Debug => Level::Debug,
            roomlet_module_rooms::policy::Level::Warn => Level::Warn,
        };
        log::Host::log(*self.0.borrow_mut(), level, message.to_string());
    }
}

fn rejection(r: roomlet_module_rooms::policy::Rejection) -> Rejection {
    Rejection {
        code: r.code,
        reason: r.reason,
    }
}

fn actions(actions: Vec<roomlet_module_rooms::policy::Action>) -> Vec<Action> {
    use roomlet_module_rooms::policy::Action as P;
    actions
        .into_iter()
        .map(|a| match a {
            P::Send { to, sender, data } => Action::Send((to, Outgoing { sender, data })),
            P::Broadcast {
                sender,
                data,
                except,
            } => Action::Broadcast((Outgoing { sender, data }, except)),
            P::Reject(r) => Action::Reject(rejection(r)),
            P::SetTimer(ms) => Action::SetTimer(ms),
            P::Close(reason) => Action::Close(reason),
        })
        .collect()
}

/// The rooms hooks, as `modules/rooms/src/component.rs` binds them.
impl NativeRoom {
    pub(crate) fn call_on_create(
        &mut self,
        host: &mut HostState,
        _cause: CreateCause,
    ) -> RoomSettings {
        RoomSettings {
            observe_signals: self.0.on_create(&Imports(RefCell::new(host))),
            observe_messages: false,
        }
    }

    pub(crate) fn call_on_join(
        &mut self,
        host: &mut HostState,
        _peer: &Peer,
    ) -> Result<Vec<Action>, Rejection> {
        self.0
            .on_join(&Imports(RefCell::new(host)))
            .map(actions)
            .map_err(rejection)
    }

    pub(crate) fn call_on_leave(&mut self, host: &mut HostState, _peer: &Peer) -> Vec<Action> {
        actions(self.0.on_leave(&Imports(RefCell::new(host))))
    }

    pub(crate) fn call_on_message(&mut self, host: &mut HostState, m: &RoomMessage) -> Vec<Action> {
        let target = match &m.target {
            Target::Room => roomlet_module_rooms::policy::Target::Room,
            Target::Peer(id) => roomlet_module_rooms::policy::Target::Peer(id.clone()),
        };
        actions(self.0.on_message(
            &Imports(RefCell::new(host)),
            m.sender.clone(),
            target,
            m.data.clone(),
        ))
    }

    pub(crate) fn call_on_signal(
        &mut self,
        _host: &mut HostState,
        _signal: &Signal,
    ) -> Vec<Action> {
        Vec::new()
    }

    pub(crate) fn call_on_timer(&mut self, host: &mut HostState) -> Vec<Action> {
        actions(self.0.on_timer(&Imports(RefCell::new(host))))
    }

    pub(crate) fn call_state_version(&mut self, _host: &mut HostState) -> String {
        roomlet_module_rooms::policy::STATE_VERSION.to_string()
    }

    pub(crate) fn call_snapshot(&mut self, _host: &mut HostState) -> Vec<u8> {
        self.0.snapshot()
    }

    pub(crate) fn call_restore(
        &mut self,
        _host: &mut HostState,
        version: &str,
        state: &[u8],
    ) -> Result<(), String> {
        self.0.restore(version, state)
    }
}

/// The relay policy, as `modules/relay/src/component.rs` binds it.
pub(crate) fn relay_check(env: &ModuleEnv, frame: &Frame<'_>) -> Verdict {
    use roomlet_module_relay::policy;
    let max = env
        .config
        .get(policy::MAX_PAYLOAD_KEY)
        .and_then(|t| policy::parse_max_payload(t))
        .unwrap_or(policy::DEFAULT_MAX_PAYLOAD_BYTES);
    let kind = match frame.kind {
        FrameKind::Signal(_) => policy::Kind::Signal,
        FrameKind::Message => policy::Kind::Message,
    };
    match policy::check(kind, frame.sender, frame.to, frame.payload, max) {
        Ok(()) => Verdict::Forward,
        Err(r) => Verdict::Reject(Rejection {
            code: r.code.to_string(),
            reason: r.reason,
        }),
    }
}

/// Token verification, as `modules/auth/src/component.rs` binds it.
pub(crate) fn authenticate(env: &ModuleEnv, request: &AuthRequest) -> Result<Identity, AuthError> {
    use roomlet_module_auth::token::{self, TokenError};
    let leeway_ms = env
        .config
        .get("clock-leeway-seconds")
        .and_then(|t| token::parse_leeway_ms(t))
        .unwrap_or(token::DEFAULT_LEEWAY_SECS * 1000);
    let verified = token::verify(
        &request.token,
        &request.room,
        crate::clock::unix_millis(),
        leeway_ms,
        |key| {
            env.secrets
                .as_ref()
                .and_then(|s| s.api_secret(key))
                .map(str::to_owned)
        },
    );
    match verified {
        Ok(v) => {
            let g = &v.grants;
            let mut grants = Grants::empty();
            for (set, flag) in [
                (g.join, Grants::JOIN),
                (g.room_create, Grants::ROOM_CREATE),
                (g.publish, Grants::PUBLISH),
                (g.subscribe, Grants::SUBSCRIBE),
                (g.publish_data, Grants::PUBLISH_DATA),
                (g.room_admin, Grants::ROOM_ADMIN),
                (g.hidden, Grants::HIDDEN),
            ] {
                if set {
                    grants |= flag;
                }
            }
            Ok(Identity {
                grants,
                identity: v.identity,
                name: v.name,
                metadata: v.metadata,
                room: v.room,
                expires_at_ms: v.expires_at_ms,
            })
        }
        Err(e) => Err(match e {
            TokenError::Malformed => AuthError::Malformed,
            TokenError::BadSignature => AuthError::BadSignature,
            TokenError::BadAlgorithm => AuthError::BadAlgorithm,
            TokenError::UnknownKey => AuthError::UnknownKey,
            TokenError::Expired => AuthError::Expired,
            TokenError::NotYetValid => AuthError::NotYetValid,
            TokenError::WrongRoom => AuthError::WrongRoom,
            TokenError::MissingGrant(grant) => AuthError::MissingGrant(grant.to_string()),
        }),
    }
}

/// `media::Env` over the module's own config and secrets.
struct MediaImports<'a>(&'a ModuleEnv);

impl roomlet_module_auth::media::Env for MediaImports<'_> {
    fn config(&self, key: &str) -> Option<String> {
        self.0.config.get(key).cloned()
    }
    fn secret(&self, provider: &str) -> Option<String> {
        self.0
            .secrets
            .as_ref()
            .and_then(|s| s.media_secret(provider))
            .map(str::to_owned)
    }
    fn random_u32(&self) -> u32 {
        rand::random()
    }
}

/// Media credentials, as `modules/auth/src/component.rs` binds them.
pub(crate) fn issue_media(
    env: &ModuleEnv,
    request: &super::bindings::media::MediaRequest,
) -> Result<Vec<super::bindings::media::MediaCredential>, String> {
    let g = request.peer.grants;
    let req = roomlet_module_auth::media::Request {
        room: &request.room,
        peer: &request.peer.id,
        name: &request.peer.name,
        region: &request.region,
        publish: g.contains(Grants::PUBLISH),
        publish_data: g.contains(Grants::PUBLISH_DATA),
        subscribe: g.contains(Grants::SUBSCRIBE),
        expires_at_ms: request.expires_at_ms,
        now_ms: crate::clock::unix_millis(),
    };
    Ok(roomlet_module_auth::media::issue(&req, &MediaImports(env))?
        .into_iter()
        .map(|c| super::bindings::media::MediaCredential {
            provider: c.provider.to_owned(),
            url: c.url,
            app_id: c.app_id,
            channel: c.channel,
            account: c.account,
            token: c.token,
            expires_at_ms: c.expires_at_ms,
        })
        .collect())
}
