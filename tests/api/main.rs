//! The integration suite: the real application over real JSON-RPC on HTTP and WebSocket, on
//! SQLite by default and on PostgreSQL when `TEST_DATABASE_URL` is set.

mod auth;
mod discover;
mod durability;
mod helpers;
mod observability;
mod smoke;
mod transport;
mod validation;
