//! A sticky canary: `canary-percent` (0-100, resolution 0.01 %) of users go to
//! the candidate, keyed by the header named in `sticky-header` (default
//! `x-user-id`). A user is in the canary when the host's `bucket(key, salt)`
//! is below the percentage in basis points, so the same key always gets the
//! same target and raising the percentage never moves a user out.
//! (`header_bucket` is the host's `bucket` of the header's value.) The salt is
//! flag `sticky-salt`, default the function name. No key: stable.
use switchyard_guest::{Config, Decision, Policy, Request, export_policy};

struct StickyCanary {
    /// Canary share in basis points (0..=10000); `Err` holds why the flag is bad.
    threshold: Result<u32, String>,
    header: String,
    salt: String,
}

fn basis_points(raw: Option<&str>) -> Result<u32, String> {
    let Some(raw) = raw else { return Ok(0) };
    match raw.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok((p * 100.0).round() as u32),
        _ => Err(format!("canary-percent {raw:?} is not a number in 0..=100")),
    }
}

impl Policy for StickyCanary {
    fn configure(cfg: &Config) -> Self {
        StickyCanary {
            threshold: basis_points(cfg.flag("canary-percent")),
            header: cfg
                .flag_or("sticky-header", "x-user-id")
                .to_ascii_lowercase(),
            salt: cfg.flag_or("sticky-salt", cfg.function()).to_owned(),
        }
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        let threshold = match &self.threshold {
            Ok(t) => *t,
            Err(why) => return Decision::stable(cfg).reason(why),
        };
        let Some(bucket) = req.header_bucket(&self.header, &self.salt) else {
            return Decision::stable(cfg).reason("no sticky key");
        };
        if bucket < threshold {
            Decision::role(cfg, "candidate").reason("in canary")
        } else {
            Decision::stable(cfg).reason("not in canary")
        }
    }
}

export_policy!(StickyCanary);
