//! Every stage `switchyard rollout` walks, in one policy:
//!
//! - **synthetic mode**: a request whose header named by `synthetic-header`
//!   (default `x-switchyard-synthetic`) is `true` or `1` goes to the
//!   candidate as synthetic traffic (QA);
//! - **production mode**: `canary-percent` (0-100, resolution 0.01 %) of
//!   users go to the candidate as production traffic, keyed by the header
//!   named in `sticky-header` (default `x-user-id`; no key: stable) and
//!   salted by `sticky-salt` (default the function), as `sticky-canary`
//!   keys them;
//! - everything else goes to stable, mirrored to the role named by
//!   `mirror-role` when it is set (the shadow stage).
use switchyard_guest::{Config, Decision, Mode, Policy, Request, export_policy};

struct QaCanary {
    synthetic_header: String,
    /// Canary share in basis points (0..=10000); `Err` holds why the flag is bad.
    threshold: Result<u32, String>,
    sticky_header: String,
    salt: String,
    mirror_role: Option<String>,
}

fn basis_points(raw: Option<&str>) -> Result<u32, String> {
    let Some(raw) = raw else { return Ok(0) };
    match raw.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok((p * 100.0).round() as u32),
        _ => Err(format!("canary-percent {raw:?} is not a number in 0..=100")),
    }
}

impl Policy for QaCanary {
    fn configure(cfg: &Config) -> Self {
        QaCanary {
            synthetic_header: cfg
                .flag_or("synthetic-header", "x-switchyard-synthetic")
                .to_ascii_lowercase(),
            threshold: basis_points(cfg.flag("canary-percent")),
            sticky_header: cfg
                .flag_or("sticky-header", "x-user-id")
                .to_ascii_lowercase(),
            salt: cfg.flag_or("sticky-salt", cfg.function()).to_owned(),
            mirror_role: cfg.flag("mirror-role").map(str::to_owned),
        }
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        if cfg.mode() == Mode::Synthetic {
            if req.header_is_true(&self.synthetic_header) {
                return Decision::role(cfg, "candidate")
                    .synthetic()
                    .reason(format_args!(
                        "synthetic mode and {} is true",
                        self.synthetic_header
                    ));
            }
            return self.stable(cfg, "synthetic mode, not tagged");
        }
        let threshold = match &self.threshold {
            Ok(t) => *t,
            Err(why) => return self.stable(cfg, why),
        };
        if threshold == 0 {
            return self.stable(cfg, "production mode, no canary");
        }
        match req.header_bucket(&self.sticky_header, &self.salt) {
            Some(bucket) if bucket < threshold => {
                Decision::role(cfg, "candidate").reason("in canary")
            }
            Some(_) => self.stable(cfg, "not in canary"),
            None => self.stable(cfg, "no sticky key"),
        }
    }
}

impl QaCanary {
    fn stable(&self, cfg: &Config, why: &str) -> Decision {
        let d = Decision::stable(cfg).reason(why);
        match &self.mirror_role {
            Some(role) => d.mirror_role(cfg, role),
            None => d,
        }
    }
}

export_policy!(QaCanary);
