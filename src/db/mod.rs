//! Storage: one pool over the embedded SQLite database or PostgreSQL, chosen by the URL scheme,
//! with migrations embedded per backend and every query run on the blocking thread pool.

/// Runs the same diesel code on the connection of either backend: with one schema
/// (`schema.rs`) whose column types map to both (`types.rs`), a query is written once and
/// compiled for each backend. `$c` is the backend's own connection in `$body`.
macro_rules! on_either {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConn::Postgres($c) => $body,
            $crate::db::DbConn::Sqlite($c) => $body,
        }
    };
}

#[macro_use]
mod prepared;

pub mod events;
pub mod list;
pub mod opportunity;
pub mod pg_writer;
mod reads;
pub mod schema;
pub mod types;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::Instrument as _;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long a SQLite writer waits for the write lock before giving up (SQLITE_BUSY).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Where the data lives, parsed from `DATABASE_URL`. Its `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: relative paths are relative to the working directory,
    /// `sqlite:///abs/path` is absolute.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, handed to libpq as it is.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses the URL by its scheme; anything else is refused (SQLite would take any string as a
    /// file name).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            const EXAMPLE: &str = "use sqlite://PATH, e.g. sqlite://data/opportunity-service.db";
            if path.is_empty() || path.ends_with('/') {
                bail!("DATABASE_URL {url:?} names no file: {EXAMPLE}");
            }
            if path.contains(":memory:") || path.contains("mode=memory") {
                bail!(
                    "DATABASE_URL {url:?}: an in-memory database is not supported (it would not survive a restart): {EXAMPLE}"
                );
            }
            // A path, not a URL: `?mode=ro` would become part of the file's name.
            if path.contains('?') {
                bail!("DATABASE_URL {url:?}: a sqlite:// URL takes no query (\"?\"), only a path: {EXAMPLE}");
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if let Some((_, rest)) =
            url.split_once("://").filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
        {
            // Refused without quoting the URL: it would be a piece of the password.
            if ambiguous_userinfo(rest) {
                bail!(
                    "DATABASE_URL: its user info (user:password@) holds a raw \"@\", \"/\" or \"?\" that PostgreSQL's \
                     URL reader would take for the host or the database: percent-encode them in the password \
                     (%40, %2F, %3F), or pass it in PGPASSWORD"
                );
            }
            Ok(Self::Postgres(url.to_string()))
        } else {
            bail!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got scheme {:?})",
                url.split(':').next().unwrap_or("")
            )
        }
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => redact_password(url),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    /// Never the password: `Postgres("postgres://app:***@db/crm")`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

/// Where the user info of a PostgreSQL URL (after `scheme://`) ends, its `@`, if it has one: as
/// libpq reads it, at the first `@` when it comes before the first `/`.
fn userinfo_end(rest: &str) -> Option<usize> {
    rest.find(['@', '/']).filter(|&i| rest.as_bytes()[i] == b'@')
}

/// Whether libpq would take a part of the password for the host, the port or the database, and
/// quote it in its errors: an `@` (before any `=` of the parameters) remains after where libpq
/// ends the user info, or libpq finds none (a raw `/` in the password comes first).
fn ambiguous_userinfo(rest: &str) -> bool {
    let tail = userinfo_end(rest).map_or(rest, |at| &rest[at + 1..]);
    tail[..tail.find('=').unwrap_or(tail.len())].contains('@')
}

/// Whether a query parameter may carry a secret: libpq's `password` and `sslpassword` (the client
/// key's passphrase), in any case; libpq decodes percent escapes in a parameter's name as in its
/// value, so a name with an escape is taken for one too.
fn secret_parameter(key: &str) -> bool {
    key.contains('%') || key.to_ascii_lowercase().contains("password")
}

