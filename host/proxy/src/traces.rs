//! Traces that keep synthetic traffic apart: a span per routed request,
//! exported over OTLP/HTTP to the endpoint of its traffic class (production
//! and synthetic spans never share one), and the caller's trace continued
//! to the chosen version with the class marked in the propagated context.
//!
//! * Incoming: W3C `traceparent`/`tracestate`, else AWS `X-Amzn-Trace-Id`.
//! * The span: `route <function>`, a server span whose parent is the
//!   caller's; attributes `switchyard.function`, `.target`, `.traffic`,
//!   `.reason`, `.policy`, `.route_version`, and the HTTP method, path and
//!   status. Exported in batches by the SDK's own thread, off the request
//!   path; a class without an endpoint records nothing.
//! * Outgoing (replacing what the caller sent under these names):
//!   `traceparent` (the caller's trace, with this span as the parent when
//!   it is recorded), `tracestate` with a `switchyard=<class>` entry,
//!   `x-amzn-trace-id` to match (Lambda's and Step Functions' trace
//!   header), and W3C `baggage` with `switchyard.traffic=<class>`: what a
//!   function's own OpenTelemetry SDK and a collector route or drop by.
//!   A caller cannot forge either entry: both are replaced.
//!
//! A mirror copy (synthetic, to another version) is a trace of its own,
//! never a part of the production request's: a `mirror <function>`
//! producer span in the synthetic pipeline, linked to the request's span
//! (not its child), which the candidate's spans continue. Without a
//! synthetic exporter the copy still gets a trace id of its own.
//!
//! A request whose class has an exporter gets a span even when it came
//! with no trace context (a root span, as any OpenTelemetry server does),
//! and the target continues that trace. A request that carries neither
//! trace context nor baggage, and whose class has no exporter, costs
//! nothing here (its class still travels in `x-switchyard-traffic`).

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_aws::trace::XrayPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use switchyard_core::Traffic;

/// Where spans go.
#[derive(Debug, Clone, Default)]
pub struct TraceConfig {
    /// OTLP/HTTP endpoint for production spans (a collector's base URL,
    /// e.g. `http://127.0.0.1:4318`, or the full `/v1/traces` URL).
    pub endpoint: Option<String>,
    /// Whether, without `endpoint`, the standard `OTEL_EXPORTER_OTLP_*`
    /// variables name one for production spans.
    pub from_env: bool,
    /// OTLP/HTTP endpoint for synthetic spans; without one they are
    /// dropped (never sent to the production endpoint).
    pub synthetic_endpoint: Option<String>,
}

/// The span exporters, one per traffic class that has an endpoint.
#[derive(Debug)]
pub struct Traces {
    production: Option<Exporter>,
    synthetic: Option<Exporter>,
}

#[derive(Debug)]
struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// The full OTLP/HTTP traces URL for a collector's base URL.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

