//! The core Switchyard case: QA tags requests with a header and, while the
//! function is in synthetic mode, those requests reach the candidate version
//! as synthetic traffic; everything else reaches stable as production.
//!
//! Flags: `synthetic-header` (default `x-switchyard-synthetic`); the header's
//! value must be `true` or `1`.
use switchyard_guest::{Config, Decision, Mode, Policy, Request, export_policy};

struct SyntheticHeader {
    header: String,
}

impl Policy for SyntheticHeader {
    fn configure(cfg: &Config) -> Self {
        let header = cfg.flag_or("synthetic-header", "x-switchyard-synthetic");
        SyntheticHeader {
            header: header.to_ascii_lowercase(),
        }
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        if cfg.mode() == Mode::Production {
            return Decision::stable(cfg).reason("production mode: everything to stable");
        }
        if req.header_is_true(&self.header) {
            Decision::role(cfg, "candidate")
                .synthetic()
                .reason(format!("synthetic mode and {} is true", self.header))
        } else {
            Decision::stable(cfg).reason(format!("synthetic mode, no true {}", self.header))
        }
    }
}

export_policy!(SyntheticHeader);
