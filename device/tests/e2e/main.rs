//! The device agent's integration tests, as one test binary: the real `iotcore-device` against
//! a real ingest over HTTPS and MQTT (readings, config, state, restarts, kills, clock skew, token
//! renewal), the agent as a gateway for devices behind it, `doctor` against good and broken
//! setups, and the agent's tokens verified by ingest's own verifier. One binary links
//! ingest once for all of them. A new test module is a file here and a `mod` line below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
mod doctor;
mod gateway;
mod mqtt;
mod tokens_verify_in_ingest;