fn redact_password(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let mut out = format!("{scheme}://");
    let after_userinfo = match userinfo_end(rest) {
        Some(at) => {
            let userinfo = &rest[..at];
            out.push_str(userinfo.split(':').next().unwrap_or(""));
            if userinfo.contains(':') {
                out.push_str(":***");
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (host_and_path, query) = match after_userinfo.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (after_userinfo, None),
    };
    out.push_str(host_and_path);
    if let Some(query) = query {
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((key, _)) if secret_parameter(key) => format!("{key}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}

/// `text` (an error of libpq, which may quote the URL or a part of it) with every secret of
/// `url` replaced by `***`: the password of the user info and the values of the parameters of
/// [`secret_parameter`], as written and percent-decoded.
fn scrub_secrets(text: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text.to_string();
    };
    let mut secrets: Vec<&str> = Vec::new();
    let after_userinfo = match userinfo_end(rest) {
        Some(at) => {
            secrets.extend(rest[..at].split_once(':').map(|(_, password)| password));
            &rest[at + 1..]
        }
        None => rest,
    };
    if let Some((_, query)) = after_userinfo.split_once('?') {
        secrets.extend(
            query.split('&').filter_map(|kv| kv.split_once('=')).filter(|(k, _)| secret_parameter(k)).map(|(_, v)| v),
        );
    }
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        forms.push(secret.to_string());
        forms.push(percent_encoding::percent_decode_str(secret).decode_utf8_lossy().into_owned());
    }
    // The longest first, so that a secret that holds another is hidden whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut text = text.to_string();
    for form in forms.iter().filter(|f| !f.is_empty()) {
        text = text.replace(form.as_str(), "***");
    }
    text
}

/// A failure of a database call, as the RPC edge needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection within the pool timeout, or the connection was lost: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other failure.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// The instant a group-commit writer stops at for a caller who gives up at `gives_up`: a little
/// before (0.9 of the time left), so that a group still running then is rolled back and answered
/// before the caller answers SERVICE_UNAVAILABLE. One rule for every write on both backends.
pub(crate) fn write_deadline(gives_up: std::time::Instant) -> std::time::Instant {
    let now = std::time::Instant::now();
    now + gives_up.saturating_duration_since(now).mul_f64(0.9)
}

impl DbError {
    /// The kind, as the `db_errors_total` metric labels it.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::Unavailable(_) => "unavailable",
            DbError::Query(_) => "query",
        }
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl DbError {
    /// Sorts a diesel error: lost connections and a busy SQLite are retryable.
    pub fn classify(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
                Self::Unavailable(e.to_string())
            }
            // A server that takes no writes (SQLSTATE 25006): a primary fenced, or turned into a
            // standby, while its connections stay up. Unavailable retires the connection, and the
            // next one finds the primary (`target_session_attrs=read-write`).
            Error::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => Self::Unavailable(e.to_string()),
            Error::DatabaseError(_, info) if is_transient_message(info.message()) => Self::Unavailable(e.to_string()),
            _ => Self::Query(e),
        }
    }
}

fn is_transient_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "database is locked",
        "database table is locked",
        "server closed the connection",
        "terminating connection",
        "connection refused",
        "no connection to the server",
        "the database system is shutting down",
        "the database system is starting up",
        "could not connect",
        // lock_timeout and statement_timeout (DATABASE_TIMEOUT): the database is too slow now.
        "canceling statement due to lock timeout",
        "canceling statement due to statement timeout",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// A connection of either backend, lent to a repository function.
pub enum DbConn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl DbConn<'_> {
    /// The same connection, for a call that takes it by value.
    pub fn reborrow(&mut self) -> DbConn<'_> {
        match self {
            DbConn::Sqlite(c) => DbConn::Sqlite(c),
            DbConn::Postgres(c) => DbConn::Postgres(c),
        }
    }
}

