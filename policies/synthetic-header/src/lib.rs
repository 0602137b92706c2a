//! The core Switchyard case: QA tags requests with a header and, while the
//! function is in synthetic mode, those requests reach the candidate version
//! as synthetic traffic; everything else reaches stable as production.
//!
//! Flags: `synthetic-header` (default `x-switchyard-synthetic`); the header's
//! value must be `true` or `1`. Optional `mirror-role` (e.g. `candidate`):
//! every request routed to stable is also mirrored to that version, as
//! synthetic traffic whose response is discarded (shadow testing).
use switchyard_guest::{Config, Decision, Mode, Policy, Request, export_policy};

struct SyntheticHeader {
    header: String,
    mirror_role: Option<String>,
}

impl Policy for SyntheticHeader {
    fn configure(cfg: &Config) -> Self {
        let header = cfg.flag_or("synthetic-header", "x-switchyard-synthetic");
        SyntheticHeader {
            header: header.to_ascii_lowercase(),
            mirror_role: cfg.flag("mirror-role").map(str::to_owned),
        }
    }

    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        if cfg.mode() == Mode::Production {
            return self
                .mirrored(Decision::stable(cfg), cfg)
                .reason("production mode: everything to stable");
        }
        if req.header_is_true(&self.header) {
            Decision::role(cfg, "candidate")
                .synthetic()
                .reason(format_args!("synthetic mode and {} is true", self.header))
        } else {
            self.mirrored(Decision::stable(cfg), cfg)
                .reason(format_args!("synthetic mode, no true {}", self.header))
        }
    }
}

impl SyntheticHeader {
    fn mirrored(&self, d: Decision, cfg: &Config) -> Decision {
        match &self.mirror_role {
            Some(role) => d.mirror_role(cfg, role),
            None => d,
        }
    }
}

export_policy!(SyntheticHeader);
