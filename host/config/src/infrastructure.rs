//! Per-version infrastructure that follows the mode: the references a
//! route may keep to what a candidate's own stack deploys.
//!
//! A synthetic candidate may get infrastructure of its own (a queue, a
//! table) from a stack made for it (`deploy/per-version.yaml`, driven by
//! `deploy/follow.py`), which writes what the candidate must be handed to
//! SSM under `<prefix>/infrastructure/<function>/<qualifier>/`, e.g.
//! `/switchyard/infrastructure/orders/8/QUEUE_URL`. The route hands it on
//! as a context reference, `{"$ssm": "/switchyard/infrastructure/orders/8/QUEUE_URL"}`.
//! Such a reference is kept only while its qualifier is the synthetic
//! candidate: an `ssm:` store drops the others on every write, whoever
//! writes ([`prune`]). So the write that takes the candidate out of
//! synthetic mode (`mode production`, `promote`, `rollback`, the guard)
//! leaves nothing referring to what its stack held when the stack goes.

use switchyard_core::{ContextValue, Mode, RouteConfig, SecretRef};

/// The synthetic candidate of `config`: the candidate's qualifier while
/// the route is in synthetic mode, else `None`.
pub fn synthetic_candidate(config: &RouteConfig) -> Option<&str> {
    match (config.mode, config.versions.get("candidate")) {
        (Mode::Synthetic, Some(q)) => Some(q),
        _ => None,
    }
}

/// Drops from `config`'s context every reference to a parameter under
/// `root` but the synthetic candidate's own (`<root>/<function>/<candidate>/...`);
/// a qualifier left with no context goes too. Returns what was dropped, as
/// `qualifier:KEY`.
pub fn prune(config: &mut RouteConfig, root: &str, function: &str) -> Vec<String> {
    let candidate = synthetic_candidate(config).map(str::to_owned);
    let under_root = format!("{root}/");
    let mut dropped = Vec::new();
    for (qualifier, values) in config.context.iter_mut() {
        let own = format!("{root}/{function}/{qualifier}/");
        values.retain(|key, value| {
            let ContextValue::Secret(SecretRef::Ssm(name)) = value else {
                return true;
            };
            let keep = !name.starts_with(&under_root)
                || (candidate.as_deref() == Some(qualifier.as_str()) && name.starts_with(&own));
            if !keep {
                dropped.push(format!("{qualifier}:{key}"));
            }
            keep
        });
    }
    config.context.retain(|_, values| !values.is_empty());
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> RouteConfig {
        serde_json::from_str(json).unwrap()
    }

    const ROOT: &str = "/sy/infrastructure";

    #[test]
    fn the_synthetic_candidate_is_the_candidate_only_in_synthetic_mode() {
        let synthetic = route(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#);
        assert_eq!(synthetic_candidate(&synthetic), Some("8"));
        let production =
            route(r#"{"mode":"production","versions":{"stable":"7","candidate":"8"}}"#);
        assert_eq!(synthetic_candidate(&production), None);
        let alone = route(r#"{"mode":"synthetic","versions":{"stable":"7"}}"#);
        assert_eq!(synthetic_candidate(&alone), None);
    }

    #[test]
    fn only_the_synthetic_candidates_own_infrastructure_references_are_kept() {
        let context = r#""context":{
            "8":{"QUEUE_URL":{"$ssm":"/sy/infrastructure/orders/8/QUEUE_URL"},
                 "OTHER":{"$ssm":"/sy/infrastructure/orders/7/QUEUE_URL"},
                 "DB":{"$ssm":"/orders/db-password"},
                 "PLAIN":"x"},
            "7":{"QUEUE_URL":{"$ssm":"/sy/infrastructure/orders/7/QUEUE_URL"}}}"#;
        let mut synthetic = route(&format!(
            r#"{{"mode":"synthetic","versions":{{"stable":"7","candidate":"8"}},{context}}}"#
        ));
        let dropped = prune(&mut synthetic, ROOT, "orders");
        assert_eq!(dropped, ["7:QUEUE_URL", "8:OTHER"]);
        let kept: Vec<&String> = synthetic.context["8"].keys().collect();
        assert_eq!(kept, ["DB", "PLAIN", "QUEUE_URL"]);
        assert!(
            !synthetic.context.contains_key("7"),
            "an emptied qualifier goes"
        );

        // Out of synthetic mode (promote, rollback, mode production): the
        // candidate's reference goes as well; secrets and literals stay.
        let mut production = route(&format!(
            r#"{{"mode":"production","versions":{{"stable":"8"}},{context}}}"#
        ));
        let dropped = prune(&mut production, ROOT, "orders");
        assert_eq!(dropped, ["7:QUEUE_URL", "8:OTHER", "8:QUEUE_URL"]);
        let kept: Vec<&String> = production.context["8"].keys().collect();
        assert_eq!(kept, ["DB", "PLAIN"]);

        // Another function's infrastructure is never this one's to keep.
        let mut other = route(
            r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"},
                "context":{"8":{"Q":{"$ssm":"/sy/infrastructure/payments/8/QUEUE_URL"}}}}"#,
        );
        assert_eq!(prune(&mut other, ROOT, "orders"), ["8:Q"]);
    }
}