impl Exporter {
    fn new(endpoint: Option<&str>, class: &str) -> Result<Self, String> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(e) = endpoint {
            use opentelemetry_otlp::WithExportConfig as _;
            builder = builder.with_endpoint(traces_url(e));
        }
        let exporter = builder
            .build()
            .map_err(|e| format!("the OTLP exporter for {class} spans: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("switchyard")
                    .with_attribute(KeyValue::new("switchyard.traffic", class.to_owned()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("switchyard");
        Ok(Exporter { provider, tracer })
    }
}

impl Traces {
    /// The exporters `config` asks for; `None` when it asks for none.
    pub fn new(config: &TraceConfig) -> Result<Option<Arc<Self>>, String> {
        let env = config.from_env
            && [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        let production = match &config.endpoint {
            Some(e) => Some(Exporter::new(Some(e), "production")?),
            None if env => Some(Exporter::new(None, "production")?),
            None => None,
        };
        let synthetic = config
            .synthetic_endpoint
            .as_deref()
            .map(|e| Exporter::new(Some(e), "synthetic"))
            .transpose()?;
        if production.is_none() && synthetic.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Traces {
            production,
            synthetic,
        })))
    }

    fn exporter(&self, traffic: Traffic) -> Option<&Exporter> {
        match traffic {
            Traffic::Production => self.production.as_ref(),
            Traffic::Synthetic => self.synthetic.as_ref(),
        }
    }

    /// Sends what is buffered and stops the exporters (at shutdown).
    pub fn shutdown(&self) {
        for e in [&self.production, &self.synthetic].into_iter().flatten() {
            if let Err(e) = e.provider.shutdown() {
                tracing::warn!(target: "switchyard::trace", error = %e, "spans not flushed at shutdown");
            }
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[derive(Default)]
struct Injected(Vec<(HeaderName, HeaderValue)>);

impl Injector for Injected {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.retain(|(k, _)| *k != n);
            self.0.push((n, v));
        }
    }
}

/// The caller's trace context: W3C first, else X-Ray.
fn parent(headers: &HeaderMap) -> Context {
    let w3c = TraceContextPropagator::new().extract(&Headers(headers));
    if w3c.span().span_context().is_valid() {
        return w3c;
    }
    XrayPropagator::new().extract(&Headers(headers))
}

/// One routed request's trace: its span (when its class is exported) and
/// the context the target continues.
pub(crate) struct Routed {
    span: Option<opentelemetry_sdk::trace::Span>,
    /// The span the target's spans are children of: this one, or the
    /// caller's when this one is not recorded.
    context: Option<SpanContext>,
}

impl Routed {
    /// Nothing to record or continue.
    pub(crate) const NONE: Routed = Routed {
        span: None,
        context: None,
    };

    /// Starts the trace of a request the policy sent as `traffic`.
    pub(crate) fn begin(
        traces: Option<&Traces>,
        headers: &HeaderMap,
        traffic: Traffic,
        function: &str,
    ) -> Routed {
        let exporter = traces.and_then(|t| t.exporter(traffic));
        let traced = headers.contains_key("traceparent") || headers.contains_key("x-amzn-trace-id");
        if exporter.is_none() && !traced {
            return Routed::NONE;
        }
        let parent = parent(headers);
        match exporter {
            Some(e) => {
                let span = e
                    .tracer
                    .span_builder(format!("route {function}"))
                    .with_kind(SpanKind::Server)
                    .with_start_time(SystemTime::now())
                    .start_with_context(&e.tracer, &parent);
                let context = Some(span.span_context().clone()).filter(SpanContext::is_valid);
                Routed {
                    span: Some(span),
                    context,
                }
            }
            None => Routed {
                span: None,
                context: Some(parent.span().span_context().clone()).filter(SpanContext::is_valid),
            },
        }
    }

    /// The trace of a mirror copy of this request to `target`: a trace of
    /// its own (see the module docs), or nothing when this request is in
    /// no trace and synthetic spans are not exported. The copy's span, when
    /// recorded, ends here: it stands for the copy handed off, and the
    /// candidate's spans are its children.
    pub(crate) fn mirror(&self, traces: Option<&Traces>, function: &str, target: &str) -> Routed {
        use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
        let exporter = traces.and_then(|t| t.exporter(Traffic::Synthetic));
        match (exporter, &self.context) {
            (None, None) => Routed::NONE,
            (Some(e), linked) => {
                let mut span = e
                    .tracer
                    .span_builder(format!("mirror {function}"))
                    .with_kind(SpanKind::Producer)
                    .with_links(
                        linked
                            .iter()
                            .map(|sc| opentelemetry::trace::Link::with_context(sc.clone()))
                            .collect(),
                    )
                    .with_attributes([
                        KeyValue::new("switchyard.function", function.to_owned()),
                        KeyValue::new("switchyard.target", target.to_owned()),
                        KeyValue::new("switchyard.traffic", Traffic::Synthetic.as_str()),
                    ])
                    .start_with_context(&e.tracer, &Context::new());
                let context = Some(span.span_context().clone()).filter(SpanContext::is_valid);
                span.end();
                Routed {
                    span: None,
                    context,
                }
            }
            (None, Some(sc)) => {
                let ids = RandomIdGenerator::default();
                Routed {
                    span: None,
                    context: Some(SpanContext::new(
                        ids.new_trace_id(),
                        ids.new_span_id(),
                        sc.trace_flags(),
                        false,
                        TraceState::default(),
                    )),
                }
            }
        }
    }

    /// The trace headers a target of `traffic` is handed (see the module
    /// docs); empty when there is nothing to continue or mark.
    pub(crate) fn propagate(
        &self,
        headers: &HeaderMap,
        traffic: Traffic,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Injected::default();
        if let Some(sc) = &self.context {
            let state = sc
                .trace_state()
                .insert("switchyard", traffic.as_str())
                .unwrap_or_else(|_| TraceState::default());
            let with = |state| {
                Context::new().with_remote_span_context(SpanContext::new(
                    sc.trace_id(),
                    sc.span_id(),
                    sc.trace_flags(),
                    true,
                    state,
                ))
            };
            TraceContextPropagator::new().inject_context(&with(state), &mut out);
            // X-Ray carries trace-state entries as extra fields: only ours.
            let ours =
                TraceState::from_key_value([("switchyard", traffic.as_str())]).unwrap_or_default();
            XrayPropagator::new().inject_context(&with(ours), &mut out);
        }
        // Baggage for a request in a trace, or one that brought baggage
        // (whose `switchyard.traffic` entry is replaced either way); a
        // request in no trace is told its class by `x-switchyard-traffic`
        // alone, and costs nothing more here.
        if self.context.is_some() || headers.contains_key("baggage") {
            out.set("baggage", baggage(headers, traffic));
        }
        out.0
    }

    /// The trace end step: the span (if recorded) ends with what the
    /// request came to. Its status is an error when the version or the
    /// mesh failed, not when the caller's own request was refused.
    pub(crate) fn end_routed(
        self,
        function: &str,
        active: &switchyard_config::Active,
        decision: &switchyard_core::Decision,
        call: &switchyard_dispatch::Call,
        sent: &crate::steps::Sent,
    ) {
        let Some(mut span) = self.span else { return };
        let (method, path) = call.method_and_path();
        let status = sent.response.status().as_u16();
        span.set_attributes([
            KeyValue::new("switchyard.function", function.to_owned()),
            KeyValue::new("switchyard.target", decision.target.clone()),
            KeyValue::new("switchyard.traffic", decision.traffic.as_str()),
            KeyValue::new("switchyard.reason", decision.reason.clone()),
            KeyValue::new("switchyard.policy", active.policy.digest().to_string()),
            KeyValue::new("switchyard.route_version", active.stored.version as i64),
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ]);
        if sent.version_failed() {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }
}

/// The caller's baggage, its `switchyard.traffic` entries replaced by
/// this request's class.
fn baggage(headers: &HeaderMap, traffic: Traffic) -> String {
    let mut entries: Vec<&str> = headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| {
            !e.is_empty()
                && e.split(['=', ';'])
                    .next()
                    .is_some_and(|k| k.trim() != "switchyard.traffic")
        })
        .collect();
    let ours = format!("switchyard.traffic={}", traffic.as_str());
    entries.push(&ours);
    entries.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn get<'a>(out: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        out.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn an_untraced_request_gets_nothing_and_forged_baggage_is_replaced() {
        let h = headers(&[("x", "1")]);
        for traffic in [Traffic::Production, Traffic::Synthetic] {
            let r = Routed::begin(None, &h, traffic, "orders");
            assert!(r.propagate(&h, traffic).is_empty());
        }
        let h = headers(&[("baggage", "switchyard.traffic=production")]);
        let r = Routed::begin(None, &h, Traffic::Synthetic, "orders");
        let out = r.propagate(&h, Traffic::Synthetic);
        assert_eq!(get(&out, "baggage"), Some("switchyard.traffic=synthetic"));
        assert_eq!(get(&out, "traceparent"), None);
    }

    #[test]
    fn the_callers_trace_is_continued_and_the_class_marked_unforgeably() {
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=x,switchyard=production"),
            ("baggage", "user=alice, switchyard.traffic=production"),
        ]);
        let r = Routed::begin(None, &h, Traffic::Synthetic, "orders");
        let out = r.propagate(&h, Traffic::Synthetic);
        assert_eq!(
            get(&out, "traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            get(&out, "tracestate"),
            Some("switchyard=synthetic,vendor=x")
        );
        assert_eq!(
            get(&out, "baggage"),
            Some("user=alice,switchyard.traffic=synthetic")
        );
        assert_eq!(
            get(&out, "x-amzn-trace-id"),
            Some(
                "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1;Switchyard=synthetic"
            )
        );
    }