/// Runs `read` in one read-only snapshot: a REPEATABLE READ, READ ONLY transaction on
/// PostgreSQL, a (deferred, so reading) transaction on SQLite.
pub(crate) fn in_snapshot<T>(
    conn: DbConn<'_>,
    read: impl Fn(DbConn<'_>) -> diesel::QueryResult<T>,
) -> diesel::QueryResult<T> {
    match conn {
        DbConn::Postgres(c) => c.build_transaction().repeatable_read().read_only().run(|c| read(DbConn::Postgres(c))),
        DbConn::Sqlite(c) => c.transaction(|c| read(DbConn::Sqlite(c))),
    }
}

#[derive(Clone)]
enum DbPool {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Postgres(Pool<PgManager>),
}

/// Sets the pragmas of §5 on every new SQLite connection.
#[derive(Debug, Clone, Copy)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        apply_sqlite_pragmas(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

diesel::define_sql_function! {
    /// The case folding of `titleContains` ([`list::fold_case`]) for SQLite, whose own `lower()`
    /// only knows ASCII: `opportunity.list` matches `É` with `é`, `Σ` with `ς`, on both backends.
    fn unicode_lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

fn apply_sqlite_pragmas(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    unicode_lower_utils::register_impl(conn, |text: String| list::fold_case(&text))?;
    conn.batch_execute(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"))?;
    // Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    // locked" at once, without its busy handler, when another process holds the file meanwhile
    // (several processes started together on a new file): try again within the busy timeout.
    let deadline = std::time::Instant::now() + Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS.into());
    loop {
        match conn.batch_execute("PRAGMA journal_mode = WAL;") {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other?,
        }
    }
    conn.batch_execute("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
}

/// Whether SQLite refused because another connection holds the file.
fn is_locked(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message().contains("database is locked"))
}

/// A pooled PostgreSQL connection, and whether a call found it broken.
pub struct PgPooled {
    conn: PgConnection,
    broken: bool,
}

/// Opens PostgreSQL connections with every statement and lock wait bounded by the database
/// timeout (so a held lock or a stuck query ends in an error, not a hang), and retires a
/// connection once a call on it failed as unavailable. Check-outs are not pinged: a lost
/// connection costs the one call that finds it, not a round trip on every call.
struct PgManager {
    inner: ConnectionManager<PgConnection>,
    timeout: Duration,
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgPooled;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgPooled, Self::Error> {
        let mut conn = self.inner.connect()?;
        let ms = self.timeout.as_millis().max(1);
        conn.batch_execute(&format!("SET statement_timeout = {ms}; SET lock_timeout = {ms};"))
            .map_err(diesel::r2d2::Error::QueryError)?;
        Ok(PgPooled { conn, broken: false })
    }

    fn is_valid(&self, pooled: &mut PgPooled) -> Result<(), Self::Error> {
        self.inner.is_valid(&mut pooled.conn)
    }

    fn has_broken(&self, pooled: &mut PgPooled) -> bool {
        pooled.broken || self.inner.has_broken(&mut pooled.conn)
    }
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Connections in the pool; `None` for the backend's default.
    pub size: Option<u32>,
    /// How long a call waits for a connection, and a new connection for the server.
    pub timeout: Duration,
}

/// The same failure again, for each caller of a group, with its kind (a database error keeps
/// its kind and message; others keep their message).
fn copy_error(e: &DbError) -> DbError {
    use diesel::result::Error as DieselError;
    match e {
        DbError::Unavailable(m) => DbError::Unavailable(m.clone()),
        DbError::Query(DieselError::DatabaseError(kind, info)) => {
            DbError::Query(DieselError::DatabaseError(*kind, Box::new(info.message().to_string())))
        }
        DbError::Query(e) => DbError::Query(DieselError::QueryBuilderError(e.to_string().into())),
    }
}

/// The database of the service: a pool and the backend behind it.
#[derive(Clone)]
pub struct Database {
    pool: DbPool,
    url: DatabaseUrl,
    /// How long a call waits for the database (DATABASE_TIMEOUT).
    timeout: Duration,
    /// The group-commit writer every create goes through.
    writer: Writer,
    /// Woken after this process committed events, so that its feed reads them at once.
    committed: std::sync::Arc<tokio::sync::Notify>,
    /// Whether the last call got a connection and did not find the database unavailable (the
    /// change feed calls every 25 ms, so this follows the database within that time).
    reachable: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// One permit per pooled connection that [`Database::run`] may use: a call beyond them
    /// waits here as a task, not on the blocking pool as a thread parked on the pool's lock.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// The reads by id waiting for a group (`reads.rs`).
    reads: std::sync::Arc<reads::Reads>,
}

#[derive(Clone)]
enum Writer {
    Sqlite(writer::SqliteWriter),
    Postgres(pg_writer::PgWriter),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("url", &self.url.redacted()).finish()
    }
}

/// The default pool size: SQLite has one writer, so a few connections suffice; PostgreSQL
/// gains from more.
pub fn default_pool_size(url: &DatabaseUrl) -> u32 {
    match url {
        DatabaseUrl::Sqlite(_) => 4,
        DatabaseUrl::Postgres(_) => 16,
    }
}

/// Whether this build's libpq can speak TLS.
pub const POSTGRES_TLS: bool = cfg!(feature = "postgres-tls");

fn check_tls_support(url: &str) -> anyhow::Result<()> {
    let wants_tls = ["sslmode=require", "sslmode=verify-ca", "sslmode=verify-full"].iter().any(|m| url.contains(m));
    if wants_tls && !POSTGRES_TLS {
        bail!(
            "DATABASE_URL asks for TLS (sslmode=require/verify-*), but this build has no TLS support in libpq: \
             rebuild with `cargo build --release --features postgres-tls` (needs libssl-dev), or use sslmode=disable on a trusted network"
        );
    }
    Ok(())
}

/// Opens one connection directly, so that a failure reports libpq's or SQLite's own words.
pub(crate) fn establish_sqlite(path: &Path) -> anyhow::Result<SqliteConnection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the database folder {}", dir.display()))?;
    }
    let path_str = path.to_str().context("the SQLite path must be valid UTF-8")?;
    let mut conn = SqliteConnection::establish(path_str)
        .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
    apply_sqlite_pragmas(&mut conn)
        .with_context(|| format!("cannot configure the SQLite database {}", path.display()))?;
    Ok(conn)
}

fn establish_postgres(url: &str) -> anyhow::Result<PgConnection> {
    check_tls_support(url)?;
    PgConnection::establish(url).map_err(|e| {
        let error = scrub_secrets(e.to_string().trim(), url);
        anyhow::anyhow!("cannot connect to PostgreSQL at {}: {error}", redact_password(url))
    })
}

