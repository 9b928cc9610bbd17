//! Subscribers and exporters for this process: log lines on stderr (JSON or
//! text), OpenTelemetry traces over OTLP/HTTP, and the Prometheus recorder.
//!
//! Configured by the `[log]` and `[traces]` tables of the configuration file
//! and by the environment: `TROUPE_ENV` (development, staging, production)
//! chooses the level (debug, info, warn) unless `RUST_LOG` says otherwise;
//! `TROUPE_LOG_FORMAT` (auto, json, text); `OTEL_EXPORTER_OTLP_ENDPOINT`
//! turns traces on; `OTEL_SERVICE_NAME` names the service.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, FilterFn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

/// Where the program runs; sets the default log level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Environment {
    /// Debug level for Troupe, info for its libraries.
    Development,
    /// Info level.
    Staging,
    /// Warnings and errors only.
    #[default]
    Production,
}

impl Environment {
    fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            other => anyhow::bail!(
                "invalid environment {other:?}: use development, staging or production"
            ),
        }
    }

    /// The filter directives of the environment.
    fn directives(self) -> &'static str {
        match self {
            Self::Development => "info,troupe=debug",
            Self::Staging => "info",
            Self::Production => "warn",
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Readable text.
    Text,
}

impl LogFormat {
    fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => anyhow::bail!("invalid log format {other:?}: use auto, json or text"),
        }
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogSettings {
    /// development, staging or production.
    environment: Option<Environment>,
    /// auto, json or text.
    format: Option<LogFormat>,
    /// Filter directives (`info,troupe=debug`), instead of the environment's.
    level: Option<String>,
}

/// The `[traces]` table; traces are off unless an endpoint is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TraceSettings {
    /// The OTLP/HTTP endpoint, such as `http://127.0.0.1:4318`.
    otlp_endpoint: Option<String>,
    /// The share of new traces kept, from 0 to 1 (1 by default).
    sample_ratio: Option<f64>,
    /// The service name on every span (`troupe` by default).
    service_name: Option<String>,
}

/// What this process logs and exports, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TelemetryConfig {
    /// The log filter directives.
    pub(crate) filter: String,
    /// JSON lines (else text).
    pub(crate) json: bool,
    /// Where traces go: the full OTLP/HTTP URL of `/v1/traces`.
    pub(crate) traces_url: Option<String>,
    /// The share of traces kept.
    pub(crate) sample_ratio: f64,
    /// The service name.
    pub(crate) service_name: String,
}

impl TelemetryConfig {
    /// The `[log]` and `[traces]` tables, then the conventional variables
    /// read through `var`, which override them: `TROUPE_ENV`,
    /// `TROUPE_LOG_FORMAT`, `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_SERVICE_NAME`.
    pub(crate) fn resolve(
        log: &LogSettings,
        traces: &TraceSettings,
        var: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let environment = match var("TROUPE_ENV") {
            Some(v) => Environment::parse(&v)?,
            None => log.environment.unwrap_or_default(),
        };
        let format = match var("TROUPE_LOG_FORMAT") {
            Some(v) => LogFormat::parse(&v)?,
            None => log.format.unwrap_or_default(),
        };
        let filter = var("RUST_LOG")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| log.level.clone())
            .unwrap_or_else(|| environment.directives().to_owned());
        EnvFilter::try_new(&filter).with_context(|| format!("invalid log filter {filter:?}"))?;
        let json = match format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        };
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| traces.otlp_endpoint.clone());
        let traces_url = endpoint.map(|e| traces_url(&e)).transpose()?;
        let sample_ratio = traces.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_ratio) {
            anyhow::bail!(
                "invalid configuration: traces.sample_ratio is {sample_ratio}; it must be between 0 and 1"
            );
        }
        let service_name = var("OTEL_SERVICE_NAME")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| traces.service_name.clone())
            .unwrap_or_else(|| "troupe".to_owned());
        Ok(Self {
            filter,
            json,
            traces_url,
            sample_ratio,
            service_name,
        })
    }
}

/// The traces URL of an OTLP/HTTP endpoint: `/v1/traces` is added to a base URL.
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!(
            "invalid OTLP endpoint {endpoint:?}: use http(s)://HOST:PORT (OTLP over HTTP, port 4318 usually)"
        );
    }
    if endpoint.ends_with("/v1/traces") {
        Ok(endpoint.to_owned())
    } else {
        Ok(format!("{endpoint}/v1/traces"))
    }
}

/// Keeps the exporters alive; [`shutdown`](Self::shutdown) flushes them.
#[must_use = "dropping the guard without shutdown loses the last spans"]
pub(crate) struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered; call outside the async runtime.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.tracer
            && let Err(e) = provider.shutdown()
        {
            eprintln!("troupe: could not flush the traces: {e}");
        }
    }
}

