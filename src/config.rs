//! Command line and settings (CONTRACT.md §1): every setting is an environment variable and a
//! `--kebab-case` flag; flags win.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// What `--help` shows after the options.
const EXAMPLES: &str = "\
Examples:
  opportunity-service
      Serve on 127.0.0.1:8080 with the embedded SQLite database in ./data/ (development mode:
      a generated secret in data/jwt-secret).
  opportunity-service token --workspace 11111111-1111-4111-8111-111111111111
      Print a token for one workspace, signed with the secret the server in this folder uses.
  DATABASE_URL=postgres://app@db:5432/crm AUTH_JWT_SECRET=... opportunity-service migrate
      Apply pending migrations to a PostgreSQL database and exit.
  opportunity-service --listen-addr 0.0.0.0:8080 --log-format json
      Serve on every interface, logging one JSON object a line.

Every option is also an environment variable (shown in [env: ...]); options win.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "opportunity-service",
    version,
    about = "JSON-RPC service for CRM opportunities",
    args_conflicts_with_subcommands = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve JSON-RPC over HTTP and WebSocket (the default).
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a signed token for development.
    Token(TokenArgs),
}

/// Where the data lives. `Debug` shows the URL without its password.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    // The value may hold a password: `--help` does not show what the environment set.
    /// `sqlite://PATH` (embedded) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "sqlite://data/opportunity-service.db")]
    pub database_url: String,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = crate::db::DatabaseUrl::parse(&self.database_url)
            .map_or_else(|_| "(not a valid URL)".to_string(), |url| url.redacted());
        f.debug_struct("DatabaseArgs").field("database_url", &url).finish()
    }
}

/// How tokens are checked.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 shared secret for bearer tokens, at least 32 bytes. Without it, `serve` on the
    /// embedded default creates one in the database's folder (`token` reads it, and never
    /// creates one); PostgreSQL refuses to start.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<SecretString>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for machines.
    Json,
}

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Connections in the pool (default: 4 for SQLite, 16 for PostgreSQL).
    #[arg(long, env = "DATABASE_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: Option<u32>,
    /// How long a call waits for a database connection before SERVICE_UNAVAILABLE, e.g. `5s`.
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "5s", value_parser = interval)]
    pub database_timeout: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Larger request bodies are refused (HTTP 413).
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_bytes: u32,
    /// Larger JSON-RPC batches are refused.
    #[arg(long, env = "MAX_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: u32,
    /// Open sockets (HTTP and WebSocket) served for calls. A few more are served for the
    /// probes only (`/health`, `/ready`, `/metrics`; calls on them get HTTP 429); sockets beyond
    /// those are refused with HTTP 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A request's headers, and then its body, must each arrive within this time (slow or
    /// stalled clients): a stalled body gets HTTP 408, stalled headers (or none, on a fresh or
    /// idle kept-alive connection) a closed connection. A socket whose writes make no progress
    /// for this time (a client that does not read) is closed too, and so is a WebSocket with no
    /// live subscription and no call unanswered over which no message went for this time.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = interval)]
    pub request_timeout: Duration,
    /// Larger answers (a single call or a whole batch) are replaced by an error.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_response_bytes: u32,
    /// Answer bytes produced and not yet written, over every connection. Above it, HTTP calls are
    /// refused (SERVICE_UNAVAILABLE, retryable) and WebSocket connections are not read.
    #[arg(long, env = "MAX_PENDING_RESPONSE_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_pending_response_bytes: u64,
    /// WebSocket ping interval; a peer that answers no ping for two intervals is disconnected.
    #[arg(long, env = "WS_PING_INTERVAL", default_value = "30s", value_parser = interval)]
    pub ws_ping_interval: Duration,
    /// How long change events are kept (`opportunity.changes`, `opportunity.subscribe`); older
    /// ones are purged within a minute, e.g. `7d`.
    #[arg(long, env = "EVENT_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub event_retention: Duration,
    /// Browser origins allowed to call from another origin: comma-separated
    /// `scheme://host[:port]`, or `*` for any; none by default. They get CORS headers on HTTP
    /// (and preflights are answered), and only they may open a WebSocket from a browser (a
    /// handshake with another `Origin` is refused with 403; clients that send no `Origin` are
    /// not browsers and are not affected).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "", value_parser = parse_origins)]
    pub cors_allowed_origins: AllowedOrigins,
    /// `text` or `json`; levels through `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The browser origins of `CORS_ALLOWED_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin.
    Any,
    /// These origins, exactly as browsers send them (`https://crm.example.com:8443`); none when
    /// empty.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a browser sending this `Origin` may call.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o.as_bytes() == origin),
        }
    }
}

/// `*`, or comma-separated origins in the form browsers send them: a scheme, `://`, a host and
/// an optional port, with no path, query, user or trailing slash.
fn parse_origins(text: &str) -> Result<AllowedOrigins, String> {
    if text.trim() == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (scheme, rest) = item.split_once("://").ok_or_else(|| {
            format!("{item:?} is not an origin: write scheme://host[:port], e.g. https://crm.example.com")
        })?;
        let scheme_ok = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        let host_ok =
            !rest.is_empty() && !rest.contains(['/', '?', '#', '@', '*']) && rest.chars().all(|c| c.is_ascii_graphic());
        if !scheme_ok || !host_ok {
            return Err(format!(
                "{item:?} is not an origin: write scheme://host[:port] with no path or trailing slash, e.g. https://crm.example.com"
            ));
        }
        list.push(item.to_string());
    }
    Ok(AllowedOrigins::List(list))
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    if d > Duration::from_secs(100 * 365 * 86_400) {
        return Err("must be at most 100 years".into());
    }
    Ok(d)
}

