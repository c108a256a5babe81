//! Business rules, free of JSON-RPC and SQL.

pub mod opportunity;

use uuid::Uuid;

/// What a UUID must look like, for the error messages.
pub const UUID_FORM: &str = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

/// A UUID in the 36-character hyphenated form, any case (`uuid` alone would also take the
/// simple, braced and URN forms): in params, headers and the token's claims alike.
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    Uuid::try_parse(text).ok().filter(|_| text.len() == 36)
}
