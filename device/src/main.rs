//! The Raspberry Pi device agent. This is a placeholder that builds, so the workspace has its final
//! shape; keys, signed telemetry, the spool, config sync and the doctor arrive with the device issue.

fn main() {
    eprintln!("iotcore-device: not implemented yet; see the project README for the roadmap");
    std::process::exit(2);
}
