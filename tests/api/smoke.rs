//! The contract's own example, end to end.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn contract_example_creates_and_stores() {
    let app = spawn_app().await;
    let mut params = valid_params();
    params["estimatedValue"] = json!(125000.5);
    params["expectedCloseDate"] = json!("2027-03-31T19:00:00+02:00");
    let response = app.create(params).await;
    let result = &response["result"];
    assert_eq!(result["workspaceId"], app.workspace.to_string(), "{response}");
    assert_eq!(result["estimatedValue"], json!(125000.5));
    assert_eq!(result["expectedCloseDate"], "2027-03-31T17:00:00Z");
    assert_eq!(result["stage"], "lead");
    assert_eq!(result["solutionFamilies"], json!([]));
    assert_eq!(result["createdBy"], app.user.to_string());
    assert_eq!(app.count(Some(app.workspace)).await, 1);
}

/// Runs the binary with `args` and `env`, returning (success, stdout + stderr).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_opportunity-service"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AUTH_JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// CONTRACT.md §1: never a password, in any line, whatever the password holds. A raw `?` in it
/// printed it in clear (the query was split off first), and libpq's own messages, which quote
/// a password they cannot decode, went out as they were. Nothing listens on port 1.
#[test]
fn passwords_never_print_however_they_are_written() {
    for (url, secret) in [
        ("postgres://postgres:Pw?Q2xyz@127.0.0.1:1/db", "Q2xyz"),
        ("postgres://postgres:Pw50%xyz@127.0.0.1:1/db", "50%xyz"),
        ("postgres://postgres:Pw%ZZsecret@127.0.0.1:1/db", "ZZsecret"),
        ("postgres://postgres@127.0.0.1:1/db?password=Pw%20W8 xyz", "W8"),
        ("postgres://postgres:Zq9/Wx7@127.0.0.1:1/db", "Zq9"),
        ("postgres://postgres:Zq9/Wx7@127.0.0.1:1/db", "Wx7"),
        ("postgres://postgres:Zq9@Wx7/Vb5@127.0.0.1:1/db", "Wx7"),
    ] {
        for args in [&["migrate"][..], &["serve"]] {
            let env = [("DATABASE_URL", url), ("AUTH_JWT_SECRET", "a-jwt-secret-of-32-bytes-or-more-000000")];
            let (ok, text) = run_binary(args, &env);
            assert!(!ok, "{args:?} with {url}: nothing listens there: {text}");
            assert!(!text.contains(secret), "{args:?} with {url} prints the password: {text}");
        }
    }
}

/// With LOG_FORMAT=json every line is JSON, the last one that says why the start failed too
/// (it was plain text), for `serve` and for `migrate`.
#[test]
fn a_failed_start_is_logged_as_json_when_asked() {
    let env = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/db"),
        ("AUTH_JWT_SECRET", "a-jwt-secret-of-32-bytes-or-more-000000"),
        ("LOG_FORMAT", "json"),
    ];
    for args in [&["serve"][..], &["migrate"]] {
        let (ok, text) = run_binary(args, &env);
        assert!(!ok, "{args:?}: nothing listens on port 1: {text}");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{args:?}: says why");
        for line in &lines {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert!(value["level"].is_string() && value["message"].is_string(), "{args:?}: {line}");
        }
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["level"], "ERROR", "{args:?}: {text}");
        assert!(last["message"].as_str().unwrap().contains("cannot connect"), "{args:?}: {text}");
    }
}

