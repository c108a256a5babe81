//! Workspace-aware bearer auth (CONTRACT.md §3): HS256 tokens, their claims, the workspace a
//! call acts in, and minting tokens for development.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{UUID_FORM, parse_uuid};
use crate::error::{ApiError, ValidationFailure};

/// Clock skew tolerated on `exp` and `nbf`, in seconds (the contract allows at most 60).
pub const LEEWAY_SECONDS: u64 = 30;
/// The scope needed to create, update, archive and restore (it also lets a caller read).
pub const SCOPE_WRITE: &str = "opportunity:write";
/// The scope needed to get, list and follow changes (or [`SCOPE_WRITE`]).
pub const SCOPE_READ: &str = "opportunity:read";
/// The scope needed for `visibilityMode: "global"`.
pub const SCOPE_GLOBAL: &str = "opportunity:global";
/// Every scope this service knows; a minted token grants them all by default.
pub const ALL_SCOPES: &str = "opportunity:read opportunity:write opportunity:global";

/// The claims this service reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub workspaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Expiry, in seconds since the epoch: a NumericDate (RFC 7519 §2), which may have a
    /// fraction (`1796694544.5`, as `time.time() + 3600` makes); read to the whole second below.
    #[serde(deserialize_with = "numeric_date::exp")]
    pub exp: i64,
    /// Not before: when present, a token used earlier (less the leeway) is refused.
    #[serde(default, deserialize_with = "numeric_date::nbf", skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date::iat", skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (RFC 7519 §4.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// A caller whose token passed every rule of §3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user_id: Uuid,
    /// The workspaces the caller may act in; never empty.
    pub workspaces: Vec<Uuid>,
    /// The granted scopes.
    pub scopes: BTreeSet<String>,
    /// `exp`, checked again on every call of a long-lived WebSocket.
    pub expires_at: i64,
}

impl Principal {
    /// Whether the token is no longer valid now (with the leeway), as `jsonwebtoken` decides on
    /// decoding: expired once `exp` is more than the leeway in the past.
    pub fn is_expired(&self) -> bool {
        self.expires_at.saturating_add(LEEWAY_SECONDS as i64) <= Utc::now().timestamp()
    }

    /// Refuses with FORBIDDEN unless `scope` is granted.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the token does not grant the scope {scope:?}")))
        }
    }

    /// Refuses with FORBIDDEN unless the caller may read: `opportunity:read` or
    /// `opportunity:write`.
    pub fn require_read(&self) -> Result<(), ApiError> {
        if self.scopes.contains(SCOPE_READ) || self.scopes.contains(SCOPE_WRITE) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the token grants neither {SCOPE_READ:?} nor {SCOPE_WRITE:?}")))
        }
    }

    /// The workspace of a call, in the order of §3: `params.workspaceId`, else the
    /// `X-Workspace-Id` header, else the token's only workspace. A workspace outside the token
    /// is FORBIDDEN; several workspaces and none named is a field error on `workspaceId`.
    pub fn resolve_workspace(
        &self,
        named: Option<Uuid>,
        failure: &mut ValidationFailure,
    ) -> Result<Option<Uuid>, ApiError> {
        match named {
            Some(ws) if self.workspaces.contains(&ws) => Ok(Some(ws)),
            Some(ws) => Err(ApiError::Forbidden(format!("the token does not grant the workspace {ws}"))),
            None if self.workspaces.len() == 1 => Ok(Some(self.workspaces[0])),
            None => {
                failure.field(
                    "workspaceId",
                    "is required: the token grants several workspaces; name one here or in the X-Workspace-Id header",
                );
                Ok(None)
            }
        }
    }
}

/// Tokens whose check is remembered.
const VERIFIED_TOKENS: usize = 1024;
/// Longer tokens are checked every time, so that the cache holds 1,024 × 4 KiB at most.
const REMEMBERED_TOKEN_BYTES: usize = 4096;

