//! Helpers for the device agent's end-to-end tests: a real ingest (its library's `server::run`,
//! the same code `ingest serve` runs, in this test process, on fixed loopback ports so it can be
//! stopped and started again on the same port), its operator CLI (`ingest::cli::run`, in
//! process), the real `iotcore-device` binary as a child process (killed when dropped), and the
//! two places readings land: the file sink and the Pub/Sub emulator (pulled with `testkit`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use testkit::pubsub::Pulled;
pub use testkit::{PATIENCE, PROJECT, REGION, eventually, unique};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ingest::config::ServeArgs,
}

#[derive(Parser)]
struct Admin {
    #[command(subcommand)]
    command: ingest::cli::AdminCommand,
}

/// Where a test's ingest sends accepted events.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// The embedded default: JSON lines in a file.
    File,
    /// The Pub/Sub emulator at this host.
    PubSub(String),
}

/// A real ingest (device bridge and admin API) with its own SQLite registry.
pub struct Ingest {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    sink: SinkKind,
    events_per_minute: u32,
    /// The MQTT bridge's TLS port, when it serves MQTT.
    pub mqtt_port: Option<u16>,
    /// The messages one MQTT connection may publish each second.
    mqtt_per_second: u32,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Ingest {
    /// With a per-device limit so high that it never slows a test: the default (6,000/min,
    /// IoT Core's) would make a backlog drain take minutes.
    pub async fn start(sink: SinkKind) -> Self {
        Self::start_limited(sink, 100_000_000).await
    }

    /// With the service's per-device limit of HTTP publishes a minute.
    pub async fn start_limited(sink: SinkKind, events_per_minute: u32) -> Self {
        Self::start_with(sink, events_per_minute, None).await
    }

    /// With the MQTT bridge over TLS on a port of its own, its CA in [`Self::mqtt_ca`]; no
    /// per-connection message limit a test would notice.
    pub async fn start_mqtt(sink: SinkKind) -> Self {
        Self::start_with(sink, 100_000_000, Some(free_port())).await
    }

    /// As [`Self::start_mqtt`], with a limit of `per_second` messages per MQTT connection
    /// (`--mqtt-messages-per-second`), over which the bridge refuses a message on the errors
    /// topic.
    pub async fn start_mqtt_limited(sink: SinkKind, per_second: u32) -> Self {
        let mut ingest = Self::new(sink, 100_000_000, Some(free_port()));
        ingest.mqtt_per_second = per_second;
        ingest.resume().await;
        ingest
    }

    async fn start_with(sink: SinkKind, events_per_minute: u32, mqtt_port: Option<u16>) -> Self {
        let mut ingest = Self::new(sink, events_per_minute, mqtt_port);
        ingest.resume().await;
        ingest
    }

    fn new(sink: SinkKind, events_per_minute: u32, mqtt_port: Option<u16>) -> Self {
        device::tls::install_provider();
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            admin_port: free_port(),
            sink,
            events_per_minute,
            mqtt_port,
            mqtt_per_second: 1_000_000,
            running: None,
        }
    }

    /// The CA (PEM) ingest made for its MQTT listener, which devices trust.
    pub fn mqtt_ca(&self) -> PathBuf {
        self.dir.path().join("mqtt-tls/ca.pem")
    }

    /// The MQTT listener's arguments, or `off`.
    fn mqtt_args(&self) -> Vec<String> {
        let Some(port) = self.mqtt_port else {
            // The agent speaks HTTP here; no MQTT listener on the shared port 8883.
            return vec!["--mqtt-addr".into(), "off".into()];
        };
        let tls_dir = self.dir.path().join("mqtt-tls");
        vec![
            "--mqtt-addr".into(),
            format!("127.0.0.1:{port}"),
            "--mqtt-tls-dir".into(),
            tls_dir.display().to_string(),
            "--mqtt-messages-per-second".into(),
            self.mqtt_per_second.to_string(),
        ]
    }

