//! `log`: module log lines, into the host's tracing pipeline with the
//! function, room and module version attached.

use crate::bindings::rooms::roomlet::signal::log::{Host, Level};
use crate::state::HostState;

use crate::output::{self, MAX_LINE, Stream};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let _span = tracing::trace_span!("log.log").entered();
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let env = &self.env;
        // Warnings and errors (a panic hook's message) reach the event log
        // too, within the room's output budget.
        let loud = match level {
            Level::Warn => Some(tracing::Level::WARN),
            Level::Error => Some(tracing::Level::ERROR),
            _ => None,
        };
        if let Some(loud) = loud {
            let room = self
                .room
                .as_ref()
                .map_or_else(|| "".into(), |r| r.name.clone());
            output::emit(&env.output, &room, Stream::Log, loud, &message);
            return;
        }
        let message = env.output.mask(&message);
        let room = self.room.as_ref().map(|r| &*r.name).unwrap_or("");
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "roomlet::module",
                    $lvl,
                    function = %env.function,
                    module_version = %env.version,
                    room,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info | Level::Warn | Level::Error => emit!(tracing::Level::INFO),
        }
    }
}
