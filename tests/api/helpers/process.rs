//! The service's binary as a process of its own: started on port 0, its log kept, signals sent
//! as system calls (no `kill` program: procps is not on a minimal Debian). Self-contained, so
//! that `tests/failover.rs` includes it too.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The secret every test app checks tokens with (HS256 secrets need at least 32 bytes).
pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

/// A signal by the name `kill -NAME` takes.
pub fn signal_by_name(name: &str) -> rustix::process::Signal {
    use rustix::process::Signal;
    match name {
        "INT" => Signal::INT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        other => panic!("the tests send no signal {other:?}"),
    }
}

/// Sends the signal `name` to the process `pid`: a system call, so that the tests need no
/// `kill` program (procps is not on a minimal Debian).
pub fn send_signal(pid: u32, name: &str) -> std::io::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).expect("a process id is positive");
    rustix::process::kill_process(pid, signal_by_name(name)).map_err(std::io::Error::from)
}

/// The release or debug binary of this build, started as a process.
pub struct ServiceProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServiceProcess {
    /// Starts `opportunity-service serve` on `database_url` with port 0 and waits for its
    /// "listening on" line.
    pub fn start(database_url: &str, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opportunity-service"));
        command.env("DATABASE_URL", database_url).env("AUTH_JWT_SECRET", SECRET).envs(envs.iter().copied());
        Self::spawn(command)
    }

    /// Starts a prepared command of the binary (on port 0 with info logs unless the command sets
    /// `LISTEN_ADDR` or `RUST_LOG`), and waits for its "listening on" line.
    pub fn spawn(mut command: Command) -> Self {
        use std::io::{BufRead, BufReader};
        // What the caller set wins; otherwise port 0 and info logs.
        let set = |command: &Command, name: &str| command.get_envs().any(|(k, _)| k == name);
        if !set(&command, "LISTEN_ADDR") {
            command.env("LISTEN_ADDR", "127.0.0.1:0");
        }
        if !set(&command, "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    // Text logs end the address with a space, JSON logs with a quote.
                    let addr: String =
                        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c)).collect();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().expect("address in the log"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the service did not log its address; log:\n{}", log.lock().unwrap());
            }
        };
        Self { child, addr, log }
    }

    /// Sends the signal `name` (`TERM`, `KILL`, …), as a system call.
    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name).unwrap_or_else(|e| panic!("SIG{name} to the service: {e}"));
    }

    /// Waits for the exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