    /// Starts serving (again) on the same ports, registry and sink.
    pub async fn resume(&mut self) {
        assert!(self.running.is_none(), "already running");
        let registry = format!("sqlite:{}", self.dir.path().join("registry.db").display());
        let port = self.port.to_string();
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let mut argv = vec![
            "ingest".to_owned(),
            "--port".into(),
            port,
            "--device-host".into(),
            "127.0.0.1".into(),
            "--admin-addr".into(),
            admin,
            "--registry".into(),
            registry,
            "--activity-flush-secs".into(),
            "1".into(),
            "--events-per-minute".into(),
            self.events_per_minute.to_string(),
        ];
        argv.extend(self.mqtt_args());
        match &self.sink {
            SinkKind::File => {
                argv.push("--sink".into());
                argv.push(format!("file:{}", self.events_path().display()));
            }
            SinkKind::PubSub(host) => {
                argv.extend(["--sink".into(), "pubsub".into()]);
                argv.extend(["--pubsub-emulator-host".into(), host.clone()]);
            }
        }
        let args = Serve::try_parse_from(argv).unwrap().args;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            ingest::server::run(args, shutdown).await.unwrap();
        });
        self.running = Some((stop, task));
        let health = format!("{}/healthz", self.device_url());
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while !client
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "ingest did not come up on {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(port) = self.mqtt_port {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "no MQTT listener on {port}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Stops serving: the listeners close, so the port refuses connections until [`Self::resume`].
    pub async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("not running");
        let _ = stop.send(());
        task.await.unwrap();
    }

    pub fn device_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Runs an operator CLI command (`ingest registries create …`) against this ingest.
    pub async fn cli(&self, args: &[&str]) {
        assert!(self.try_cli(args).await, "ingest {args:?} failed");
    }

    /// As [`Self::cli`]; whether the command succeeded.
    pub async fn try_cli(&self, args: &[&str]) -> bool {
        let mut argv = vec!["ingest"];
        argv.extend(args);
        let admin_url = self.admin_url();
        argv.extend([
            "--admin-url",
            &admin_url,
            "--project",
            PROJECT,
            "--region",
            REGION,
        ]);
        let command = Admin::try_parse_from(&argv)
            .unwrap_or_else(|err| panic!("ingest {args:?}: {err}"))
            .command;
        let code = ingest::cli::run(command).await.unwrap();
        format!("{code:?}") == format!("{:?}", std::process::ExitCode::SUCCESS)
    }

    /// A registry whose events go to `topic`, and a device with the public key at `public`.
    pub async fn register(&self, registry: &str, topic: &str, device: &str, public: &Path) {
        self.cli(&["registries", "create", registry, "--event-topic", topic])
            .await;
        let public = public.to_str().unwrap();
        self.cli(&[
            "devices",
            "create",
            device,
            "--registry",
            registry,
            "--public-key",
            public,
            "--format",
            "ES256_PEM",
        ])
        .await;
    }

    /// The device's resource as the admin API shows it.
    pub async fn device_json(&self, registry: &str, device: &str) -> Value {
        let url = format!(
            "{}/v1/projects/{PROJECT}/locations/{REGION}/registries/{registry}/devices/{device}",
            self.admin_url()
        );
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// An event as it landed: its payload (the agent's reading JSON) and attributes.
#[derive(Debug, Clone)]
pub struct Landed {
    pub reading: Value,
    pub attributes: BTreeMap<String, String>,
}

impl From<Pulled> for Landed {
    fn from(pulled: Pulled) -> Self {
        Self {
            reading: pulled.json(),
            attributes: pulled.attributes,
        }
    }
}

/// Every event in the file sink so far (a torn last line is left for the next look).
pub fn file_events(path: &Path) -> Vec<Landed> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|message| Pulled::from_message(&message).into())
        .collect()
}

/// The distinct `data.n` numbers among `events`, and how many distinct reading ids there are.
pub fn numbers_and_ids(events: &[Landed]) -> (std::collections::BTreeSet<u64>, usize) {
    let numbers = events
        .iter()
        .filter_map(|e| e.reading["data"]["n"].as_u64())
        .collect();
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| e.reading["id"].as_str())
        .collect();
    (numbers, ids.len())
}