    /// Without a synthetic exporter a mirror copy of a traced request is
    /// still a trace of its own (the caller's sampling kept), and a copy of
    /// an untraced request carries no trace context.
    #[test]
    fn a_mirror_copy_is_a_trace_of_its_own() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let r = Routed::begin(None, &h, Traffic::Production, "orders");
        let out = r
            .mirror(None, "orders", "8")
            .propagate(&h, Traffic::Synthetic);
        let parent = get(&out, "traceparent").unwrap();
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{parent}");
        assert_ne!(parts[2], "00f067aa0ba902b7", "{parent}");
        assert_eq!(parts[3], "01", "{parent}");
        assert_eq!(get(&out, "tracestate"), Some("switchyard=synthetic"));
        let untraced = Routed::begin(None, &HeaderMap::new(), Traffic::Production, "orders");
        assert!(
            untraced
                .mirror(None, "orders", "8")
                .propagate(&HeaderMap::new(), Traffic::Synthetic)
                .is_empty()
        );
    }

    #[test]
    fn an_xray_header_alone_is_continued() {
        let h = headers(&[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )]);
        let r = Routed::begin(None, &h, Traffic::Production, "orders");
        let out = r.propagate(&h, Traffic::Production);
        assert_eq!(
            get(&out, "traceparent"),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")
        );
        assert_eq!(get(&out, "baggage"), Some("switchyard.traffic=production"));
    }

    #[test]
    fn collector_base_urls_get_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
