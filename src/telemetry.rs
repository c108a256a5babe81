//! Logging: text for people, JSON for machines, levels from `RUST_LOG` (default `info`).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines of log waiting for the writing thread before a caller that logs waits for room: a
/// few MiB at most (a line is a few hundred bytes), and no line is ever dropped.
const LOG_LINES_WAITING: usize = 16_384;

/// Installs the global subscriber; a second call (as in tests) leaves the first in place and
/// returns `None`. The lines go to standard error through a thread of their own, which writes
/// what has gathered in one system call: a call's log line no longer costs it a `write` of its
/// own (about 5% of the service's CPU under `bench/run`'s `get`). Keep the guard until the
/// process ends: dropping it writes out what is still waiting.
#[must_use = "dropping the guard stops the log's writing thread"]
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_WAITING)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.ok().map(|()| guard)
}
