//! The sticky-canary properties, over 10,000 keys, through the real policy
//! component and the host's `bucket`.

use switchyard_test_support as common;

use common::*;
use switchyard_core::{Evaluator, Route};

fn in_canary(ev: &mut Evaluator, route: &Route, key: &str) -> bool {
    let d = ev.evaluate(&request(&[("x-user-id", key)]), route).unwrap();
    d.target == "8"
}

fn canary_route(percent: &str) -> Route {
    route(&format!(
        r#"{{"mode":"production","versions":{{"stable":"7","candidate":"8"}},"flags":{{"canary-percent":"{percent}"}}}}"#
    ))
}

const KEYS: usize = 10_000;

fn keys() -> impl Iterator<Item = String> {
    (0..KEYS).map(|i| format!("user-{i}"))
}

#[test]
fn distribution_is_within_one_and_a_half_points() {
    let policy = load(switchyard_test_artifacts::STICKY_CANARY);
    let mut ev = policy.evaluator();
    for percent in [5.0, 10.0, 12.5, 50.0] {
        let route = canary_route(&percent.to_string());
        let hits = keys().filter(|k| in_canary(&mut ev, &route, k)).count();
        let share = hits as f64 * 100.0 / KEYS as f64;
        assert!(
            (share - percent).abs() <= 1.5,
            "{percent} % configured, {share} % of {KEYS} keys in the canary"
        );
    }
}

#[test]
fn same_key_same_target_across_instances() {
    let policy = load(switchyard_test_artifacts::STICKY_CANARY);
    let route = canary_route("30");
    let mut a = policy.evaluator();
    let mut b = policy.evaluator();
    for k in keys().take(2_000) {
        let first = in_canary(&mut a, &route, &k);
        assert_eq!(
            first,
            in_canary(&mut a, &route, &k),
            "{k} moved on one instance"
        );
        assert_eq!(
            first,
            in_canary(&mut b, &route, &k),
            "{k} differs between instances"
        );
    }
}

#[test]
fn ramping_up_never_moves_a_user_out() {
    let policy = load(switchyard_test_artifacts::STICKY_CANARY);
    let mut ev = policy.evaluator();
    let steps: Vec<Route> = ["5", "7.5", "10", "15", "20"]
        .into_iter()
        .map(canary_route)
        .collect();
    let mut grew = false;
    for k in keys() {
        let mut was_in = false;
        for (i, route) in steps.iter().enumerate() {
            let now_in = in_canary(&mut ev, route, &k);
            assert!(!was_in || now_in, "{k} left the canary at step {i}");
            grew |= i > 0 && now_in && !was_in;
            was_in = now_in;
        }
    }
    assert!(grew, "raising the percentage must add users");
}

#[test]
fn host_bucket_matches_the_documented_algorithm() {
    // Values computed independently from the algorithm in wit/policy.wit
    // (a Python transcription); a change here moves users between versions.
    assert_eq!(switchyard_core::bucket("user-3", "orders"), 373);
    assert_eq!(switchyard_core::bucket("user-1", "orders"), 4309);
    assert_eq!(switchyard_core::bucket("user-8472917", "orders"), 3410);
    assert_eq!(switchyard_core::bucket("alice", "orders"), 9056);
}
