//! The Pi's own sensors, read from the kernel: CPU temperature (thermal zone 0), load averages,
//! memory, disk, uptime, and the firmware's throttling flags where the kernel exposes them. All
//! paths are under a root (`/` on a device) so a test can lay out a Pi's files in a temp dir. A
//! sensor this machine lacks (a laptop has no `get_throttled`) is skipped with one log line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::readings::Intake;

/// One sensor: its value, or `None` where this machine lacks it.
type Reader = fn(&Sensors) -> Option<Value>;

/// Reads the sensors found under a root and remembers which ones were missing.
#[derive(Debug)]
pub struct Sensors {
    root: PathBuf,
    disk: PathBuf,
    reported_missing: HashSet<&'static str>,
}

impl Sensors {
    /// Sensors of this machine; `disk` is the file system whose space is reported.
    pub fn new(root: impl Into<PathBuf>, disk: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            disk: disk.into(),
            reported_missing: HashSet::new(),
        }
    }

    /// One reading of every sensor present.
    pub fn read(&mut self) -> Map<String, Value> {
        let mut values = Map::new();
        let readers: [(&'static str, Reader); 6] = [
            ("cpu_temp_c", Self::cpu_temp),
            ("load", Self::load),
            ("memory", Self::memory),
            ("disk", Self::disk),
            ("uptime_s", Self::uptime),
            ("throttled", Self::throttled),
        ];
        for (name, read) in readers {
            match read(self) {
                Some(value) => {
                    values.insert(name.to_owned(), value);
                }
                None => {
                    if self.reported_missing.insert(name) {
                        tracing::info!(sensor = name, "sensor not present here; skipping it");
                    }
                }
            }
        }
        values
    }

    fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path)).ok()
    }

    fn cpu_temp(&self) -> Option<Value> {
        let milli: f64 = self
            .file("sys/class/thermal/thermal_zone0/temp")?
            .trim()
            .parse()
            .ok()?;
        Some(json!((milli / 100.0).round() / 10.0))
    }

    fn load(&self) -> Option<Value> {
        let text = self.file("proc/loadavg")?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
        Some(json!({"1m": fields.next()??, "5m": fields.next()??, "15m": fields.next()??}))
    }

    fn memory(&self) -> Option<Value> {
        let text = self.file("proc/meminfo")?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        Some(json!({"total_kb": field("MemTotal")?, "available_kb": field("MemAvailable")?}))
    }

    fn disk(&self) -> Option<Value> {
        let stat = rustix::fs::statvfs(&self.disk).ok()?;
        let block = stat.f_frsize;
        Some(json!({
            "total_bytes": stat.f_blocks.saturating_mul(block),
            "free_bytes": stat.f_bavail.saturating_mul(block),
        }))
    }

    fn uptime(&self) -> Option<Value> {
        let text = self.file("proc/uptime")?;
        let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
        Some(json!(secs.floor()))
    }

    /// The firmware's `get_throttled` bits, decoded (Raspberry Pi OS kernels expose them here).
    fn throttled(&self) -> Option<Value> {
        let text = self.file("sys/devices/platform/soc/soc:firmware/get_throttled")?;
        let bits = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
        let flag = |bit: u32| bits & (1 << bit) != 0;
        Some(json!({
            "raw": format!("0x{bits:x}"),
            "under_voltage": flag(0),
            "frequency_capped": flag(1),
            "throttled": flag(2),
            "soft_temp_limit": flag(3),
            "under_voltage_since_boot": flag(16),
            "throttled_since_boot": flag(18),
        }))
    }
}

/// Takes a sensor reading every `interval` and spools it.
pub async fn run(intake: Intake, mut sensors: Sensors, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let values = sensors.read();
        if values.is_empty() {
            continue;
        }
        if let Err(err) = intake.accept("sensors", Value::Object(values)).await {
            tracing::error!(error = %err, "cannot spool a sensor reading");
        }
    }
}

/// The real machine's sensors.
pub fn of_this_machine(disk: &Path) -> Sensors {
    Sensors::new("/", disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_pis_kernel_files_become_values() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "sys/class/thermal/thermal_zone0/temp", "48312\n");
        write(r, "proc/loadavg", "0.52 0.58 0.59 1/123 4567\n");
        write(
            r,
            "proc/meminfo",
            "MemTotal:        3884376 kB\nMemFree:  1 kB\nMemAvailable:    3310720 kB\n",
        );
        write(r, "proc/uptime", "12345.67 40000.00\n");
        write(
            r,
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "0x50005\n",
        );
        let values = Sensors::new(r, r).read();
        assert_eq!(values["cpu_temp_c"], json!(48.3));
        assert_eq!(values["load"]["5m"], json!(0.58));
        assert_eq!(values["memory"]["available_kb"], json!(3_310_720));
        assert_eq!(values["uptime_s"], json!(12345.0));
        let throttled = &values["throttled"];
        assert_eq!(throttled["under_voltage"], json!(true));
        assert_eq!(throttled["frequency_capped"], json!(false));
        assert_eq!(throttled["throttled"], json!(true));
        assert_eq!(throttled["under_voltage_since_boot"], json!(true));
        assert!(values["disk"]["total_bytes"].as_u64().unwrap() > 0);
    }

    #[test]
    fn missing_sensors_are_skipped_not_errors() {
        let root = tempfile::tempdir().unwrap();
        let mut sensors = Sensors::new(root.path(), root.path());
        let values = sensors.read();
        assert_eq!(values.keys().collect::<Vec<_>>(), ["disk"]);
        assert_eq!(sensors.reported_missing.len(), 5);
    }
}
