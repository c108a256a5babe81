//! Logging: text for people, JSON for machines, levels from `RUST_LOG` (default `info`).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

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
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        // RUST_LOG's filter outermost, so that its level is the hint every callsite sees (a
        // `trace!` of a library is not even made at the default level).
        LogFormat::Text => Box::new(layer.with_filter(no_caller_text()).with_filter(filter)),
        LogFormat::Json => Box::new(layer.json().flatten_event(true).with_filter(no_caller_text()).with_filter(filter)),
    };
    tracing_subscriber::registry().with(layer).try_init().ok().map(|()| guard)
}

/// What may be written, whatever `RUST_LOG` says: the libraries that see
/// the raw connection write it below `info` (jsonrpsee at `trace`: the request's headers with
/// the bearer token, the URI with an `access_token`, the body with method names and params; at
/// `debug`: an unknown subscription id as the caller wrote it; soketto: the frames), and
/// CONTRACT.md §2/§3 keep tokens and caller text out of every log line.
fn no_caller_text() -> Targets {
    use tracing::Level;
    Targets::new().with_default(Level::TRACE).with_target("jsonrpsee", Level::INFO).with_target("soketto", Level::INFO)
}