/// How often, at most, the pool tries again to open a connection that failed. r2d2 retries a
/// failed connect after 0.4 s, 0.8 s, 1.6 s… up to half the pool's `connection_timeout`, and
/// counts the pending attempts against the pool size, so calls cannot make it try sooner: with
/// the database timeout (5 s) as that timeout, the service went on answering SERVICE_UNAVAILABLE
/// for up to 2.5 s after a failed-over database accepted writes again (every connection is lost
/// at once, so every retry runs in step). The price of a shorter cap: while the database is
/// down, each pending connection logs its failure once per this interval.
const PG_RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Whether the PostgreSQL server has ICU's root collation (`und-x-icu`), read when the service
/// connects: `titleContains` lowercases with it, so that case is ignored beyond ASCII whatever
/// the database's own locale (a database created with `LC_CTYPE 'C'` lowercases ASCII only).
static POSTGRES_ICU: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn postgres_has_icu() -> bool {
    POSTGRES_ICU.load(std::sync::atomic::Ordering::Relaxed)
}

/// The key of the PostgreSQL advisory lock migrations run under ("oppsvc-m").
const MIGRATION_LOCK: i64 = 0x6f70_7073_7663_2d6d;

/// Applies pending migrations; returns how many ran. They run under a lock the database holds
/// (a PostgreSQL advisory lock; SQLite's write lock), and which are pending is decided under it:
/// processes started together on an empty or outdated database all come up, and each migration
/// runs once.
pub fn migrate(url: &DatabaseUrl) -> anyhow::Result<usize> {
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("migrations failed: {e}");
    match url {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = establish_sqlite(path)?;
            conn.immediate_transaction(|c| {
                c.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(diesel::result::Error::QueryBuilderError)
            })
            .map_err(|e| failed(&e))
        }
        DatabaseUrl::Postgres(u) => {
            let mut conn = establish_postgres(u)?;
            let icu = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')",
            ))
            .get_result::<bool>(&mut conn)
            .map_err(|e| failed(&e))?;
            POSTGRES_ICU.store(icu, std::sync::atomic::Ordering::Relaxed);
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .map_err(|e| failed(&e))?;
            let applied = conn.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()).map_err(|e| failed(&e));
            // Also released when the connection closes, which it does next.
            let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn);
            applied
        }
    }
}