/// The spans every log line is given as context.
fn context_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("troupe") && *meta.level() <= tracing::Level::INFO
}

/// Spans the trace exporter keeps: Troupe's own (not the long-lived
/// `worker` and `orchestrator` spans, which would be one span per process),
/// and events at info and above as span events.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target().starts_with("troupe")
            && !matches!(meta.name(), "worker" | "orchestrator")
            && *meta.level() <= tracing::Level::DEBUG
    } else {
        *meta.level() <= tracing::Level::INFO
    }
}

/// Installs the subscribers (and the trace exporter when configured). Call
/// before the async runtime starts: the exporter has its own thread.
pub(crate) fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    // Troupe's info spans (task, subtask attempts, HTTP requests) stay on
    // whatever the level, so that a warning still names its task. (LLM-call
    // and bus spans are at debug: they cost more and add nothing to a line.)
    let filter = EnvFilter::try_new(&config.filter)
        .with_context(|| format!("invalid log filter {:?}", config.filter))?
        .or(FilterFn::new(context_span));
    let logs = if config.json {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        // The `otel.*` fields name spans for the trace backend; they are noise here.
        let fields = fmt::format::debug_fn(|w, field, value| match field.name() {
            name if name.starts_with("otel.") => Ok(()),
            "message" => write!(w, "{value:?}"),
            name => write!(w, "{name}={value:?}"),
        })
        .delimited(" ");
        fmt::layer()
            .fmt_fields(fields)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed()
    };
    let tracer = match &config.traces_url {
        Some(url) => Some(tracer_provider(config, url)?),
        None => None,
    };
    let traces = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("troupe"))
            .with_filter(FilterFn::new(exported))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry { tracer })
}

fn tracer_provider(config: &TelemetryConfig, url: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> anyhow::Result<TelemetryConfig> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let f = tempfile::NamedTempFile::new()?;
        if let Some(text) = file {
            std::fs::write(f.path(), text)?;
        }
        let settings = crate::settings::Settings::load(
            file.map(|_| f.path()),
            &[],
            &crate::cli::BackendArgs::default(),
        )?;
        TelemetryConfig::resolve(&settings.log, &settings.traces, |k| env.get(k).cloned())
    }

    #[test]
    fn the_environment_sets_the_level_and_rust_log_overrides_it() {
        assert_eq!(load(None, &[]).unwrap().filter, "warn");
        let c = load(None, &[("TROUPE_ENV", "development")]).unwrap();
        assert_eq!(c.filter, "info,troupe=debug");
        let c = load(Some("[log]\nenvironment = \"staging\"\n"), &[]).unwrap();
        assert_eq!(c.filter, "info");
        let c = load(
            Some("[log]\nenvironment = \"staging\"\n"),
            &[("RUST_LOG", "troupe=trace")],
        )
        .unwrap();
        assert_eq!(c.filter, "troupe=trace");
        let c = load(Some("[log]\nlevel = \"error\"\n"), &[]).unwrap();
        assert_eq!(c.filter, "error");
    }

    #[test]
    fn formats_and_endpoints() {
        let c = load(Some("[log]\nformat = \"json\"\n"), &[]).unwrap();
        assert!(c.json);
        let c = load(None, &[("TROUPE_LOG_FORMAT", "text")]).unwrap();
        assert!(!c.json);
        assert_eq!(c.traces_url, None, "traces are off by default");
        let c = load(
            Some("[traces]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.traces_url.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert!((c.sample_ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(c.service_name, "troupe");
        let c = load(
            None,
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://otel.example:4318/v1/traces",
                ),
                ("OTEL_SERVICE_NAME", "troupe-eu"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.traces_url.as_deref(),
            Some("https://otel.example:4318/v1/traces")
        );
        assert_eq!(c.service_name, "troupe-eu");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (file, env, needle) in [
            (None, vec![("TROUPE_ENV", "prodution")], "prodution"),
            (None, vec![("TROUPE_LOG_FORMAT", "xml")], "xml"),
            (Some("[log]\nformat = \"xml\"\n"), vec![], "format"),
            (Some("[log]\nlevl = \"info\"\n"), vec![], "levl"),
            (
                Some("[traces]\nsample_ratio = 2.0\n"),
                vec![],
                "sample_ratio",
            ),
            (
                Some("[traces]\notlp_endpoint = \"127.0.0.1:4317\"\n"),
                vec![],
                "OTLP endpoint",
            ),
            (None, vec![("RUST_LOG", "troupe=loud")], "log filter"),
        ] {
            let err = format!("{:#}", load(file, &env).unwrap_err());
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
