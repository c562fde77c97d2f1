//! Spans and metrics reach an OTLP collector: a minimal gRPC receiver (the collector's trace and
//! metrics services) listens on a loopback port, telemetry is pointed at it with a short metric
//! interval, and what arrives is checked by name. `telemetry::init` installs process-wide globals,
//! which the other tests of this binary must not see (nor this test theirs), so the test runs
//! itself again as a child process of the test binary, filtered to this one test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::telemetry::{self, LogFormat, Metrics, TelemetrySettings};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Everything the receiver was sent.
#[derive(Clone, Default)]
struct Receiver {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves both services on a loopback port and returns its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(server);
        format!("http://{addr}")
    }

    fn span_names(&self) -> Vec<String> {
        let traces = self.traces.lock().unwrap();
        let spans = traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        spans.map(|span| span.name.clone()).collect()
    }

    fn metric(&self, name: &str) -> Option<Metric> {
        let requests = self.metrics.lock().unwrap();
        let mut metrics = requests
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        metrics.find(|metric| metric.name == name).cloned()
    }

    /// `service.name` of the first resource that sent spans.
    fn service_name(&self) -> Option<String> {
        let traces = self.traces.lock().unwrap();
        let resource = traces.first()?.resource_spans.first()?.resource.as_ref()?;
        string_attribute(&resource.attributes, "service.name")
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        } => Some(s.clone()),
        _ => None,
    }
}

fn sum_points(metric: &Metric) -> &[NumberDataPoint] {
    match &metric.data {
        Some(Data::Sum(sum)) => &sum.data_points,
        other => panic!("{} is not a sum: {other:?}", metric.name),
    }
}

/// Set in the child process that runs the test body.
const CHILD: &str = "OTLP_EXPORT_TEST_CHILD";

#[test]
fn traces_and_metrics_reach_an_otlp_receiver() {
    if std::env::var_os(CHILD).is_some() {
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(export_and_check());
    }
    let name = "otlp_export::traces_and_metrics_reach_an_otlp_receiver";
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn export_and_check() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let guard = telemetry::init(TelemetrySettings {
        otlp_endpoint: Some(endpoint),
        metric_interval: Some(Duration::from_millis(300)),
        ..TelemetrySettings::new(LogFormat::Text)
    })
    .unwrap();
    let metrics = Metrics::new();
    {
        let span = tracing::info_span!("publish_event", device = "boiler-7");
        let _entered = span.enter();
        metrics.accepted("event", "http");
        metrics.refused("expired", "http");
        metrics.publish_latency(0.012, "ok");
    }

    // The periodic reader exports on its own, well before shutdown.
    tokio::time::timeout(Duration::from_secs(10), async {
        while receiver.metric("ingest.pubsub.publish.duration").is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no periodic metric export within 10 s");
    // Shutdown flushes the batched span.
    tokio::time::timeout(Duration::from_secs(15), guard.shutdown())
        .await
        .expect("telemetry shutdown is bounded");

    assert!(
        receiver.span_names().iter().any(|n| n == "publish_event"),
        "spans received: {:?}",
        receiver.span_names()
    );
    assert_eq!(receiver.service_name().as_deref(), Some("ingest"));
    let accepted = receiver.metric("ingest.messages.accepted").unwrap();
    let point = &sum_points(&accepted)[0];
    assert_eq!(
        string_attribute(&point.attributes, "kind").as_deref(),
        Some("event")
    );
    let refused = receiver.metric("ingest.requests.refused").unwrap();
    let point = &sum_points(&refused)[0];
    assert_eq!(
        string_attribute(&point.attributes, "reason").as_deref(),
        Some("expired")
    );
    let latency = receiver.metric("ingest.pubsub.publish.duration").unwrap();
    assert!(matches!(latency.data, Some(Data::Histogram(_))));
    assert_eq!(latency.unit, "s");
}
