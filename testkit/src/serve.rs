//! The real `ingest serve` as a child process, for tests that drive it the way an operator or a
//! device would: on loopback ports the OS chooses, over a fresh SQLite file in its own temp dir
//! (unless the test names a store), with nothing from the developer's environment leaking in,
//! killed when dropped.
//!
//! Every line the service announces itself with on stdout, `LABEL listening on URL` or
//! `LABEL: VALUE`, is collected under its label (`admin API`, `device bridge`, and whatever
//! listeners or files come later), so a new one needs no change here: a test asks for it by label
//! with [`IngestProcess::announced`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flags (with their values) every test's `ingest serve` gets unless the test passes the same
/// flag itself: every listener on loopback, on a port the OS picks, so parallel tests never
/// collide. A new listener with a fixed default port gets its flag here (`127.0.0.1:0`, or off).
pub const DEFAULT_ARGS: &[(&str, &str)] = &[
    ("--admin-addr", "127.0.0.1:0"),
    ("--port", "0"),
    ("--device-host", "127.0.0.1"),
    // MQTT over TLS defaults to 0.0.0.0:8883 and a CA in the working directory; a test that
    // wants it names an address (and a directory) itself.
    ("--mqtt-addr", "off"),
];

/// How long the service may take to print a listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The label of the admin API's listening line.
pub const ADMIN_API: &str = "admin API";
/// The label of the HTTP device bridge's listening line.
pub const DEVICE_BRIDGE: &str = "device bridge";

/// A running `ingest serve`.
#[derive(Debug)]
pub struct IngestProcess {
    child: Child,
    listeners: Arc<Mutex<Listeners>>,
    /// The service's own directory: its registry file, its log, and room for the test's files.
    pub dir: tempfile::TempDir,
}

/// What the stdout reader has seen so far.
#[derive(Debug, Default)]
struct Listeners {
    urls: BTreeMap<String, String>,
    /// Stdout closed: the process is gone and no more lines come.
    closed: bool,
}

/// Starts `binary serve` (a test passes `env!("CARGO_BIN_EXE_ingest")`) with the
/// [`DEFAULT_ARGS`] that `args` does not set itself, a fresh SQLite registry unless `args` has a
/// `--registry=…`, then `args`, and only the environment in `env`. Waits until the listeners its `--role` implies have printed their URLs.
/// The service's log (stderr) goes to `service.log` in its directory, or to the test's stderr
/// when `TEST_LOG` is set.
pub fn spawn_ingest(binary: &str, args: &[&str], env: &[(&str, &str)]) -> IngestProcess {
    let dir = tempfile::tempdir().unwrap();
    let stderr = if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::from(std::fs::File::create(dir.path().join("service.log")).unwrap())
    };
    let registry = (!args.iter().any(|a| a.starts_with("--registry="))).then(|| {
        format!(
            "--registry=sqlite:{}",
            dir.path().join("registry.db").display()
        )
    });
    let mut child = Command::new(binary)
        .arg("serve")
        .args(defaults_not_in(args))
        .args(registry)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starting ingest serve");
    let listeners = read_listeners(child.stdout.take().unwrap());
    let process = IngestProcess {
        child,
        listeners,
        dir,
    };
    for label in expected_labels(args) {
        process.announced(label);
    }
    process
}

/// The [`DEFAULT_ARGS`] whose flag `args` does not give (as `--flag VALUE` or `--flag=VALUE`).
fn defaults_not_in(args: &[&str]) -> Vec<&'static str> {
    let given = |flag: &str| {
        args.iter()
            .any(|a| *a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
    };
    DEFAULT_ARGS
        .iter()
        .filter(|(flag, _)| !given(flag))
        .flat_map(|(flag, value)| [*flag, *value])
        .collect()
}

/// The listeners `--role` implies (the default role serves both).
fn expected_labels(args: &[&str]) -> Vec<&'static str> {
    let role = args
        .windows(2)
        .find(|w| w[0] == "--role")
        .map(|w| w[1])
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--role=")));
    match role {
        Some("admin") => vec![ADMIN_API],
        Some("device") => vec![DEVICE_BRIDGE],
        _ => vec![ADMIN_API, DEVICE_BRIDGE],
    }
}

/// Collects `LABEL listening on URL` and `LABEL: VALUE` lines on a thread of their own, which
/// keeps draining stdout so the child never blocks on a full pipe.
fn read_listeners(stdout: ChildStdout) -> Arc<Mutex<Listeners>> {
    let listeners = Arc::new(Mutex::new(Listeners::default()));
    let seen = Arc::clone(&listeners);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let announced = line
                .split_once(" listening on ")
                .or_else(|| line.split_once(": "));
            if let Some((label, value)) = announced {
                let mut seen = seen.lock().unwrap();
                seen.urls
                    .insert(label.trim().to_owned(), value.trim().to_owned());
            }
        }
        seen.lock().unwrap().closed = true;
    });
    listeners
}

impl IngestProcess {
    /// What the service announced under `label`: a listener's URL (`"admin API"`, `"device
    /// bridge"`, …) or a `LABEL: VALUE` line's value, waiting for its line if it has not come
    /// yet; panics with the service's log if it never does.
    pub fn announced(&self, label: &str) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (url, closed) = {
                let seen = self.listeners.lock().unwrap();
                (seen.urls.get(label).cloned(), seen.closed)
            };
            if let Some(url) = url {
                return url;
            }
            assert!(
                !closed && Instant::now() < deadline,
                "ingest serve announced no {label:?} (seen: {:?}); its log:\n{}",
                self.all_announced(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT` of the admin API.
    pub fn admin_url(&self) -> String {
        self.announced(ADMIN_API)
    }

    /// `http://127.0.0.1:PORT` of the HTTP device bridge.
    pub fn device_url(&self) -> String {
        self.announced(DEVICE_BRIDGE)
    }

    /// Everything announced so far, by label.
    pub fn all_announced(&self) -> BTreeMap<String, String> {
        self.listeners.lock().unwrap().urls.clone()
    }

    /// The service's log so far (empty when `TEST_LOG` sent it to the test's stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("service.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as Cloud Run and systemd do, and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.child.wait().unwrap()
    }

    /// Kills the process with SIGKILL, as a crash or a lost VM would: nothing runs at exit.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A path inside the service's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The service's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_flag_the_test_sets_itself_is_left_out() {
        let all = defaults_not_in(&[]);
        assert_eq!(all.len(), DEFAULT_ARGS.len() * 2);
        let without_port = defaults_not_in(&["--port", "8080"]);
        assert!(!without_port.contains(&"--port"));
        let without_admin = defaults_not_in(&["--admin-addr=127.0.0.1:9"]);
        assert!(!without_admin.contains(&"--admin-addr"));
        assert!(without_admin.contains(&"--port"));
    }

    #[test]
    fn the_role_decides_which_listeners_are_awaited() {
        assert_eq!(expected_labels(&["--role", "admin"]), [ADMIN_API]);
        assert_eq!(expected_labels(&["--role=device"]), [DEVICE_BRIDGE]);
        assert_eq!(expected_labels(&[]), [ADMIN_API, DEVICE_BRIDGE]);
    }
}
