//! Where the daemon's log lines go and how they look: plain lines with a
//! timestamp on a terminal or in a file, and journald's priority prefixes
//! (`<3>`, `<4>`, `<6>`, `<7>`) without a timestamp of our own when the
//! journal reads standard error, so `journalctl -p err -u profiled` finds the
//! errors.

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time::SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The variable that names the log filter (tracing-subscriber syntax).
pub const FILTER_VAR: &str = "PROFILED_LOG";

/// The filter without `PROFILED_LOG`: our own lines from `info` up, other
/// crates' from `warn` up (tantivy alone wrote two thirds of the lines at
/// `info`, none of them useful to an administrator).
pub const DEFAULT_FILTER: &str = "warn,profiled=info";

/// Installs the process's log subscriber, writing to standard error.
pub fn init() {
    let filter =
        EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder.event_format(Journald).init();
    } else {
        builder
            // Colour codes only for a person at a terminal.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Whether standard error is the journal's stream: systemd sets
/// `JOURNAL_STREAM=<dev>:<inode>` of the stream it connected, and the
/// variable alone is not enough (a child of a service inherits it while its
/// standard error may be a file), so the device and inode must match.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    value.to_str().and_then(parse_stream) == Some((stat.st_dev, stat.st_ino))
}

/// `<dev>:<inode>` as systemd writes it.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority journald reads from a `<N>` line prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Lines for journald: the priority prefix on every line of the event (the
/// journal makes each line an entry, and a line without a prefix would be
/// filed as `info`), the target, the message and fields; no timestamp and no
/// level word, since the journal records both.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let inner = format::Format::<format::Full, SystemTime>::default()
            .without_time()
            .with_level(false)
            .with_ansi(false);
        let mut text = String::new();
        inner.format_event(ctx, Writer::new(&mut text), event)?;
        let prefix = priority(*event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{prefix}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stream_variable() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
    }
}
