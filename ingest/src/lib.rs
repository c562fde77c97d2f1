//! ingest: the service that replaces Google Cloud IoT Core. It keeps the device registry, checks
//! device tokens against it, serves the admin API that operators and their IoT Core tooling use,
//! and bridges device HTTP and MQTT traffic to Pub/Sub. `main.rs` only parses
//! the command line; everything testable lives here.

pub mod auth;
pub mod bridge;
pub mod c2d;
pub mod cli;
pub mod config;
pub mod http;
pub mod iam;
pub mod mqtt;
pub mod per_address;
pub mod proxy_protocol;
pub mod registry;
pub mod server;
pub mod sink;
pub mod telemetry;
