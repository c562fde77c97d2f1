//! The service's OpenTelemetry instruments: events accepted, requests refused by reason, Pub/Sub
//! publish latency, open connections. They come from the global meter provider, so they export
//! over OTLP when `telemetry::init` installed one and cost next to nothing when it did not.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

/// Cheap-to-clone handles to the instruments. Build it after `telemetry::init`.
#[derive(Debug, Clone)]
pub struct Metrics {
    accepted: Counter<u64>,
    refused: Counter<u64>,
    publish_latency: Histogram<f64>,
    connections: UpDownCounter<i64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the instruments on the global meter provider.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("ingest");
        Self {
            accepted: meter
                .u64_counter("ingest.messages.accepted")
                .with_description(
                    "Device messages accepted, by kind (event, state, config) and protocol",
                )
                .build(),
            refused: meter
                .u64_counter("ingest.requests.refused")
                .with_description("Device requests refused, by reason and protocol")
                .build(),
            publish_latency: meter
                .f64_histogram("ingest.pubsub.publish.duration")
                .with_unit("s")
                .with_description("Time from handing a message to the sink until it was accepted")
                .build(),
            connections: meter
                .i64_up_down_counter("ingest.connections.open")
                .with_description("Open device connections")
                .build(),
        }
    }

    /// A message of `kind` (`event`, `state`, `config`) was accepted over `protocol` (`http`,
    /// `mqtt`).
    pub fn accepted(&self, kind: &'static str, protocol: &'static str) {
        self.accepted.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("protocol", protocol),
            ],
        );
    }

    /// A device request was refused for `reason` (a stable code such as `expired`) over
    /// `protocol`.
    pub fn refused(&self, reason: &'static str, protocol: &'static str) {
        self.refused.add(
            1,
            &[
                KeyValue::new("reason", reason),
                KeyValue::new("protocol", protocol),
            ],
        );
    }

    /// A publish took `seconds` and ended in `outcome` (`ok`, `unavailable`, `rejected`).
    pub fn publish_latency(&self, seconds: f64, outcome: &'static str) {
        self.publish_latency
            .record(seconds, &[KeyValue::new("outcome", outcome)]);
    }

    /// A device connection opened.
    pub fn connection_opened(&self) {
        self.connections.add(1, &[]);
    }

    /// A device connection closed.
    pub fn connection_closed(&self) {
        self.connections.add(-1, &[]);
    }
}
