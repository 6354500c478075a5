//! Components' stdout and stderr lines into the node's event log, beside
//! the host log the runtime writes them to: an author whose plugin panics
//! finds the message with `roomlet events tail`.

use roomlet_events::{Event, EventKind, EventSink};
use roomlet_runtime::output::{GuestLine, OutputSink};

/// Records each line the runtime lets through as a `component_output` event.
pub(super) struct ToEventLog(pub(super) EventSink);

impl OutputSink for ToEventLog {
    fn line(&self, line: &GuestLine<'_>) {
        let message = match line.dropped_before {
            0 => line.text.to_owned(),
            n => format!(
                "{} ({n} earlier lines dropped: over the rate limit)",
                line.text
            ),
        };
        // Nobody waits on these: a full or failing log drops the line,
        // never the call.
        drop(
            self.0.record(
                Event::new(EventKind::ComponentOutput, line.room)
                    .function(line.function.name())
                    .module_version(line.version)
                    .reason(line.stream.name())
                    .message(&message),
            ),
        );
    }
}
