//! The Raspberry Pi agent of the self-hosted IoT Core. It holds the device's own key pair
//! (`keys`), signs the short-lived JWTs the service checks (`token`), and speaks IoT Core's HTTP
//! device protocol (`http`); `cli` is the `iotcore-device` command line over them. The spool,
//! MQTT, config sync and the doctor arrive in later stages.

pub mod cli;
pub mod http;
pub mod keys;
pub mod token;

#[cfg(test)]
mod test_vectors;