/// A device's files: key pair (from the real `keygen`), settings file, spool directory.
pub struct DeviceFiles {
    pub dir: tempfile::TempDir,
    pub registry: String,
    pub device: String,
}

impl DeviceFiles {
    /// Fresh ES256 keys for a new device id.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let output = device_command()
            .args([
                "keygen",
                "--algorithm",
                "ES256",
                "--out",
                keys.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            dir,
            registry: unique("reg"),
            device: unique("dev"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn public_key(&self) -> PathBuf {
        self.path("keys/public.pem")
    }

    /// Writes `config.toml` for `endpoint` with `extra` TOML appended.
    pub fn write_settings(&self, endpoint: &str, extra: &str) -> PathBuf {
        self.write_settings_with(endpoint, "", extra)
    }

    /// Settings for the agent over MQTT (TLS, trusting ingest's own CA) with `top` top-level
    /// fields and `extra` sections appended.
    pub fn write_mqtt_settings(&self, ingest: &Ingest, top: &str, extra: &str) -> PathBuf {
        let port = ingest.mqtt_port.expect("ingest serves MQTT");
        let top = format!(
            "transport = \"mqtt\"\nca_file = \"{}\"\n{top}\n[mqtt]\nhost = \"localhost\"\n\
             port = {port}\nkeepalive = \"30s\"\n",
            ingest.mqtt_ca().display()
        );
        self.write_settings_with(&ingest.device_url(), &top, extra)
    }

    /// `top` is TOML placed before the first section (top-level fields and sections of its own).
    pub fn write_settings_with(&self, endpoint: &str, top: &str, extra: &str) -> PathBuf {
        let text = format!(
            "endpoint = \"{endpoint}\"\nproject = \"{PROJECT}\"\nregion = \"{REGION}\"\n\
             registry = \"{}\"\ndevice = \"{}\"\nprivate_key = \"{}\"\n{top}\n[spool]\ndir = \"{}\"\n\
             sync_interval = \"100ms\"\n\n[sender]\nmax_backoff = \"1s\"\n{extra}",
            self.registry,
            self.device,
            self.path("keys/private.pem").display(),
            self.path("state").display(),
        );
        let path = self.path("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A new device with fresh keys, registered in `ingest` in a registry of its own whose events go
/// to `topic` (with the file sink any topic name will do).
pub async fn new_device(ingest: &Ingest, topic: Option<&str>) -> DeviceFiles {
    let files = DeviceFiles::new();
    let default_topic = format!("projects/{PROJECT}/topics/events");
    let topic = topic.unwrap_or(&default_topic);
    ingest
        .register(&files.registry, topic, &files.device, &files.public_key())
        .await;
    files
}

/// `iotcore-device` with nothing from the developer's environment that could change it.
pub fn device_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotcore-device"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IOTCORE_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// A running `iotcore-device run`, killed with SIGKILL when dropped.
pub struct Agent {
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl Agent {
    /// `iotcore-device run --config SETTINGS [args]`, stderr to `log`.
    pub fn start(
        settings: &Path,
        args: &[&str],
        env: &HashMap<&str, String>,
        log: PathBuf,
    ) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = device_command()
            .args(["run", "--config", settings.to_str().unwrap()])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Self { child, stdin, log }
    }

    /// Writes `{"n": i}` lines for each i in `numbers`.
    pub fn feed(&mut self, numbers: std::ops::Range<u64>) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        let mut text = String::new();
        for n in numbers {
            text.push_str(&format!("{{\"n\": {n}}}\n"));
        }
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Writes `{"device": DEVICE, "n": i}` lines for each i in `numbers`: readings of a device
    /// behind the gateway.
    pub fn feed_for(&mut self, device: &str, numbers: std::ops::Range<u64>) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        let mut text = String::new();
        for n in numbers {
            text.push_str(&format!("{{\"device\": \"{device}\", \"n\": {n}}}\n"));
        }
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log holds `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        eventually(&format!("{needle:?} in the agent's log"), || {
            self.log_text().contains(needle).then_some(())
        })
        .await;
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd stops it; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
