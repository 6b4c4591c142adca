//! Starts and stops the real `warren` binary for a test: an ephemeral port, a temporary data
//! dir, the `listening on ADDR` line read from its log, and lapin connections to it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The other broker the suite is pointed at (`WARREN_E2E_URL`), if any.
pub fn external() -> Option<String> {
    std::env::var("WARREN_E2E_URL").ok().filter(|u| !u.is_empty())
}

/// A running broker; killed and its data dir removed on drop.
pub struct TestBroker {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its management API listens (an ephemeral port unless a test says otherwise).
    pub http: Option<SocketAddr>,
    /// Where its Prometheus metrics are served (likewise).
    pub metrics: Option<SocketAddr>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The extra flags and environment it was started with (a restart keeps them).
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl TestBroker {
    /// Starts warren with default settings.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Starts warren with extra flags and environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let data_dir = std::env::temp_dir().join(format!(
            "warren-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        Self::start_in(data_dir, args, envs)
    }

    /// Stops this broker with SIGTERM (asserting a clean exit) and starts a new one on the
    /// same data dir (on a new port).
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "warren exited with {status:?}");
        self.respawn();
    }

    /// Kills this broker with SIGKILL (no chance to flush anything) and starts a new one on
    /// the same data dir.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.respawn();
    }

    /// Starts a new broker on the same data dir after this one exited (e.g. `terminate`).
    pub fn respawn_after_exit(&mut self) {
        self.respawn();
    }

    fn respawn(&mut self) {
        let dir = std::mem::take(&mut self.data_dir);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> =
            self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let next = Self::start_in(dir, &args, &envs);
        let old = std::mem::replace(self, next);
        // The old handle's process is gone; keep its Drop from removing the shared data dir.
        std::mem::forget(old);
    }

    /// Starts warren on an existing (or new) data dir.
    pub fn start_in(data_dir: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(&data_dir);
        // Tests run side by side: never the fixed default ports.
        for flag in ["--management-listen", "--prometheus-listen"] {
            if !args.contains(&flag) {
                cmd.arg(flag).arg("127.0.0.1:0");
            }
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("WARREN_LISTEN")
            .env_remove("WARREN_DATA_DIR")
            .env_remove("WARREN_MANAGEMENT_LISTEN")
            .env_remove("WARREN_PROMETHEUS_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn warren");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let (mut http, mut metrics) = (None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("management API on http://") {
                    http = line[at + "management API on http://".len()..].trim().parse().ok();
                }
                if let Some(at) = line.find("Prometheus metrics on http://") {
                    let rest = &line[at + "Prometheus metrics on http://".len()..];
                    metrics = rest.trim().trim_end_matches("/metrics").parse().ok();
                }
                if let Some(at) = line.find("listening on ") {
                    let addr = line[at + "listening on ".len()..].trim().to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((addr, http, metrics));
                    }
                }
                if std::env::var_os("WARREN_E2E_LOG").is_some() {
                    eprintln!("[warren] {line}");
                }
            }
        });
        let (addr, http, metrics) =
            rx.recv_timeout(Duration::from_secs(30)).expect("warren did not log 'listening on'");
        let addr = addr.parse().expect("listening address");
        TestBroker {
            child,
            addr,
            http,
            metrics,
            data_dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// `amqp://guest:guest@ADDR/%2f`; or, to check a test's expectations against another
    /// broker (RabbitMQ), the URL in `WARREN_E2E_URL`. Only the modules that say so are meant
    /// to run that way (the others restart warren, pass it flags or read its data dir).
    pub fn uri(&self) -> String {
        external().unwrap_or_else(|| format!("amqp://guest:guest@{}/%2f", self.addr))
    }

    /// A lapin connection as guest on `/`.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default()).await.expect("connect")
    }

    /// A connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("create_channel");
        (conn, ch)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait")
    }

    /// Sends SIGTERM and waits for the exit status. A broker still running 30 s later has
    /// hung (it gives its connections 5 s and its store 5 s): it is killed and the test fails.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("warren did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
