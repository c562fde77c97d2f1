//! Logs, traces and metrics. Logs go to stderr as human-readable text or as JSON lines in Cloud
//! Logging's structured layout, filtered by `RUST_LOG` (default `info`). When an OTLP endpoint is
//! configured, spans and metrics are also exported over OTLP/gRPC; otherwise the global meter
//! stays a no-op and nothing leaves the process. Tokens, keys and payloads are never passed to a
//! log macro anywhere in the crate.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

mod metrics;

pub use metrics::Metrics;

/// How long one export (and the flush at shutdown) may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `init` needs; `config` fills it from flags and the environment.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Text for people, JSON for Cloud Logging.
    pub log_format: LogFormat,
    /// The Google Cloud project (`GOOGLE_CLOUD_PROJECT`): trace ids in JSON logs are written as
    /// `projects/{project}/traces/{id}` so Cloud Logging links them to Cloud Trace.
    pub project_id: Option<String>,
    /// Where to send spans and metrics over OTLP/gRPC (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g.
    /// `http://localhost:4317`). `None` or empty exports nothing.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are exported. `None` leaves it to the SDK: `OTEL_METRIC_EXPORT_INTERVAL`
    /// (milliseconds) when set, else 60 s.
    pub metric_interval: Option<Duration>,
}

impl TelemetrySettings {
    /// Logs only, in `log_format`, with no project and no export.
    pub fn new(log_format: LogFormat) -> Self {
        Self {
            log_format,
            project_id: None,
            otlp_endpoint: None,
            metric_interval: None,
        }
    }
}

impl From<LogFormat> for TelemetrySettings {
    fn from(log_format: LogFormat) -> Self {
        Self::new(log_format)
    }
}

/// Keeps the exporters alive. `shutdown().await` flushes them (bounded); dropping the guard does
/// the same, blocking the thread.
#[derive(Debug, Default)]
#[must_use = "dropping the guard shuts the exporters down"]
pub struct TelemetryGuard {
    providers: Option<Providers>,
}

#[derive(Debug)]
struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

/// The target of the spans made once per device message (`#[tracing::instrument(target =
/// "ingest::per_message")]`): exported as traces when OpenTelemetry is on, never logged.
pub const PER_MESSAGE: &str = "ingest::per_message";

/// Installs the global subscriber and, with an OTLP endpoint, the global tracer and meter
/// providers. Call it inside the Tokio runtime, before building [`Metrics`]. A second call (as in
/// tests) keeps the first subscriber.
pub fn init(settings: impl Into<TelemetrySettings>) -> anyhow::Result<TelemetryGuard> {
    let settings = settings.into();
    // An empty variable means unset, as the OpenTelemetry specification reads it.
    let endpoint = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty());
    let providers = endpoint.map(|endpoint| otlp_providers(endpoint, settings.metric_interval));
    let providers = providers.transpose()?;
    let tracer = providers.as_ref().map(|p| p.tracer.tracer("ingest"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = subscriber(&settings, filter, tracer, std::io::stderr).try_init();
    Ok(TelemetryGuard { providers })
}

/// `RUST_LOG`'s filter, the OpenTelemetry layer when there is a tracer, and the log output.
/// Without a tracer the per-message spans are switched off in `RUST_LOG`'s filter itself: the log
/// output's own filter turns them down, but a global filter that enables them still has them
/// created and entered, a tenth of the MQTT bridge's CPU (BENCHMARKS.md).
fn subscriber<W>(
    settings: &TelemetrySettings,
    filter: EnvFilter,
    tracer: Option<SdkTracer>,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match tracer {
        Some(tracer) => Box::new(
            tracing_subscriber::registry()
                .with(filter)
                .with(otel_layer(tracer))
                .with(log_layer(settings, writer)),
        ),
        None => {
            let off = format!("{PER_MESSAGE}=off")
                .parse()
                .expect("a valid directive");
            Box::new(
                tracing_subscriber::registry()
                    .with(filter.add_directive(off))
                    .with(log_layer(settings, writer)),
            )
        }
    }
}

impl TelemetryGuard {
    /// Flushes pending spans and metrics and stops the exporters, giving up after a few seconds
    /// so a missing collector cannot hold up the process's exit.
    pub async fn shutdown(mut self) {
        let Some(providers) = self.providers.take() else {
            return;
        };
        // The flush blocks its thread while the gRPC client runs on the runtime, so it must not
        // occupy a runtime thread (a current-thread runtime would stall until the timeout).
        let flush = tokio::task::spawn_blocking(move || providers.shutdown());
        if tokio::time::timeout(2 * EXPORT_TIMEOUT + Duration::from_secs(1), flush)
            .await
            .is_err()
        {
            tracing::warn!("telemetry shutdown timed out; some spans or metrics may be lost");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(providers) = self.providers.take() {
            providers.shutdown();
        }
    }
}

impl Providers {
    /// Blocking; each provider bounds its own flush.
    fn shutdown(self) {
        if let Err(err) = self.tracer.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(%err, "flushing spans failed");
        }
        if let Err(err) = self.meter.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(%err, "flushing metrics failed");
        }
    }
}

