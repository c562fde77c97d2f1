//! ingest's integration tests, as one test binary: each module is a concern (the admin API, the
//! HTTP device bridge, the stores, Pub/Sub, the real `ingest serve` process…), and linking the
//! whole service once instead of once per file is most of what a clean CI run saves. A new test
//! module is a file here and a `mod` line below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin_api;
mod cli_roundtrip;
mod console_browser;
mod device_http;
mod device_pubsub;
mod fleet_delivery;
mod gateway_http;
mod hostile;
mod iam_policies;
mod infra_settings;
mod mqtt_bridge;
mod mqtt_commands;
mod mqtt_gateways;
mod otlp_export;
mod python_admin_client;
mod python_client;
mod python_mqtt_client;
mod python_mqtt_gateway;
mod queued_commands;
mod registry_cost;
mod registry_freshness;
mod registry_suite;
mod serve_lifecycle;
mod serve_process;
mod sink_pubsub;
mod vectors;
