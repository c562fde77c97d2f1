//! The Raspberry Pi agent of the self-hosted IoT Core. It holds the device's own key pair
//! (`keys`), signs the short-lived JWTs the service checks (`token`), and speaks IoT Core's HTTP
//! device protocols (`http` and `mqtt`, behind `transport`). The long-running agent (`agent`) takes
//! readings (`readings`, `sensors`), keeps them in a crash-safe queue (`spool`) until the
//! `sender` has them accepted, keeps the device's config in sync and reports its state
//! (`configsync`), and hands commands queued for it to a hook (`commands`); `doctor` diagnoses
//! a setup that cannot connect. `cli` is the `iotcore-device` command line over them,
//! `settings` its TOML file.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod configsync;
pub mod doctor;
pub mod http;
pub mod keys;
pub mod mqtt;
pub mod readings;
pub mod sender;
pub mod sensors;
pub mod settings;
pub mod spool;
pub mod tls;
pub mod token;
pub mod transport;