/// Builds the OTLP tracer and meter providers and makes them global.
fn otlp_providers(endpoint: &str, metric_interval: Option<Duration>) -> anyhow::Result<Providers> {
    let resource = resource();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    // The batch processor exports from its own thread; the gRPC channel it feeds runs on the
    // Tokio runtime current at this call.
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let mut reader = PeriodicReader::builder(metrics);
    if let Some(interval) = metric_interval {
        reader = reader.with_interval(interval);
    }
    let meter = SdkMeterProvider::builder()
        .with_reader(reader.build())
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Providers { tracer, meter })
}

/// `service.name=ingest`, unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` (read by the
/// SDK's own detectors) name the service otherwise.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_attribute(KeyValue::new("service.name", "ingest"))
            .build()
    }
}

/// Turns tracing spans into OpenTelemetry spans. The exporter's own transport is left out: its
/// spans would be exported in turn, without end.
fn otel_layer<S>(tracer: SdkTracer) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + Send + Sync + for<'a> LookupSpan<'a>,
{
    let transport = filter::Targets::new()
        .with_default(Level::TRACE)
        .with_targets(
            ["h2", "hyper", "tonic", "tower", "opentelemetry"]
                .map(|t| (t, filter::LevelFilter::OFF)),
        );
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(transport)
}

/// The log output: text, or Cloud Logging JSON.
fn log_layer<S, W>(settings: &TelemetrySettings, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    // Spans made for every message are for traces only: formatting their fields for the log
    // on each message cost a third of the MQTT bridge's throughput (BENCHMARKS.md). Without an
    // OpenTelemetry layer nothing else wants them, so they are not even created.
    let not_per_message = filter::Targets::new()
        .with_default(Level::TRACE)
        .with_target(PER_MESSAGE, filter::LevelFilter::OFF);
    match settings.log_format {
        LogFormat::Text => layer.with_filter(not_per_message).boxed(),
        LogFormat::Json => layer
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging {
                project_id: settings.project_id.clone(),
            })
            .with_filter(not_per_message)
            .boxed(),
    }
}

/// Formats an event as one line of Cloud Logging's structured JSON: `severity`, `message`,
/// `time`, the source location, the fields of the enclosing spans and of the event, and the
/// trace and span ids when an OpenTelemetry span is active.
#[derive(Debug)]
struct CloudLogging {
    project_id: Option<String>,
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut entry = span_fields(ctx);
        event.record(&mut JsonVisitor(&mut entry));
        let meta = event.metadata();
        entry.insert("severity".into(), severity(*meta.level()).into());
        entry.insert("time".into(), jiff::Timestamp::now().to_string().into());
        entry.insert("target".into(), meta.target().into());
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            let location = serde_json::json!({ "file": file, "line": line.to_string() });
            entry.insert("logging.googleapis.com/sourceLocation".into(), location);
        }
        self.insert_trace(&mut entry);
        let line = serde_json::to_string(&entry).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

impl CloudLogging {
    /// The active OpenTelemetry span (the tracing layer activates it when its span is entered).
    fn insert_trace(&self, entry: &mut Map<String, Value>) {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let span = span.span_context();
        if !span.is_valid() {
            return;
        }
        let trace = match &self.project_id {
            Some(project) => format!("projects/{project}/traces/{}", span.trace_id()),
            None => span.trace_id().to_string(),
        };
        entry.insert("logging.googleapis.com/trace".into(), trace.into());
        entry.insert(
            "logging.googleapis.com/spanId".into(),
            span.span_id().to_string().into(),
        );
        entry.insert(
            "logging.googleapis.com/trace_sampled".into(),
            span.is_sampled().into(),
        );
    }
}

