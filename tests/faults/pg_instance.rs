//! A PostgreSQL server of a test's own: `initdb` in a temporary folder, its own free port on
//! 127.0.0.1, trust auth, `fsync` on. Stopping, freezing or restarting it disturbs nothing else.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI does), `initdb` and `pg_ctl`
//! run as the `postgres` user through `runuser`, in a folder that user owns.
//!
//! Also the gate of the self-contained fault and soak tests: they bring their own database, so
//! they run in the SQLite pass only (the one without `TEST_DATABASE_URL`), not twice in CI.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diesel::{Connection, RunQueryDsl};
use tempfile::TempDir;

/// Whether this test runs in this pass: the fault and soak tests start their own databases, so
/// they run only in the SQLite pass (no `TEST_DATABASE_URL`). Says so when they skip.
pub fn sqlite_pass_only(test: &str) -> bool {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            eprintln!(
                "{test}: SKIPPED in this pass (TEST_DATABASE_URL is set): it starts a database of its own \
                 and runs in the SQLite pass only, so that CI does not run it twice"
            );
            false
        }
        _ => true,
    }
}

/// Whether CI runs us (`CI=true`): there a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The folder of the PostgreSQL server binaries (`initdb`, `pg_ctl`): the newest version under
/// `/usr/lib/postgresql/*/bin`, or `PG_BIN` when set.
pub fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.split('.').next()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A free port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How `pg_ctl stop` ends the server.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// Rolls back open transactions, disconnects clients, checkpoints: an orderly shutdown.
    Fast,
    /// Quits at once without a checkpoint, like a crash: the next start runs crash recovery.
    Immediate,
}

/// A running PostgreSQL server in a temporary folder; stopped and removed on drop.
pub struct PgInstance {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PgInstance {
    /// Gates the test (SQLite pass only), finds the binaries (fails in CI without them, else
    /// says "skipped: no initdb"), and starts a fresh server. `None` means: skip the test.
    pub fn for_test(test: &str) -> Option<Self> {
        if !sqlite_pass_only(test) {
            return None;
        }
        let Some(bin) = postgres_bin() else {
            assert!(
                !in_ci(),
                "{test}: no initdb/pg_ctl under /usr/lib/postgresql/*/bin (or PG_BIN): CI needs the \
                 PostgreSQL server binaries (Debian package postgresql)"
            );
            eprintln!("{test}: skipped: no initdb (install the PostgreSQL server binaries, or set PG_BIN)");
            return None;
        };
        Some(Self::start_new(bin))
    }

    /// `initdb` in a new temporary folder, then start on a free port.
    pub fn start_new(bin: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("ops-pg-").tempdir().expect("temp dir");
        if is_root() {
            let status =
                Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().expect("chown runs");
            assert!(status.success(), "chown postgres {} failed", dir.path().display());
        }
        let mut instance = Self { bin, dir, port: 0 };
        let data = instance.data_dir();
        // --no-sync only skips initdb's own final flush; the server runs with fsync on.
        instance
            .pg("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .unwrap_or_else(|e| panic!("initdb failed: {e}"));
        // A port may be taken between asking and binding: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            instance.port = free_port();
            match instance.try_start() {
                Ok(()) => return instance,
                Err(e) => last = e,
            }
        }
        panic!("the test PostgreSQL did not start: {last}");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Runs one of the server binaries (as `postgres` when we are root), output to a file.
    fn pg(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // Files, not pipes: the server forked by pg_ctl must not hold our pipe open.
        let out_path = self.dir.path().join(format!("{tool}.out"));
        let out = File::create(&out_path).map_err(|e| e.to_string())?;
        if is_root() {
            let _ = Command::new("chown").arg("postgres:postgres").arg(&out_path).status();
        }
        let status = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .status()
            .map_err(|e| format!("{tool} did not run: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            let output = std::fs::read_to_string(&out_path).unwrap_or_default();
            Err(format!("{tool} {args:?} exited with {status}:\n{output}\nserver log:\n{}", self.log()))
        }
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=on \
             -c synchronous_commit=on -c shared_buffers=16MB -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let log = self.dir.path().join("server.log").to_string_lossy().into_owned();
        self.pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start"])
    }

    /// Starts the (stopped) server again on the same port, waiting until it accepts connections.
    pub fn start(&self) {
        self.try_start().unwrap_or_else(|e| panic!("restarting the test PostgreSQL failed: {e}"));
    }

    /// Stops the server, waiting until it is gone.
    pub fn stop(&self, mode: StopMode) {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let data = self.data_dir();
        self.pg("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"])
            .unwrap_or_else(|e| panic!("stopping the test PostgreSQL failed: {e}"));
    }

    /// The postmaster and its children (backends, checkpointer, …).
    fn processes(&self) -> Vec<u32> {
        let Ok(pid_file) = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")) else {
            return Vec::new();
        };
        let Some(postmaster) = pid_file.lines().next().and_then(|p| p.trim().parse::<u32>().ok()) else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        pids
    }

    fn signal_all(&self, signal: &str) {
        for pid in self.processes() {
            // A process that is gone already needs no signal.
            let _ = crate::helpers::send_signal(pid, signal);
        }
    }

    /// Freezes every process of the server (SIGSTOP): connections stay open but nothing
    /// answers, like a hung host or a network that drops packets.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    /// A direct connection, for setting up faults and checking what was stored.
    pub fn connect(&self) -> diesel::PgConnection {
        diesel::PgConnection::establish(&self.url())
            .unwrap_or_else(|e| panic!("direct connection to the test PostgreSQL: {e}\n{}", self.log()))
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        // A frozen server would not act on the stop signal.
        self.thaw();
        let data = self.data_dir();
        if self.pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"]).is_err() {
            self.signal_all("KILL");
        }
        // The TempDir removes the folder (root may remove what postgres owns).
    }
}

/// One stored opportunity: its id (lowercase) and title.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, diesel::QueryableByName)]
pub struct StoredRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub title: String,
}

/// Every stored opportunity (id and title), read over a direct connection of its own.
pub fn stored_rows(database_url: &str) -> Vec<StoredRow> {
    let rows = if let Some(path) = database_url.strip_prefix("sqlite://") {
        let mut conn = diesel::SqliteConnection::establish(path).expect("open the SQLite database");
        diesel::sql_query("SELECT id, title FROM opportunities").load::<StoredRow>(&mut conn)
    } else {
        let mut conn = diesel::PgConnection::establish(database_url).expect("connect to PostgreSQL");
        diesel::sql_query("SELECT id::text AS id, title FROM opportunities").load::<StoredRow>(&mut conn)
    }
    .expect("read the stored opportunities");
    rows.into_iter().map(|r| StoredRow { id: r.id.to_lowercase(), title: r.title }).collect()
}

/// The processes whose parent is `pid`, read from `/proc` (no `ps` program needed).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `PID (COMM) STATE PPID …`; COMM may hold spaces and parentheses.
            let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}
