//! Table definitions per backend, as `diesel print-schema` writes them (see `diesel.toml`).

pub mod postgres;
pub mod sqlite;