/// A timeout or an interval of the service: at least a millisecond (zero would close every
/// connection at once, or make no pool at all) and at most a day.
fn interval(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(1) {
        return Err("must be at least 1ms, e.g. 30s".into());
    }
    if duration > Duration::from_secs(86_400) {
        return Err("must be at most 1 day (24h)".into());
    }
    Ok(duration)
}

/// A duration such as `1h` that is more than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be positive, e.g. 1h or 30m: a token of no lifetime is expired when made".into());
    }
    Ok(duration)
}

/// Options of `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// A workspace the token grants; repeat for several.
    #[arg(long = "workspace", required = true, value_parser = uuid::Uuid::try_parse)]
    pub workspaces: Vec<uuid::Uuid>,
    /// The calling user (`sub`); a new random UUID when absent.
    #[arg(long, value_parser = uuid::Uuid::try_parse)]
    pub user: Option<uuid::Uuid>,
    /// Space-separated scopes; every scope by default.
    #[arg(long, default_value = crate::auth::ALL_SCOPES)]
    pub scope: String,
    /// Lifetime, e.g. `1h`, `30m`, `7d`; must be positive.
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_and_flags_parse() {
        let cli =
            Cli::try_parse_from(["opportunity-service", "--listen-addr", "127.0.0.1:0", "--max-batch", "5"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen_addr, "127.0.0.1:0");
        assert_eq!(cli.serve.max_batch, 5);
        let cli = Cli::try_parse_from(["opportunity-service", "serve", "--log-format", "json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Serve(ServeArgs { log_format: LogFormat::Json, .. }))));
        assert!(Cli::try_parse_from(["opportunity-service", "token"]).is_err());
        let cli = Cli::try_parse_from([
            "opportunity-service",
            "token",
            "--workspace",
            "11111111-1111-4111-8111-111111111111",
            "--ttl",
            "2h",
        ])
        .unwrap();
        let Some(Command::Token(t)) = cli.command else { panic!() };
        assert_eq!(t.ttl, Duration::from_secs(7200));
        let token = |ttl: &str| {
            Cli::try_parse_from([
                "opportunity-service",
                "token",
                "--workspace",
                "11111111-1111-4111-8111-111111111111",
                "--ttl",
                ttl,
            ])
        };
        for zero in ["0s", "0", "0ms", "0h 0m"] {
            let e = token(zero).unwrap_err().to_string();
            assert!(e.contains("must be positive"), "--ttl {zero}: {e}");
        }
        assert!(token("1s").is_ok());
        assert!(token("-1h").is_err());
        assert!(Cli::try_parse_from(["opportunity-service", "--max-batch", "0"]).is_err());
        // Timeouts and intervals: zero closed every connection at once (REQUEST_TIMEOUT) or
        // panicked (DATABASE_TIMEOUT in the pool, WS_PING_INTERVAL on every WebSocket).
        for flag in ["--database-timeout", "--request-timeout", "--ws-ping-interval"] {
            for (value, why) in [("0s", "at least 1ms"), ("0", "at least 1ms"), ("2d", "at most 1 day")] {
                let e = Cli::try_parse_from(["opportunity-service", flag, value]).unwrap_err().to_string();
                assert!(e.contains(why), "{flag} {value}: {e}");
            }
            assert!(Cli::try_parse_from(["opportunity-service", flag, "250ms"]).is_ok(), "{flag} 250ms");
        }
    }

    #[test]
    fn cors_allowed_origins_are_origins_or_a_lone_star() {
        let parse = |v: &str| Cli::try_parse_from(["opportunity-service", "--cors-allowed-origins", v]);
        assert_eq!(
            Cli::try_parse_from(["opportunity-service"]).unwrap().serve.cors_allowed_origins,
            AllowedOrigins::List(vec![])
        );
        assert_eq!(parse("*").unwrap().serve.cors_allowed_origins, AllowedOrigins::Any);
        let list = parse("https://crm.example.com, http://127.0.0.1:5173").unwrap().serve.cors_allowed_origins;
        assert_eq!(list, AllowedOrigins::List(vec!["https://crm.example.com".into(), "http://127.0.0.1:5173".into()]));
        assert!(list.allows(b"http://127.0.0.1:5173"));
        assert!(!list.allows(b"http://127.0.0.1:5174"));
        assert!(!list.allows(b"null"));
        for bad in [
            "crm.example.com",
            "https://crm.example.com/",
            "https://x/app",
            "https://*.example.com",
            "https://a@b",
            "://x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not an origin"), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_of_the_settings_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "opportunity-service",
            "--database-url",
            "postgres://app:hunter2@db/crm",
            "--auth-jwt-secret",
            "hunter3-hunter3-hunter3-hunter3-hunter3",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert!(debug.contains("postgres://app:***@db/crm"), "{debug}");
    }
}
