//! The real `ingest serve` as a child process, for tests that drive it the way an operator or a
//! device would: over a fresh SQLite file in its own temp dir (or the store the test names), with nothing from the developer's
//! environment leaking in, killed when dropped. The URLs come from the lines the service prints.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the service may take to print its listening lines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ingest serve`.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT` of the admin API, when the role serves it.
    pub admin_url: Option<String>,
    /// `http://127.0.0.1:PORT` of the device bridge, when the role serves it.
    pub device_url: Option<String>,
    /// Every other line the service announced itself with, by label: `MQTT bridge` (an
    /// `mqtts://` URL), `MQTT bridge (plain TCP)` (`mqtt://`), `MQTT CA certificate` (a path).
    pub announced: std::collections::BTreeMap<String, String>,
    /// The service's own directory: its registry file, and room for the test's files.
    pub dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts `ingest serve` on loopback ports chosen by the OS, with `args` added, and waits
    /// until every listener its `--role` implies has printed its URL.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// As [`ServeProcess::start`], with these environment variables set; the service's log
    /// (stderr) then goes to `service.log` in its directory, unless `TEST_LOG` is set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else if env.is_empty() {
            Stdio::null()
        } else {
            Stdio::from(std::fs::File::create(dir.path().join("service.log")).unwrap())
        };
        // A fresh SQLite file unless the test names its own store.
        let registry = (!args.iter().any(|a| a.starts_with("--registry="))).then(|| {
            format!(
                "--registry=sqlite:{}",
                dir.path().join("registry.db").display()
            )
        });
        let admin_only = args.windows(2).any(|w| w == ["--role", "admin"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
            .args(["serve", "--admin-addr", "127.0.0.1:0", "--port", "0"])
            .args(["--device-host", "127.0.0.1"])
            // MQTT over TLS only where a test asks for it (it would share port 8883 otherwise).
            .args(
                (!args.iter().any(|a| a.starts_with("--mqtt-addr")))
                    .then_some(["--mqtt-addr", "off"])
                    .into_iter()
                    .flatten(),
            )
            .args(registry)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting ingest serve");
        let stdout = child.stdout.take().unwrap();
        let wanted = if admin_only { 1 } else { 2 };
        match read_urls(stdout, wanted) {
            Ok((admin_url, device_url, announced)) => Self {
                child,
                admin_url,
                device_url,
                announced,
                dir,
            },
            Err(message) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{message}");
            }
        }
    }

    /// Sends SIGTERM, as Cloud Run and systemd do, and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.child.wait().unwrap()
    }

    /// A path inside the service's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `… listening on URL` lines until `wanted` arrived, then keeps draining stdout on its
/// thread so the child never blocks on a full pipe.
/// Every line before those is kept by its label (`MQTT bridge listening on URL`, `MQTT CA
/// certificate: PATH`); the service prints them first.
type Announced = (
    Option<String>,
    Option<String>,
    std::collections::BTreeMap<String, String>,
);

fn read_urls(stdout: ChildStdout, wanted: usize) -> Result<Announced, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let label_and_value = line
                .split_once(" listening on ")
                .or_else(|| line.split_once(": "));
            if let Some((label, value)) = label_and_value {
                let _ = tx.send((label.to_owned(), value.trim().to_owned()));
            }
        }
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let (mut admin, mut device) = (None, None);
    let mut announced = std::collections::BTreeMap::new();
    while usize::from(admin.is_some()) + usize::from(device.is_some()) < wanted {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((label, url)) if label == "admin API" => admin = Some(url),
            Ok((label, url)) if label == "device bridge" => device = Some(url),
            Ok((label, value)) => {
                announced.insert(label, value);
            }
            Err(_) => {
                return Err(format!(
                    "ingest serve did not print its listening lines in time \
                     (admin: {admin:?}, device: {device:?})"
                ));
            }
        }
    }
    Ok((admin, device, announced))
}