/// The fields of the spans around the event, outermost first so inner ones win. They were
/// recorded as JSON by `JsonFields`.
fn span_fields<S, N>(ctx: &FmtContext<'_, S, N>) -> Map<String, Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut fields = Map::new();
    for span in ctx
        .event_scope()
        .into_iter()
        .flat_map(|scope| scope.from_root())
    {
        let extensions = span.extensions();
        let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
            continue;
        };
        if let Ok(Value::Object(map)) = serde_json::from_str(recorded) {
            fields.extend(map);
        }
    }
    fields
}

/// Cloud Logging's severity names.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Records an event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Self;

        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn json_settings(project: Option<&str>) -> TelemetrySettings {
        TelemetrySettings {
            project_id: project.map(str::to_owned),
            ..TelemetrySettings::new(LogFormat::Json)
        }
    }

    #[test]
    fn json_lines_follow_cloud_logging_layout() {
        let buffer = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(log_layer(&json_settings(None), buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", device = "boiler-7");
            let _entered = span.enter();
            tracing::warn!(attempt = 3, "publish retried");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "publish retried");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["device"], "boiler-7");
        assert!(
            line["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        let location = &line["logging.googleapis.com/sourceLocation"];
        assert!(location["file"].as_str().unwrap().ends_with("mod.rs"));
        // No OpenTelemetry layer, no trace to name.
        assert!(line.get("logging.googleapis.com/trace").is_none(), "{line}");
    }

    #[test]
    fn per_message_spans_exist_only_for_an_opentelemetry_layer() {
        // The subscriber `init` installs, with `RUST_LOG=info`.
        let installed = |tracer| {
            let settings = TelemetrySettings::new(LogFormat::Text);
            subscriber(&settings, EnvFilter::new("info"), tracer, Buffer::default())
        };
        let per_message = || tracing::info_span!(target: "ingest::per_message", "publish_event");
        tracing::subscriber::with_default(installed(None), || {
            assert!(per_message().is_disabled());
            assert!(!tracing::info_span!("request").is_disabled());
        });
        let provider = SdkTracerProvider::builder().build();
        tracing::subscriber::with_default(installed(Some(provider.tracer("test"))), || {
            assert!(!per_message().is_disabled());
        });
    }

    #[test]
    fn json_lines_carry_the_active_trace() {
        let buffer = Buffer::default();
        // No exporter: spans are sampled and get ids, and go nowhere.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(otel_layer(provider.tracer("test")))
            .with(log_layer(
                &json_settings(Some("demo-project")),
                buffer.clone(),
            ));
        let mut ids = None;
        tracing::subscriber::with_default(subscriber, || {
            {
                let span = tracing::info_span!("request");
                let _entered = span.enter();
                let cx = opentelemetry::Context::current();
                let context = cx.span().span_context().clone();
                ids = Some((
                    context.trace_id().to_string(),
                    context.span_id().to_string(),
                ));
                tracing::info!("accepted");
            }
            tracing::error!("outside any span");
        });
        let (trace_id, span_id) = ids.unwrap();
        let lines = buffer.lines();
        let line = &lines[0];
        assert_eq!(line["severity"], "INFO");
        assert_eq!(line["message"], "accepted");
        assert_eq!(
            line["logging.googleapis.com/trace"],
            format!("projects/demo-project/traces/{trace_id}")
        );
        assert_eq!(line["logging.googleapis.com/spanId"], span_id);
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true);
        assert_eq!(trace_id.len(), 32);
        assert_eq!(lines[1]["severity"], "ERROR");
        assert!(lines[1].get("logging.googleapis.com/trace").is_none());
    }

    #[test]
    fn severities_use_cloud_logging_names() {
        assert_eq!(severity(Level::TRACE), "DEBUG");
        assert_eq!(severity(Level::DEBUG), "DEBUG");
        assert_eq!(severity(Level::INFO), "INFO");
        assert_eq!(severity(Level::WARN), "WARNING");
        assert_eq!(severity(Level::ERROR), "ERROR");
    }
}

/// Formats an error with its sources, `outer: inner: innermost`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
