//! Every answer to a request for a function is counted once, in
//! `switchyard_requests_total` and the live view: decided ones under their
//! decision, the rest (a 400, 404, 413, 431 before any decision) under
//! `target="none"`, `traffic="none"`.

use axum::response::Response;

use crate::Proxy;

/// Counts a front-end answer under its labels and returns it.
pub(crate) fn counted(
    p: &Proxy,
    response: Response,
    function: &str,
    target: &str,
    traffic: &'static str,
) -> Response {
    let status = response.status().as_u16();
    let mut handles = p.handles();
    handles
        .request(function, target, traffic, status)
        .increment(1);
    handles.activity.record(function, target, traffic, status);
    response
}

/// Counts an answer that names no routed function, under `function="-"`
/// (so callers cannot mint label values).
pub(crate) fn undecided(p: &Proxy, response: Response) -> Response {
    counted(p, response, "-", "none", "none")
}

/// Counts an undecided answer of a routed function under the function.
pub(crate) fn for_function(p: &Proxy, response: Response, function: &str) -> Response {
    counted(p, response, function, "none", "none")
}