/// Checks bearer tokens against the configured secret, issuer and audience.
///
/// A token that passed is remembered by its exact text, so that a caller who sends the same
/// token again (every service-to-service client does) is not decoded and its HMAC not computed
/// again; its expiry is still checked on every call. Tokens that fail are never remembered.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    verified: Arc<quick_cache::sync::Cache<String, Principal>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

fn unauthorized(reason: &str) -> ApiError {
    ApiError::Unauthorized(reason.to_string())
}

/// NumericDate claims (RFC 7519 §2: seconds since the epoch, "non-integer values can be
/// represented"), read as whole seconds (`exp` and `iat` cut down, `nbf` rounded up); anything
/// else, or one beyond what an `i64` holds, refuses the token with a message that names it.
mod numeric_date {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    /// The mark of these errors, by which `authenticate` tells them from a malformed token.
    pub const NOT_SECONDS: &str = "must be a number of seconds";

    fn refused<E: Error>(claim: &str) -> E {
        E::custom(format!("the token's claim \"{claim}\" {NOT_SECONDS}"))
    }

    /// The claim in whole seconds, rounded by `round` (down for `exp` and `iat`; up for `nbf`:
    /// a token is never taken before its time); `null` is absent.
    fn seconds<'de, D: Deserializer<'de>>(
        deserializer: D,
        claim: &str,
        round: fn(f64) -> f64,
    ) -> Result<Option<i64>, D::Error> {
        let Some(number) = Option::<serde_json::Number>::deserialize(deserializer).map_err(|_| refused(claim))? else {
            return Ok(None);
        };
        let whole = number.as_i64().or_else(|| {
            let f = number.as_f64()?;
            (f.is_finite() && f.abs() < 9.2e18).then_some(round(f) as i64)
        });
        whole.map(Some).ok_or_else(|| refused(claim))
    }

    pub fn exp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        seconds(deserializer, "exp", f64::floor)?.ok_or_else(|| refused("exp"))
    }

    pub fn nbf<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        seconds(deserializer, "nbf", f64::ceil)
    }

    pub fn iat<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        seconds(deserializer, "iat", f64::floor)
    }
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`.
    pub fn new(secret: &SecretString, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        // `exp` and `nbf` are checked in `authenticate`: jsonwebtoken reads them as whole
        // numbers only, and refuses `1796694544.5`, a valid NumericDate.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = vec!["sub"];
        required.extend(issuer.map(|_| "iss"));
        required.extend(audience.map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.validate_aud = audience.is_some();
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = audience {
            validation.set_audience(&[audience]);
        }
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let header = header.ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
        // The scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer`, `BEARER`.
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))?;
        if let Some(principal) = self.verified.get(token) {
            return if principal.is_expired() { Err(unauthorized("the token has expired")) } else { Ok(principal) };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("the token has expired"),
                ErrorKind::ImmatureSignature => unauthorized("the token is not valid yet (its nbf is in the future)"),
                ErrorKind::InvalidClaimFormat(claim) => {
                    ApiError::Unauthorized(format!("the token's claim {claim:?} must be a number of seconds"))
                }
                ErrorKind::InvalidSignature => unauthorized("the token's signature is not valid"),
                ErrorKind::InvalidAlgorithm => unauthorized("the token must be signed with HS256"),
                ErrorKind::InvalidIssuer => unauthorized("the token's issuer is not accepted"),
                ErrorKind::InvalidAudience => unauthorized("the token's audience is not accepted"),
                ErrorKind::MissingRequiredClaim(claim) => {
                    ApiError::Unauthorized(format!("the token lacks the claim {claim:?}"))
                }
                ErrorKind::Json(e) if e.to_string().starts_with("missing field `exp`") => {
                    unauthorized("the token lacks the claim \"exp\"")
                }
                ErrorKind::Json(e) if e.to_string().contains(numeric_date::NOT_SECONDS) => {
                    let message = e.to_string();
                    let message = message.split(" at line ").next().unwrap_or_default();
                    ApiError::Unauthorized(message.to_string())
                }
                _ => unauthorized("the token is malformed"),
            }
        })?;
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names extensions it
        // does not understand; this service understands none.
        if data.header.crit.is_some() {
            return Err(unauthorized("the token has a crit header, which this service does not support"));
        }
        let claims = data.claims;
        let now = Utc::now().timestamp();
        // Expired from `exp` + the leeway on, as `Principal::is_expired` and the end of a
        // subscription (`rpc::changes`) have it: one instant for all three.
        if claims.exp.saturating_add(LEEWAY_SECONDS as i64) <= now {
            return Err(unauthorized("the token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECONDS as i64)) {
            return Err(unauthorized("the token is not valid yet (its nbf is in the future)"));
        }
        // The 36-character hyphenated form only, as in params: the `uuid` crate alone would
        // also take the simple, braced and URN forms, and `actor` in the change feed would then
        // not be the `sub` the caller wrote.
        let user_id = parse_uuid(&claims.sub)
            .ok_or_else(|| ApiError::Unauthorized(format!("the token's sub must be a UUID ({UUID_FORM})")))?;
        let workspaces = claims
            .workspaces
            .iter()
            .map(|w| parse_uuid(w))
            .collect::<Option<Vec<_>>>()
            .filter(|w| !w.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(format!(
                    "the token's workspaces must be a non-empty array of UUIDs ({UUID_FORM})"
                ))
            })?;
        // A workspace named twice (in any spelling of its UUID) is one workspace: `[A, A]` is
        // a token with one workspace, which a call need not name.
        let mut seen = std::collections::HashSet::with_capacity(workspaces.len());
        let workspaces: Vec<Uuid> = workspaces.into_iter().filter(|w| seen.insert(*w)).collect();
        // Space-separated (RFC 6749 §3.3): a tab or a no-break space is part of a scope, not a separator.
        let scopes =
            claims.scope.unwrap_or_default().split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
        let principal = Principal { user_id, workspaces, scopes, expires_at: claims.exp };
        if token.len() <= REMEMBERED_TOKEN_BYTES {
            self.verified.insert(token.to_string(), principal.clone());
        }
        Ok(principal)
    }
}

