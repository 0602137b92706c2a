//! In synthetic mode, requests from the tenants listed in flag `qa-tenants`
//! (comma-separated; the tenant is header `x-tenant`) go to the candidate as
//! synthetic traffic. Everything else goes to stable as production.
use switchyard_guest::{Config, Decision, Mode, Policy, Request, export_policy};

struct TenantAllowlist {
    tenants: Vec<String>,
}

impl Policy for TenantAllowlist {
    // Once per route-config version: parse the flags here.
    fn configure(cfg: &Config) -> Self {
        let tenants = cfg
            .flag_or("qa-tenants", "")
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        TenantAllowlist { tenants }
    }

    // Once per request.
    fn evaluate(&self, req: &Request, cfg: &Config) -> Decision {
        if cfg.mode() == Mode::Production {
            return Decision::stable(cfg).reason("production mode");
        }
        match req.header("x-tenant") {
            Some(tenant) if self.tenants.contains(&tenant) => Decision::role(cfg, "candidate")
                .synthetic()
                .reason(format_args!("QA tenant {tenant}")),
            _ => Decision::stable(cfg).reason("not a QA tenant"),
        }
    }
}

export_policy!(TenantAllowlist);
