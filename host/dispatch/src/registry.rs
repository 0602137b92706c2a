//! The route config's `dispatch` block, read in one place: which backend
//! serves a route version, made once per version.

use std::sync::Arc;

use serde::Deserialize;
use switchyard_core::{DispatchSpec, Route, RouteConfig};

use crate::clients::Clients;
use crate::dispatcher::Dispatcher;
#[cfg(feature = "echo")]
use crate::echo;
use crate::error::SpecError;
use crate::{http_backend, lambda, step_functions};

/// The backends, as the `dispatch` block's `"type"` names them.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Backend {
    Http(http_backend::HttpSpec),
    Lambda(lambda::LambdaSpec),
    StepFunctions(step_functions::StepFunctionsSpec),
    #[cfg(feature = "echo")]
    Echo(echo::EchoSpec),
}

/// The dispatcher for a route's `dispatch` block: the one place it is
/// matched.
pub fn for_route(
    spec: &DispatchSpec,
    clients: &Arc<Clients>,
) -> Result<Arc<dyn Dispatcher>, SpecError> {
    let backend: Backend = serde_json::from_value(serde_json::Value::Object(spec.json().clone()))
        .map_err(SpecError::Json)?;
    Ok(match backend {
        Backend::Http(s) => Arc::new(http_backend::HttpDispatcher::new(s, clients.clone())?),
        Backend::Lambda(s) => Arc::new(lambda::LambdaDispatcher::new(s, clients.clone())?),
        Backend::StepFunctions(s) => Arc::new(step_functions::StepFunctionsDispatcher::new(
            s,
            clients.clone(),
        )?),
        #[cfg(feature = "echo")]
        Backend::Echo(s) => Arc::new(echo::EchoDispatcher::new(s)),
    })
}

/// A route version's dispatcher, as the watcher keeps it with the version
/// (see [`prepare`]).
#[derive(Debug, Clone)]
pub struct RouteDispatch(pub Arc<dyn Dispatcher>);

/// The watcher hook that parses each route version's `dispatch` block once,
/// before the version goes live: a block that does not parse refuses the
/// version (the live one keeps serving), and request handlers find the
/// version's [`RouteDispatch`] in `Active::prepared`. A version without a
/// block is served: it decides, and dispatching says what is missing.
pub fn prepare(clients: Arc<Clients>) -> switchyard_config::Prepare {
    Arc::new(move |route: &Route| {
        // No block: the version still decides (the decide API, `decide`);
        // a request to dispatch gets a 502 that says what to add.
        let Some(spec) = route.config().dispatch.as_ref() else {
            return Ok(None);
        };
        let prepared: switchyard_config::Prepared =
            Arc::new(RouteDispatch(for_route(spec, &clients)?));
        Ok(Some(prepared))
    })
}

/// Checks a route config's `dispatch` block, if it has one (what `publish`
/// runs before writing).
pub fn check(config: &RouteConfig) -> Result<(), SpecError> {
    match &config.dispatch {
        Some(spec) => {
            let backend: Backend =
                serde_json::from_value(serde_json::Value::Object(spec.json().clone()))
                    .map_err(SpecError::Json)?;
            match backend {
                Backend::Http(s) => s.check(),
                Backend::Lambda(s) => s.check(),
                Backend::StepFunctions(s) => s.check(),
                #[cfg(feature = "echo")]
                Backend::Echo(_) => Ok(()),
            }
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> RouteConfig {
        RouteConfig::from_json(json).unwrap()
    }

    #[test]
    fn dispatch_blocks_are_checked() {
        let ok = config(
            r#"{"mode":"production","versions":{"stable":"7"},"dispatch":{"type":"http","urls":{"7":"https://x.lambda-url.us-east-1.on.aws"}}}"#,
        );
        assert!(check(&ok).is_ok());
        for (bad, says) in [
            (
                r#"{"type":"http","urls":{"7":"ftp://x"}}"#,
                "absolute http:// or https:// URL",
            ),
            (
                r#"{"type":"smoke-signals"}"#,
                "unknown variant `smoke-signals`",
            ),
            (
                r#"{"type":"lambda","function-name":"f","extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"type":"http","urls":{},"auth":{"kind":"header","name":"bad name","value":"v"}}"#,
                "auth header name \"bad name\" is not a header name",
            ),
            (
                r#"{"type":"http","urls":{},"auth":{"kind":"aws-iam","service":" "}}"#,
                "auth \"service\" is empty",
            ),
            (
                r#"{"type":"http","urls":{},"auth":{"kind":"basic"}}"#,
                "unknown variant `basic`",
            ),
            (
                r#"{"type":"step-functions","state-machine-arn":"arn:aws:states:r:1:stateMachine:o","workflow":"async"}"#,
                "unknown variant `async`",
            ),
        ] {
            let cfg = config(&format!(
                r#"{{"mode":"production","versions":{{"stable":"7"}},"dispatch":{bad}}}"#
            ));
            let err = check(&cfg).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
