//! Shared by the benches: the reference request and route config, and the
//! sticky-canary logic as plain Rust (the native floor).

use std::sync::Arc;

use switchyard::{Decision, Request, RequestJson, Route, RouteConfig, Traffic, bucket};

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
            Some(key) if bucket(key, &self.salt) < self.threshold => ("candidate", "in canary"),
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