/// Signs a token for development and tests.
pub fn mint(secret: &SecretString, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

/// The development secret in `path`, if the file holds one (not empty).
fn read_dev_secret(path: &Path) -> std::io::Result<Option<SecretString>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(SecretString::from(text.trim().to_string()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the development secret beside the embedded database, creating it (mode 0600) when
/// there is none yet. Returns the secret and whether it was created now. Processes that start
/// at once share one secret: the one that creates it holds a lock on a file beside it
/// (`jwt-secret.lock`), and the others read it once the lock is theirs. The secret is written
/// aside and renamed into place, so that no one reads it half written; a file left empty (by a
/// crash of an older version between its creation and its write) is replaced.
pub fn load_or_create_dev_secret(path: &Path) -> std::io::Result<(SecretString, bool)> {
    if let Some(secret) = read_dev_secret(path)? {
        return Ok((secret, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.with_extension("lock"))?;
    lock.lock()?;
    if let Some(secret) = read_dev_secret(path)? {
        return Ok((secret, false));
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let aside = path.with_extension("new");
    let _ = std::fs::remove_file(&aside);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&aside)?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&aside, path)?;
    // The rename itself is made durable with the directory (where the platform can sync one).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok((SecretString::from(secret), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("test-secret".to_string())
    }

    fn claims() -> Claims {
        Claims {
            sub: Uuid::now_v7().to_string(),
            workspaces: vec![Uuid::now_v7().to_string()],
            scope: Some(ALL_SCOPES.into()),
            exp: Utc::now().timestamp() + 3600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
        }
    }

    fn check(auth: &Authenticator, claims: &Claims) -> Result<Principal, ApiError> {
        auth.authenticate(Some(&format!("Bearer {}", mint(&secret(), claims).unwrap())))
    }

    #[test]
    fn valid_token_gives_a_principal() {
        let auth = Authenticator::new(&secret(), None, None);
        let p = check(&auth, &claims()).unwrap();
        assert!(p.scopes.contains(SCOPE_WRITE));
        assert_eq!(p.workspaces.len(), 1);
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let auth = Authenticator::new(&secret(), Some("iss-a"), Some("aud-a"));
        let unauthorized = |r: Result<Principal, ApiError>| matches!(r, Err(ApiError::Unauthorized(_)));
        assert!(unauthorized(auth.authenticate(None)));
        assert!(unauthorized(auth.authenticate(Some("Basic abc"))));
        assert!(unauthorized(auth.authenticate(Some("Bearer not.a.jwt"))));
        let good = Claims { iss: Some("iss-a".into()), aud: Some("aud-a".into()), ..claims() };
        assert!(check(&auth, &good).is_ok());
        assert!(unauthorized(check(&auth, &Claims { iss: Some("other".into()), ..good.clone() })));
        assert!(unauthorized(check(&auth, &Claims { aud: None, ..good.clone() })));
        assert!(unauthorized(check(&auth, &Claims { iss: None, ..good.clone() })));
        assert!(unauthorized(check(&auth, &Claims { aud: Some("other".into()), ..good.clone() })));
        assert!(unauthorized(check(&auth, &Claims { exp: Utc::now().timestamp() - 120, ..good.clone() })));
        assert!(unauthorized(check(&auth, &Claims { sub: "not-a-uuid".into(), ..good.clone() })));
        // Only the hyphenated form, as in params (any case).
        let id = Uuid::now_v7();
        for other_form in [id.simple().to_string(), id.braced().to_string(), id.urn().to_string()] {
            match check(&auth, &Claims { sub: other_form.clone(), ..good.clone() }) {
                Err(ApiError::Unauthorized(m)) => assert!(m.contains(UUID_FORM), "{other_form}: {m}"),
                other => panic!("{other_form}: expected UNAUTHORIZED, got {other:?}"),
            }
            let workspaces = vec![other_form.clone()];
            assert!(unauthorized(check(&auth, &Claims { workspaces, ..good.clone() })), "{other_form}");
        }
        let upper = Claims { sub: id.to_string().to_uppercase(), ..good.clone() };
        assert_eq!(check(&auth, &upper).unwrap().user_id, id);
        assert!(unauthorized(check(&auth, &Claims { workspaces: vec![], ..good.clone() })));
        let other_key = mint(&SecretString::from("other".to_string()), &good).unwrap();
        assert!(unauthorized(auth.authenticate(Some(&format!("Bearer {other_key}")))));
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let auth = Authenticator::new(&secret(), None, None);
        let token = mint(&secret(), &claims()).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert!(auth.authenticate(Some(&format!("{scheme} {token}"))).is_ok(), "{scheme}");
        }
        for bad in [format!("Bearer{token}"), format!("Bearerx {token}"), format!("Basic {token}"), token.clone()] {
            assert!(matches!(auth.authenticate(Some(&bad)), Err(ApiError::Unauthorized(_))), "{bad}");
        }
    }

    #[test]
    fn not_before_and_crit_are_checked() {
        let auth = Authenticator::new(&secret(), None, None);
        let now = Utc::now().timestamp();
        let refused = |r: Result<Principal, ApiError>, what: &str| match r {
            Err(ApiError::Unauthorized(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("expected UNAUTHORIZED ({what}), got {other:?}"),
        };
        refused(check(&auth, &Claims { nbf: Some(now + 120), ..claims() }), "not valid yet");
        refused(check(&auth, &Claims { nbf: Some(now + LEEWAY_SECONDS as i64 + 5), ..claims() }), "not valid yet");
        assert!(check(&auth, &Claims { nbf: Some(now + 5), ..claims() }).is_ok(), "within the leeway");
        assert!(check(&auth, &Claims { nbf: Some(now - 3600), ..claims() }).is_ok());
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"test-secret")).unwrap();
        refused(auth.authenticate(Some(&format!("Bearer {token}"))), "crit");
    }

    #[test]
    fn a_workspace_named_twice_is_one_workspace() {
        let auth = Authenticator::new(&secret(), None, None);
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let p = check(&auth, &Claims { workspaces: vec![a.to_string(), a.to_string().to_uppercase()], ..claims() })
            .unwrap();
        assert_eq!(p.workspaces, [a]);
        let p = check(&auth, &Claims { workspaces: vec![b.to_string(), a.to_string(), b.to_string()], ..claims() })
            .unwrap();
        assert_eq!(p.workspaces, [b, a], "order of first mention kept");
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let auth = Authenticator::new(&secret(), None, None);
        // Valid for one or two more seconds thanks to the leeway.
        let claims = Claims { exp: Utc::now().timestamp() - LEEWAY_SECONDS as i64 + 2, ..claims() };
        let token = format!("Bearer {}", mint(&secret(), &claims).unwrap());
        let first = auth.authenticate(Some(&token)).unwrap();
        assert_eq!(auth.authenticate(Some(&token)).unwrap(), first, "the remembered check gives the same caller");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let late = auth.authenticate(Some(&token));
        assert!(
            matches!(&late, Err(ApiError::Unauthorized(m)) if m.contains("expired")),
            "a remembered token is refused once expired: {late:?}"
        );
        // A token that failed is not remembered: with another secret it fails every time.
        let forged =
            format!("Bearer {}", mint(&SecretString::from("other".to_string()), &super::tests::claims()).unwrap());
        for _ in 0..2 {
            assert!(matches!(auth.authenticate(Some(&forged)), Err(ApiError::Unauthorized(_))));
        }
    }

    #[test]
    fn only_tokens_of_bounded_size_are_remembered() {
        let auth = Authenticator::new(&secret(), None, None);
        let short = format!("Bearer {}", mint(&secret(), &claims()).unwrap());
        let long_claims =
            Claims { scope: Some(format!("{ALL_SCOPES} {}", "x".repeat(REMEMBERED_TOKEN_BYTES))), ..claims() };
        let long = format!("Bearer {}", mint(&secret(), &long_claims).unwrap());
        for _ in 0..2 {
            assert!(auth.authenticate(Some(&short)).is_ok());
            assert!(auth.authenticate(Some(&long)).is_ok(), "a long token is checked, not refused");
        }
        assert_eq!(auth.verified.len(), 1, "only the short token is remembered");
    }

    #[test]
    fn workspace_resolution() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let p = Principal {
            user_id: Uuid::now_v7(),
            workspaces: vec![a],
            scopes: BTreeSet::new(),
            expires_at: i64::MAX / 2,
        };
        let mut f = ValidationFailure::default();
        assert_eq!(p.resolve_workspace(None, &mut f).unwrap(), Some(a));
        assert!(matches!(p.resolve_workspace(Some(b), &mut f), Err(ApiError::Forbidden(_))));
        let p = Principal { workspaces: vec![a, b], ..p };
        assert_eq!(p.resolve_workspace(Some(b), &mut f).unwrap(), Some(b));
        assert_eq!(p.resolve_workspace(None, &mut f).unwrap(), None);
        assert!(f.has_field("workspaceId"));
        assert!(matches!(p.require_scope(SCOPE_WRITE), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn dev_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("secret");
        let (first, created) = load_or_create_dev_secret(&path).unwrap();
        assert!(created);
        let (second, created) = load_or_create_dev_secret(&path).unwrap();
        assert!(!created);
        assert_eq!(first.expose_secret(), second.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    /// A file left empty (by a crash between its creation and its write) made every start
    /// recurse until the stack overflowed; it is replaced by a new secret, privately.
    #[test]
    fn an_empty_dev_secret_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for left in ["", "  \n"] {
            std::fs::write(&path, left).unwrap();
            let (secret, created) = load_or_create_dev_secret(&path).unwrap();
            assert!(created, "{left:?}");
            assert_eq!(secret.expose_secret().len(), 64);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), secret.expose_secret());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            std::fs::remove_file(&path).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("secret.lock")], "nothing is left aside but the lock");
    }

    /// Processes (threads here) that find no secret at once all get the same one.
    #[test]
    fn secrets_created_at_once_are_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("jwt-secret");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        let secrets: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create_dev_secret(&path).unwrap().0.expose_secret().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(secrets.iter().all(|s| *s == on_disk), "{secrets:?} against {on_disk}");
    }
}
