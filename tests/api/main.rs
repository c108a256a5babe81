//! The integration suite: the real application over real JSON-RPC on HTTP and WebSocket, on
//! SQLite by default and on PostgreSQL when `TEST_DATABASE_URL` is set.

mod auth;
mod browsers;
mod changes;
mod discover;
mod durability;
mod faults;
mod feed_faults;
mod group_commit;
mod helpers;
mod hostile;
mod lifecycle;
mod observability;
mod openapi;
mod pg_instance;
mod processes;
mod smoke;
mod soak;
mod transport;
mod validation;
