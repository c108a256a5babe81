//! The slow suite: faults (PostgreSQL stopped, killed or unreachable, a full disk, `kill -9` of
//! the service), the change feed's faults and the soak tests, on the real application. Apart
//! from the quick suite (`tests/api/`) so that `cargo test --test api` gives fast feedback;
//! `cargo test` runs both, and so does CI. Tests that need PostgreSQL binaries or procps say so
//! and skip outside CI (see `pg_instance::in_ci`).

// The shared helpers of the quick suite; not all of them are used here.
#[allow(dead_code, unused_imports)]
#[path = "../api/helpers/mod.rs"]
mod helpers;

mod faults;
mod feed_faults;
mod pg_instance;
mod soak;
