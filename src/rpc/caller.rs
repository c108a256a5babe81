//! The preamble of every method (CONTRACT.md §3, §4): who calls, with which scope, in which
//! workspace — checked in the contract's order, so that a handler only adds its own params.

use uuid::Uuid;

use super::params::{self, FieldReader};
use crate::auth::{Principal, SCOPE_WRITE};
use crate::error::{ApiError, ValidationFailure};
use crate::http::CallContext;

/// What a method needs of the token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `opportunity:read` or `opportunity:write`.
    Read,
    /// `opportunity:write`.
    Write,
}

/// The caller, refused as UNAUTHORIZED (no or a bad token) or FORBIDDEN (scope not granted).
pub fn principal(context: Option<&CallContext>, access: Access) -> Result<&Principal, ApiError> {
    let context = context.ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    let principal = context.principal()?;
    match access {
        Access::Read => principal.require_read()?,
        Access::Write => principal.require_scope(SCOPE_WRITE)?,
    }
    Ok(principal)
}

/// The workspace a call names: `params.workspaceId`, else the `X-Workspace-Id` header.
/// Problems go to the reader's failure (on `workspaceId`).
pub fn named_workspace(reader: &mut FieldReader<'_>, context: Option<&CallContext>) -> Option<Uuid> {
    // A header sent more than once has no one value. (Changes check a repeated
    // Idempotency-Key themselves; reads ignore that header.)
    repeated_header(context, "workspaceId", &mut reader.failure);
    let from_params = reader.optional("workspaceId", params::uuid);
    if from_params.is_some() || reader.failure.has_field("workspaceId") || !reader.is_object() {
        return from_params;
    }
    let header = context.and_then(|c| c.workspace_header.as_deref())?;
    match params::parse_uuid(header.trim()) {
        Some(ws) => Some(ws),
        None => {
            let message = format!("the X-Workspace-Id header must be a UUID ({})", params::UUID_FORM);
            reader.failure.field("workspaceId", message);
            None
        }
    }
}

/// Reports `field`'s header when it was sent more than once.
pub fn repeated_header(context: Option<&CallContext>, field: &str, failure: &mut ValidationFailure) {
    for (f, header) in context.map_or(&[][..], |c| &c.repeated[..]) {
        if *f == field {
            failure.field(*f, format!("the {header} header was sent more than once; send it once"));
        }
    }
}

/// Finishes the checks of §4 that follow the params: every problem of the params at once
/// (BAD_REQUEST, with a missing workspace among them when the token grants several), then the
/// grant of the named workspace (FORBIDDEN). Returns the workspace the call acts in.
pub fn workspace(principal: &Principal, named: Option<Uuid>, mut failure: ValidationFailure) -> Result<Uuid, ApiError> {
    let mut resolved = None;
    if named.is_none() && !failure.has_field("workspaceId") {
        // Several workspaces and none named is a problem of the params, reported with the others.
        resolved = principal.resolve_workspace(None, &mut failure)?;
    }
    failure.into_result().map_err(ApiError::InvalidParams)?;
    let workspace = match resolved {
        Some(ws) => ws,
        None => principal
            .resolve_workspace(named, &mut ValidationFailure::default())?
            .expect("a named workspace resolves or is refused"),
    };
    tracing::Span::current().record("workspace", tracing::field::display(workspace));
    Ok(workspace)
}