#[tokio::test]
async fn migrate_applies_the_migrations_once_and_exits() {
    let db = TestDatabase::new();
    let (ok, log) = run_binary(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(ok, "{log}");
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let all = std::fs::read_dir(dir).unwrap().count();
    assert!(log.contains(&format!("applied={all}")), "the first run applies all {all} migrations: {log}");
    // It says which database it changes, before changing it (the password hidden).
    let shown = opportunity_service::db::DatabaseUrl::parse(&db.url).unwrap().redacted();
    let announced = log.lines().position(|l| l.contains("applying pending migrations") && l.contains(&shown));
    let applied = log.lines().position(|l| l.contains("migrations applied"));
    assert!(announced.is_some() && announced < applied, "the database is named first: {log}");
    let (ok, log) = run_binary(&["migrate", "--database-url", &db.url], &[]);
    assert!(ok, "{log}");
    assert!(log.contains("applied=0"), "a second run finds nothing pending: {log}");
    // The tables are there: counting opportunities works on the migrated database.
    let count = db.open().run(|conn| opportunity_service::db::opportunity::count(conn, None)).await.unwrap();
    assert_eq!(count, 0);
}

#[test]
fn start_up_refuses_a_bad_database_url_or_an_empty_secret() {
    let (ok, log) = run_binary(&["migrate", "--database-url", "mysql://localhost/x"], &[]);
    assert!(!ok && log.contains("DATABASE_URL must start with sqlite:// or postgres://"), "{log}");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let (ok, log) =
        run_binary(&["serve", "--listen-addr", "127.0.0.1:0"], &[("DATABASE_URL", &url), ("AUTH_JWT_SECRET", "")]);
    assert!(!ok && log.contains("AUTH_JWT_SECRET is set but empty"), "{log}");
}

/// A PostgreSQL URL that libpq refuses stops the service at start with libpq's own words (these
/// are refused while the URL is parsed, before any connection, so no server is needed), and the
/// password is not among them.
#[test]
fn start_up_refuses_a_url_libpq_refuses_in_libpqs_words() {
    for (query, says) in [
        ("target_session_attrs=bogus", "invalid target_session_attrs value: \"bogus\""),
        ("connect_timeout=abc", "invalid integer value \"abc\" for connection option \"connect_timeout\""),
        ("sslmode=sometimes", "invalid sslmode value: \"sometimes\""),
        ("bogus=1", "invalid URI query parameter: \"bogus\""),
    ] {
        let url = format!("postgres://app:hunter2@127.0.0.1:1,127.0.0.1:2/crm?{query}");
        let (ok, log) = run_binary(&["migrate", "--database-url", &url], &[]);
        assert!(!ok, "{query}: refused: {log}");
        assert!(log.contains(says), "{query}: libpq's words {says:?}: {log}");
        assert!(!log.contains("hunter2"), "{query}: the password is not printed: {log}");
    }
}

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash, 32 bytes. A shorter or
/// blank secret stops the service at start, and `token` alike, with a message that says why.
#[test]
fn start_up_refuses_a_secret_shorter_than_32_bytes_or_blank() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    for (secret, says) in [
        ("x", "AUTH_JWT_SECRET is 1 byte long: an HS256 secret needs at least 32 bytes"),
        ("integration-test-secret", "AUTH_JWT_SECRET is 23 bytes long"),
        (&"s".repeat(31), "AUTH_JWT_SECRET is 31 bytes long"),
        (&" ".repeat(40), "AUTH_JWT_SECRET is only white space"),
        ("\t \n", "AUTH_JWT_SECRET is only white space"),
    ] {
        let env = [("DATABASE_URL", url.as_str()), ("AUTH_JWT_SECRET", secret)];
        let (ok, log) = run_binary(&["serve", "--listen-addr", "127.0.0.1:0"], &env);
        assert!(!ok && log.contains(says), "serve with a secret of {} bytes: {log}", secret.len());
        let (ok, log) = run_binary(&["token", "--workspace", "11111111-1111-4111-8111-111111111111"], &env);
        assert!(!ok && log.contains(says), "token with a secret of {} bytes: {log}", secret.len());
        assert!(secret.trim().is_empty() || !log.contains(secret), "the secret is not printed: {log}");
    }
    // 32 bytes are enough.
    let env = [("DATABASE_URL", url.as_str()), ("AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef")];
    let (ok, log) = run_binary(&["token", "--workspace", "11111111-1111-4111-8111-111111111111"], &env);
    assert!(ok && log.split('.').count() == 3, "a token: {log}");
    // A development secret file edited down to a short one is refused too.
    std::fs::write(dir.path().join(opportunity_service::DEV_SECRET_FILE), "short").unwrap();
    let (ok, log) =
        run_binary(&["token", "--workspace", "11111111-1111-4111-8111-111111111111"], &[("DATABASE_URL", &url)]);
    assert!(!ok && log.contains("the development secret in") && log.contains("5 bytes long"), "{log}");
}

/// `--help` ends with examples a newcomer can run.
#[test]
fn help_shows_examples() {
    let (ok, help) = run_binary(&["--help"], &[]);
    assert!(ok, "{help}");
    let examples = help.split_once("Examples:").map(|(_, rest)| rest).unwrap_or_else(|| panic!("no examples: {help}"));
    for command in ["opportunity-service token --workspace", "opportunity-service migrate", "--log-format json"] {
        assert!(examples.contains(command), "an example of {command:?}: {examples}");
    }
}

/// `--help` shows which environment variables a flag reads, but never the value the
/// environment holds for a secret: the database password and the JWT secret stay out.
#[test]
fn help_never_prints_the_database_password_or_the_jwt_secret() {
    let env = [
        ("DATABASE_URL", "postgres://app:hunter2@db/crm"),
        ("AUTH_JWT_SECRET", "hunter3-is-the-jwt-secret-of-32-bytes-or-more"),
    ];
    for args in [&["--help"][..], &["serve", "--help"], &["migrate", "--help"], &["token", "--help"], &["-h"]] {
        let (ok, text) = run_binary(args, &env);
        assert!(ok, "{args:?}: {text}");
        assert!(text.contains("DATABASE_URL"), "{args:?} names the variable: {text}");
        assert!(!text.contains("hunter"), "{args:?} prints a secret: {text}");
    }
}
