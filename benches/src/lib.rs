//! Shared by the benches: the reference request and route config, and the
//! sticky-canary logic as plain Rust (the native floor).

use std::sync::Arc;

use switchyard_core::{Decision, Request, RequestJson, Route, RouteConfig, Traffic, bucket};

/// The reference request (15 headers, ~680 bytes of header text).
pub const BENCH_REQUEST: &str = include_str!("../data/bench-request.json");
/// The route config used with it.
pub const BENCH_ROUTE_CONFIG: &str = include_str!("../data/bench-route-config.json");

/// The reference request, parsed.
pub fn bench_request() -> Arc<Request> {
    let raw: RequestJson = serde_json::from_str(BENCH_REQUEST).expect("bench request");
    Arc::new(raw.into_request(None).expect("bench request"))
}

/// The reference route, for function `orders`.
pub fn bench_route() -> Route {
    let cfg = RouteConfig::from_json(BENCH_ROUTE_CONFIG).expect("bench route config");
    Route::new("orders", cfg).expect("bench route")
}

/// `sticky-canary` written as plain Rust: configured once, like the policy.
pub struct NativeCanary {
    threshold: u32,
    header: String,
    salt: String,
}

impl NativeCanary {
    /// Parses the flags, as the policy's `configure` does.
    pub fn configure(route: &Route) -> Self {
        let flags = &route.config().flags;
        let threshold = flags
            .get("canary-percent")
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .map_or(0, |p| (p * 100.0).round() as u32);
        NativeCanary {
            threshold,
            header: flags
                .get("sticky-header")
                .map_or("x-user-id", String::as_str)
                .to_ascii_lowercase(),
            salt: flags
                .get("sticky-salt")
                .map_or(route.function(), String::as_str)
                .to_owned(),
        }
    }

    /// Decides, producing the same `Decision` the host builds from the policy.
    pub fn evaluate(&self, req: &Request, route: &Route) -> Decision {
        let versions = &route.config().versions;
        let (role, reason) = match req.header(&self.header) {
            None => ("stable", "no sticky key"),
            Some(key) if bucket(&key, &self.salt) < self.threshold => ("candidate", "in canary"),
            Some(_) => ("stable", "not in canary"),
        };
        let target = versions
            .get(role)
            .cloned()
            .unwrap_or_else(|| route.config().stable().to_owned());
        let context = route.config().context_for(&target);
        Decision {
            target,
            traffic: Traffic::Production,
            mirror: None,
            context,
            reason: reason.to_owned(),
        }
    }
}

/// `sticky-canary` in Rego (`data/sticky-canary.rego`), for the regorus
/// peers.
pub const STICKY_CANARY_REGO: &str = include_str!("../data/sticky-canary.rego");
/// The rule both regorus engines evaluate.
pub const REGO_ENTRY_POINT: &str = "data.switchyard.decision";

/// The regorus input for a request and route: `function`, lower-cased
/// `headers`, `flags` and `versions`; with `bucket` precomputed by the host
/// when `with_bucket` (the RVM cannot call the host).
pub fn rego_input(req: &Request, route: &Route, with_bucket: bool) -> regorus::Value {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let cfg = route.config();
    let mut input = serde_json::json!({
        "function": route.function(),
        "headers": headers,
        "flags": cfg.flags,
        "versions": cfg.versions,
    });
    if with_bucket {
        let native = NativeCanary::configure(route);
        if let Some(key) = req.header(&native.header) {
            input["bucket"] = bucket(&key, &native.salt).into();
        }
    }
    serde_json::from_value(input).expect("a JSON value is a regorus value")
}

/// The regorus interpreter loaded with the Rego policy and the host's
/// `bucket` as the extension `sy_bucket`.
pub fn rego_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("sticky-canary.rego".into(), STICKY_CANARY_REGO.into())
        .expect("policy parses");
    engine
        .add_extension(
            "sy_bucket".into(),
            2,
            Box::new(|args: Vec<regorus::Value>| {
                let key = args[0].as_string()?;
                let salt = args[1].as_string()?;
                Ok(regorus::Value::from(u64::from(bucket(key, salt))))
            }),
        )
        .expect("extension registers");
    engine
}

/// The Rego policy compiled for regorus's RVM (bucket from the input).
pub fn rego_rvm_program() -> std::sync::Arc<regorus::rvm::program::Program> {
    let source = STICKY_CANARY_REGO.replace("bkt := sy_bucket(key, salt)", "bkt := input.bucket");
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("sticky-canary.rego".into(), source)
        .expect("policy parses");
    let entry: regorus::Rc<str> = REGO_ENTRY_POINT.into();
    let compiled = engine
        .compile_with_entrypoint(&entry)
        .expect("policy compiles");
    regorus::languages::rego::compiler::Compiler::compile_from_policy(
        &compiled,
        &[REGO_ENTRY_POINT],
    )
    .expect("RVM program compiles")
}

/// `(target, traffic, reason)` of a regorus decision value.
pub fn rego_decision(v: &regorus::Value) -> (String, String, String) {
    let field = |k: &str| {
        v[k].as_string()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| panic!("decision has no string {k:?}: {v}"))
    };
    (field("target"), field("traffic"), field("reason"))
}
