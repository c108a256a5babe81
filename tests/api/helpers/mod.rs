//! What the API suites share, one concern a file:
//!
//! | file | what |
//! |---|---|
//! | `app.rs` | [`TestApp`]: the application on a database of its own (SQLite, or PostgreSQL with `TEST_DATABASE_URL`), its tokens, raw HTTP and WebSocket access, [`TestApp::count`] |
//! | `typed.rs` | the typed client of `clients/rust` for happy paths ([`TestApp::client`]) |
//! | `calls.rs` | JSON-RPC requests built by hand, over HTTP, WebSocket or a raw socket |
//! | `envelope.rs` | the assertions on answers: a result, or an error in CONTRACT §4's shape |
//! | `process.rs` | the binary as a process: start, log, signals |
//!
//! The slow suite (`tests/faults/`) includes this module too.

mod app;
mod calls;
mod envelope;
mod process;
mod typed;

pub use app::*;
pub use calls::*;
pub use envelope::*;
pub use process::*;
pub use typed::*;