impl Database {
    /// Connects (reporting the real cause when that fails), applies pending migrations, and
    /// builds the pool.
    pub fn connect(url: DatabaseUrl, options: PoolOptions) -> anyhow::Result<Self> {
        migrate(&url)?;
        let size = options.size.unwrap_or_else(|| default_pool_size(&url)).max(1);
        let (pool, writer, slots) = match &url {
            DatabaseUrl::Sqlite(path) => {
                let manager = ConnectionManager::<SqliteConnection>::new(path.to_string_lossy());
                let pool = Pool::builder()
                    .max_size(size)
                    .connection_timeout(options.timeout)
                    // A local file does not go away between calls: skip the check-out ping.
                    .test_on_check_out(false)
                    .connection_customizer(Box::new(SqlitePragmas))
                    .build(manager)
                    .context("cannot open the SQLite connection pool")?;
                // The writer has a connection of its own.
                (DbPool::Sqlite(pool), Writer::Sqlite(writer::SqliteWriter::start(path, options.timeout)?), size)
            }
            DatabaseUrl::Postgres(u) => {
                let manager = PgManager { inner: ConnectionManager::new(u.clone()), timeout: options.timeout };
                let pool = Pool::builder()
                    .max_size(size)
                    .min_idle(Some(size.min(4)))
                    // Every check-out passes its own wait (`get_timeout`); this only caps r2d2's
                    // backoff between failed connects, half of it (see PG_RECONNECT_EVERY).
                    .connection_timeout(options.timeout.min(PG_RECONNECT_EVERY * 2))
                    .test_on_check_out(false)
                    .build_unchecked(manager);
                // What `build` does, with the database timeout rather than the backoff's.
                drop(
                    pool.get_timeout(options.timeout)
                        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL connection pool: {e}"))?,
                );
                let writers = pg_writer::writers(size);
                let writer = pg_writer::PgWriter::start(pool.clone(), options.timeout, writers)?;
                // The writer threads (creates and changes) hold a connection each while they
                // store a group; the calls share the others.
                (DbPool::Postgres(pool), Writer::Postgres(writer), size.saturating_sub(2 * writers).max(1))
            }
        };
        let reachable = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(slots as usize));
        Ok(Self {
            pool,
            url,
            timeout: options.timeout,
            writer,
            committed: Default::default(),
            reachable,
            slots,
            reads: Default::default(),
        })
    }

    /// Tells this process's feed that events were committed.
    pub fn wake_feed(&self) {
        self.committed.notify_one();
    }

    /// Resolves when this process committed events since the last call.
    pub async fn committed(&self) {
        self.committed.notified().await
    }

    /// How long a call waits for the database (DATABASE_TIMEOUT).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The parsed URL (never print it unredacted).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.url.backend()
    }

    /// Whether the database answered the last call (a call that found it unavailable, or got no
    /// connection in time, says no).
    pub fn reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes (creates and changes) waiting for a group-commit writer thread: the
    /// `database_writes_queued` gauge. It stays near zero while the writers keep up.
    pub fn queued_writes(&self) -> usize {
        match &self.writer {
            Writer::Sqlite(w) => w.queued(),
            Writer::Postgres(w) => w.queued(),
        }
    }

    /// Connections in use and idle (as the pool holds them: alive or not).
    pub fn pool_state(&self) -> (u32, u32) {
        let state = match &self.pool {
            DbPool::Sqlite(p) => p.state(),
            DbPool::Postgres(p) => p.state(),
        };
        (state.connections - state.idle_connections, state.idle_connections)
    }

    /// Runs a synchronous database function on the blocking pool, with the caller's tracing span
    /// and a pooled connection; a panic inside is raised again here.
    ///
    /// The call gives up after the database timeout (SERVICE_UNAVAILABLE), also when the server
    /// hangs without closing the connection; the blocking thread is then left to finish alone.
    pub async fn run<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(DbConn<'_>) -> Result<R, DbError> + Send + 'static,
    {
        let timeout = self.timeout;
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        let slots = self.slots.clone();
        // The slot is held until the blocking function returns, also when the caller has given
        // up on it: the connection is that long in use.
        let task = async move {
            let slot = slots.acquire_owned().await.expect("the slots are never closed");
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let _entered = span.enter();
                run_on(pool, timeout, f)
            })
            .await
        };
        let result = match tokio::time::timeout(timeout, task.in_current_span()).await {
            Err(_) => Err(DbError::Unavailable(format!("the database did not answer within {timeout:?}"))),
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => Err(DbError::Unavailable(format!("the database task was cancelled: {e}"))),
        };
        self.observe(result)
    }

    /// Notes whether the database answered this call (the `database_reachable` gauge), and passes
    /// the result on.
    fn observe<R>(&self, result: Result<R, DbError>) -> Result<R, DbError> {
        let reachable = !matches!(result, Err(DbError::Unavailable(_)));
        self.reachable.store(reachable, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// Stores an opportunity with its idempotency key, answering once it is committed: through
    /// the group-commit writer of the backend (`writer.rs` for SQLite, `pg_writer.rs`).
    pub async fn create_opportunity(
        &self,
        opportunity: crate::domain::opportunity::Opportunity,
        key: Option<opportunity::IdempotencyRecord>,
    ) -> Result<opportunity::CreateOutcome, DbError> {
        let json = serde_json::to_string(&opportunity).expect("an opportunity serializes");
        self.create_opportunity_answered(opportunity, json, key).await
    }

    /// [`Database::create_opportunity`] with the answer already serialized (`json`), which the
    /// create's event carries.
    pub async fn create_opportunity_answered(
        &self,
        opportunity: crate::domain::opportunity::Opportunity,
        json: String,
        key: Option<opportunity::IdempotencyRecord>,
    ) -> Result<opportunity::CreateOutcome, DbError> {
        let event = events::NewEvent::created(&opportunity, json);
        let outcome = match &self.writer {
            Writer::Sqlite(writer) => writer.create(opportunity, key, event).await,
            Writer::Postgres(writer) => writer.create(opportunity, key, event).await,
        };
        if matches!(outcome, Ok(opportunity::CreateOutcome::Created)) {
            self.committed.notify_one();
        }
        outcome
    }

    /// Changes the opportunity `id` as `decide` says, under its row lock, with the idempotency
    /// key's answer and the change's event in the same transaction, through the group-commit
    /// writer of the backend: changes share commits (with creates too, on SQLite).
    pub async fn change_opportunity<E, F>(
        &self,
        id: uuid::Uuid,
        key: Option<opportunity::ChangeKey>,
        deadline: std::time::Instant,
        decide: F,
    ) -> Result<opportunity::Changed<E>, DbError>
    where
        E: Send + 'static,
        F: Fn(Option<crate::domain::opportunity::Opportunity>) -> opportunity::Decision<E> + Send + 'static,
    {
        let result = match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .run(deadline, move |conn| opportunity::change_sqlite(conn, id, key.as_ref(), deadline, &decide))
                    .await
            }
            Writer::Postgres(writer) => writer.change(id, key, deadline, decide).await,
        };
        self.observe(result)
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run(|conn| {
            on_either!(conn, c => diesel::sql_query("SELECT 1").execute(c)).map(|_| ()).map_err(DbError::classify)
        })
        .await
    }
}

