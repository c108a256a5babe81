//! The integration suite: the real application over real JSON-RPC on HTTP and WebSocket, on
//! SQLite by default and on PostgreSQL when `TEST_DATABASE_URL` is set. The slow fault and soak
//! tests are a target of their own, `tests/faults/`.

mod auth;
mod browsers;
mod changes;
mod discover;
mod durability;
mod group_commit;
mod helpers;
mod hostile;
mod lifecycle;
mod observability;
mod openapi;
mod processes;
mod smoke;
mod transport;
mod validation;
