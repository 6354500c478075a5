//! `log`: module log lines, into the host's tracing pipeline with the
//! function, room and module version attached.

use crate::bindings::rooms::roomlet::signal::log::{Host, Level};
use crate::state::HostState;

/// Longer lines are cut: a module must not be able to flood the log.
const MAX_LINE: usize = 4096;

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
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
    }
}