/// Runs `f` on a connection of `pool`, waiting at most `timeout` for one; a connection on which
/// PostgreSQL was found unavailable is not given back to the pool.
fn run_on<R>(pool: DbPool, timeout: Duration, f: impl FnOnce(DbConn<'_>) -> Result<R, DbError>) -> Result<R, DbError> {
    match pool {
        DbPool::Sqlite(p) => {
            let mut conn: PooledConnection<_> = p.get_timeout(timeout)?;
            f(DbConn::Sqlite(&mut conn))
        }
        DbPool::Postgres(p) => {
            let mut pooled: PooledConnection<_> = p.get_timeout(timeout)?;
            let result = f(DbConn::Postgres(&mut pooled.conn));
            if matches!(result, Err(DbError::Unavailable(_))) {
                // Lost, or stuck past a timeout: r2d2 drops it on return.
                pooled.broken = true;
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_leave_a_connection_free_when_the_pool_can() {
        for size in 3..=64 {
            let n = pg_writer::writers(size);
            assert!((1..=2).contains(&n), "{size}: {n}");
            assert!(2 * n < size, "pool of {size}: {n} writers of each kind leave none free");
        }
        assert_eq!(pg_writer::writers(16), 2);
        assert_eq!(pg_writer::writers(4), 1);
        assert_eq!(pg_writer::writers(1), 1, "a pool of one still has writers");
    }

    #[test]
    fn writes_stop_before_their_caller_gives_up() {
        let gives_up = std::time::Instant::now() + Duration::from_secs(10);
        let deadline = write_deadline(gives_up);
        assert!(deadline < gives_up);
        assert!(gives_up - deadline >= Duration::from_millis(900), "a tenth of the time is kept");
        let past = std::time::Instant::now() - Duration::from_secs(1);
        assert!(write_deadline(past) <= std::time::Instant::now(), "a caller already gone: due now");
    }

    #[test]
    fn urls_by_scheme() {
        assert_eq!(DatabaseUrl::parse("sqlite://data/x.db").unwrap(), DatabaseUrl::Sqlite("data/x.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(), DatabaseUrl::Sqlite("/tmp/x.db".into()));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite://data/crm#2.db").is_ok(), "a # is a file name's character");
        for odd in ["sqlite://data/", "sqlite://:memory:", "sqlite://file::memory:", "sqlite://x.db?mode=ro"] {
            let e = DatabaseUrl::parse(odd).unwrap_err().to_string();
            assert!(e.contains("sqlite://PATH"), "{odd}: {e}");
        }
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("data/x.db").is_err());
        assert_eq!(DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(), "postgres");
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact_password("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redact_password("postgres://u@h/db?password=secret&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redact_password("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_password("postgres://h/db?password=secret"), "postgres://h/db?password=***");
        // The client key's passphrase, and a name spelled with percent escapes (libpq decodes them).
        assert_eq!(
            redact_password("postgres://h/db?options=-c%20x%3Dy&sslpassword=pw5&sslmode=require"),
            "postgres://h/db?options=-c%20x%3Dy&sslpassword=***&sslmode=require"
        );
        assert_eq!(redact_password("postgres://h/db?pass%77ord=pw6"), "postgres://h/db?pass%77ord=***");
        assert_eq!(redact_password("postgres://h/db?Password=pw7"), "postgres://h/db?Password=***");
        // A raw `?` in the password: libpq reads the user info up to the `@`, and so does this.
        assert_eq!(redact_password("postgres://u:Pw?Q2xyz@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_password("postgres://u:Pw?Q2@h/db?password=x"), "postgres://u:***@h/db?password=***");
        assert_eq!(redact_password("postgres://u@h/db?application_name=a@b"), "postgres://u@h/db?application_name=a@b");
        assert_eq!(redact_password("postgres://u:p@db1:5432,db2:5432/crm"), "postgres://u:***@db1:5432,db2:5432/crm");
    }

    /// A raw `@` or `/` in the password makes libpq read a piece of it as the host, the port or
    /// the database, and quote that piece in its errors: such a URL is refused at start, and the
    /// refusal quotes no part of it.
    #[test]
    fn a_password_libpq_would_split_is_refused_unquoted() {
        for url in [
            "postgres://app:hunter2/xyz@db/crm",
            "postgres://u:hun?ter/2xyz@h/db",
            "postgres://u:hun/ter?2xyz@h/db",
            "postgres://u:hun@ter2xyz@h/db",
            "postgres://u:hun@ter/2xyz@h/db",
        ] {
            let e = DatabaseUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains("percent-encode"), "{url}: {e}");
            for piece in ["hun", "ter", "2xyz", "hunter2"] {
                assert!(!e.contains(piece), "{url}: {e}");
            }
        }
        for url in [
            "postgres://u:Pw?Q2xyz@h/db",
            "postgres://u@h/db?application_name=a@b",
            "postgres://u:a=b@h/db",
            "postgresql://h/db",
            "postgres://u:p%40ss%2Fw@db1,db2/crm?target_session_attrs=read-write",
        ] {
            assert!(DatabaseUrl::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn errors_that_quote_the_url_never_show_a_password() {
        let url = "postgres://postgres:Pw50%xyz@h/db?sslpassword=Key%20Phrase";
        let error = r#"invalid percent-encoded token: "Pw50%xyz"; also "Key Phrase" and Key%20Phrase"#;
        let scrubbed = scrub_secrets(error, url);
        assert_eq!(scrubbed, r#"invalid percent-encoded token: "***"; also "***" and ***"#);
        assert_eq!(scrub_secrets("no secret here", "postgres://u@h/db"), "no secret here");
    }

    #[test]
    fn debug_never_shows_a_password() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db/crm?password=hunter3").unwrap();
        let debug = format!("{url:?} {url:#?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert!(debug.contains("postgres://app:***@db/crm?password=***"), "{debug}");
        assert_eq!(format!("{:?}", DatabaseUrl::Sqlite("data/x.db".into())), "Sqlite(\"data/x.db\")");
    }

    #[test]
    fn tls_urls_need_the_tls_build() {
        assert_eq!(check_tls_support("postgres://h/db?sslmode=require").is_ok(), POSTGRES_TLS);
        assert!(check_tls_support("postgres://h/db?sslmode=disable").is_ok());
    }

    /// Processes started together on a new file all open it: the switch to WAL, which SQLite
    /// refuses at once while another connection holds the file, is tried again. (Connections of
    /// one process lock the file as separate processes do.)
    #[test]
    fn connections_opened_together_on_a_new_file_all_get_wal() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opened: Vec<_> = (0..6)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        establish_sqlite(&path).map(drop).map_err(|e| format!("{e:#}"))
                    })
                })
                .collect();
            for handle in opened {
                handle.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    /// A call beyond the connections `run` may use waits for a slot within the database
    /// timeout (SERVICE_UNAVAILABLE after it, never a thread parked on the pool), and a slot is
    /// held until its function returns, even after its caller has given up on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_connections_wait_for_a_slot_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let timeout = Duration::from_millis(300);
        let db = Database::connect(url, PoolOptions { size: Some(1), timeout }).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = {
            let db = db.clone();
            tokio::spawn(async move {
                db.run(move |_| {
                    held.recv().ok();
                    Ok(())
                })
                .await
            })
        };
        // The holder's caller gives up after the timeout; its function still runs.
        assert!(matches!(holder.await.unwrap(), Err(DbError::Unavailable(_))));
        let started = std::time::Instant::now();
        let waited = db.run(|_| Ok(())).await;
        assert!(matches!(&waited, Err(DbError::Unavailable(m)) if m.contains("did not answer")), "{waited:?}");
        assert!(started.elapsed() < timeout * 3, "answered after {:?}", started.elapsed());
        assert_eq!(db.slots.available_permits(), 0, "the slot stays taken while the function runs");
        release.send(()).unwrap();
        assert!(db.run(|_| Ok(())).await.is_ok(), "the slot comes back when the function returns");
    }

    #[test]
    fn sqlite_connections_get_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let db = Database::connect(url, PoolOptions { size: Some(2), timeout: Duration::from_secs(1) }).unwrap();
        let DbPool::Sqlite(pool) = &db.pool else { panic!() };
        let mut conn = pool.get().unwrap();
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let get = |conn: &mut SqliteConnection, pragma: &str, column: &str| {
            diesel::sql_query(format!("SELECT CAST({column} AS TEXT) AS v FROM pragma_{pragma}"))
                .get_result::<Row>(conn)
                .unwrap()
                .v
        };
        assert_eq!(get(&mut conn, "journal_mode", "journal_mode"), "wal");
        assert_eq!(get(&mut conn, "synchronous", "synchronous"), "2"); // FULL
        assert_eq!(get(&mut conn, "foreign_keys", "foreign_keys"), "1");
        assert_eq!(get(&mut conn, "busy_timeout", "timeout"), SQLITE_BUSY_TIMEOUT_MS.to_string());
    }

    /// The bundled SQLite is compiled as `.cargo/config.toml` says (no memory accounting, no
    /// mutex per connection call): a build without that file (a Dockerfile that forgot to copy
    /// it, say) would quietly be slower.
    #[test]
    fn the_bundled_sqlite_is_built_without_the_mutexes_it_does_not_need() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = establish_sqlite(&dir.path().join("t.db")).unwrap();
        #[derive(diesel::QueryableByName)]
        struct Used {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            used: i32,
        }
        for option in ["THREADSAFE=2", "DEFAULT_MEMSTATUS=0"] {
            let Used { used } = diesel::sql_query(format!("SELECT sqlite_compileoption_used('{option}') AS used"))
                .get_result(&mut conn)
                .unwrap();
            assert_eq!(used, 1, "SQLite was compiled without {option}: is LIBSQLITE3_FLAGS of .cargo/config.toml set?");
        }
    }

    /// The migration to one schema (2026-12-05-000001) on a database filled by the schema
    /// before it: every stored value reads back the same, money exactly to the cent at both
    /// ends of its range, and the migration reverts and applies again without loss.
    #[test]
    fn the_one_schema_migration_keeps_every_stored_value_on_postgres() {
        use diesel::migration::{Migration, MigrationSource};
        let Some(admin) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) else {
            eprintln!("the_one_schema_migration_keeps_every_stored_value_on_postgres: SKIPPED, needs PostgreSQL");
            return;
        };
        let name = format!("ops_unit_{}", uuid::Uuid::new_v4().simple());
        let mut server = PgConnection::establish(&admin).expect("TEST_DATABASE_URL answers");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut server).unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let result = std::panic::catch_unwind(|| {
            let mut conn = PgConnection::establish(&url).unwrap();
            let migrations = MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS).unwrap();
            let at = migrations.iter().position(|m| m.name().to_string() == "2026-12-05-000001_one_schema").unwrap();
            let (before, one_schema) = (&migrations[..at], &migrations[at]);
            assert!(conn.applied_migrations().unwrap().is_empty(), "a new database");
            for m in before {
                conn.run_migration(m).unwrap();
            }
            // Rows as the schema before stored them: numeric money, smallint probability.
            let ws = "11111111-1111-4111-8111-111111111111";
            let values = [("0.01", "0"), ("125000.50", "60"), ("1000000000000.00", "100"), ("NULL", "NULL")];
            for (i, (value, probability)) in values.iter().enumerate() {
                diesel::sql_query(format!(
                    "INSERT INTO opportunities (id, workspace_id, customer_id, title, stage, pipeline_type, \
                     estimated_value, probability, solution_families, owner_user_id, visibility_mode, created_by, \
                     created_at, updated_at, expected_close_date) VALUES ('00000000-0000-4000-8000-00000000000{i}', \
                     '{ws}', '{ws}', 'Row {i}', 'lead', 'retrofit', {value}, {probability}, ARRAY['BMS', 'CCTV'], \
                     '{ws}', 'shared', '{ws}', '2026-12-01T07:30:00.123456Z', '2026-12-02T07:30:00Z', \
                     '2027-03-31T17:00:00Z')"
                ))
                .execute(&mut conn)
                .unwrap();
            }
            diesel::sql_query("UPDATE opportunity_event_feed SET last_position = 7, purged_through = 2")
                .execute(&mut conn)
                .unwrap();
            let read = |conn: &mut PgConnection| {
                let all: Vec<_> = (0..values.len())
                    .map(|i| {
                        let id = uuid::Uuid::parse_str(&format!("00000000-0000-4000-8000-00000000000{i}")).unwrap();
                        opportunity::get(DbConn::Postgres(conn), id).unwrap().expect("kept")
                    })
                    .collect();
                (all, events::head(DbConn::Postgres(conn)).unwrap())
            };
            conn.run_migration(one_schema).unwrap();
            let (after, head) = read(&mut conn);
            let cents: Vec<_> = after.iter().map(|o| o.estimated_value.map(|m| m.cents())).collect();
            assert_eq!(cents, [Some(1), Some(12_500_050), Some(100_000_000_000_000), None]);
            let probabilities: Vec<_> = after.iter().map(|o| o.probability).collect();
            assert_eq!(probabilities, [Some(0), Some(60), Some(100), None]);
            assert_eq!(head, 7);
            let o = &after[1];
            assert_eq!(o.solution_families, ["BMS", "CCTV"]);
            assert_eq!(o.created_at.to_rfc3339(), "2026-12-01T07:30:00.123456+00:00");
            assert_eq!(o.expected_close_date.unwrap().to_rfc3339(), "2027-03-31T17:00:00+00:00");
            // The range stays guarded, now in cents.
            let over = diesel::sql_query(
                "UPDATE opportunities SET estimated_value_cents = 100000000000001 WHERE title = 'Row 0'",
            )
            .execute(&mut conn);
            assert!(over.is_err(), "a value over the range is refused");
            // Down and up again: the same values.
            conn.revert_migration(one_schema).unwrap();
            conn.run_migration(one_schema).unwrap();
            let (again, _) = read(&mut conn);
            assert_eq!(
                again.iter().map(|o| o.estimated_value).collect::<Vec<_>>(),
                after.iter().map(|o| o.estimated_value).collect::<Vec<_>>()
            );
        });
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut server);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
