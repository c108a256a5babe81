//! Business rules, free of JSON-RPC and SQL.

pub mod opportunity;
