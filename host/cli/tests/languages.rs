//! One contract, three languages: the Python and JavaScript ports of the
//! policies in `policies/` are built with `switchyard policy build`'s code,
//! pass the Rust policies' fixture cases unchanged, and decide exactly as the
//! Rust builds do over generated requests and route configs. Policies that
//! reach for files, sockets, the environment or the clock fail cleanly.
//!
//! Needs componentize-py and jco (`.ci/run` installs both; see the README).

use switchyard_test_support as common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use switchyard::{self as build, Language};
use switchyard_core::CaseFile;
use switchyard_core::{Decision, Policy, Request, Route, RouteConfig};

/// The policies ported to every language.
/// (`tenant-allowlist` is the example of docs/writing-a-policy.md.)
const PORTED: [&str; 3] = ["synthetic-header", "sticky-canary", "tenant-allowlist"];

fn policy_dir(lang: Language, name: &str) -> PathBuf {
    let root = repo_root().join("policies");
    match lang {
        Language::Rust => root.join(name),
        Language::Python => root.join("python").join(name),
        Language::JavaScript => root.join("js").join(name),
    }
}

/// Builds (once per test process) and loads a policy. Builds run one at a
/// time: each tool uses every core.
fn built(lang: Language, name: &str) -> Arc<Policy> {
    type Built = Vec<((Language, String), Arc<Policy>)>;
    static CACHE: OnceLock<Mutex<Built>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = cache.iter().find(|(k, _)| k == &(lang, name.to_owned())) {
        return p.clone();
    }
    let policy = load_built(&policy_dir(lang, name), lang, name);
    cache.push(((lang, name.to_owned()), policy.clone()));
    policy
}

/// Where [`built`] writes a component.
fn built_path(lang: Language, name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("languages")
        .join(format!("{lang:?}-{name}.component.wasm"))
}

fn load_built(dir: &Path, lang: Language, name: &str) -> Arc<Policy> {
    if lang == Language::Rust {
        // Built with the test artifacts already.
        let path = match name {
            "synthetic-header" => switchyard_test_artifacts::SYNTHETIC_HEADER,
            "sticky-canary" => switchyard_test_artifacts::STICKY_CANARY,
            "tenant-allowlist" => switchyard_test_artifacts::TENANT_ALLOWLIST,
            _ => panic!("no Rust artifact for {name}"),
        };
        return load(path);
    }
    let out = built_path(lang, name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let built = build::build(dir, Some(&out), build::JsBackend::default())
        .unwrap_or_else(|e| panic!("building the {lang:?} {name} policy: {e}"));
    let imports: Vec<&str> = built.info.imports.iter().map(String::as_str).collect();
    assert!(
        imports.iter().all(|i| i.starts_with("switchyard:policy/")),
        "{lang:?} {name} imports {imports:?}"
    );
    let bytes = std::fs::read(&built.path).unwrap();
    Policy::new(engine(), &bytes, &built.path.display().to_string()).expect("policy loads")
}

#[test]
fn ports_pass_the_rust_fixture_cases() {
    for name in PORTED {
        let cases =
            std::fs::read_to_string(policy_dir(Language::Rust, name).join("cases.json")).unwrap();
        let cases = CaseFile::from_json(&cases).unwrap();
        for lang in [Language::Python, Language::JavaScript] {
            let results = cases.run(&built(lang, name)).expect("cases run");
            let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
            assert!(
                failed.is_empty(),
                "{lang:?} {name}: {failed:#?} of {} cases failed",
                results.len()
            );
            assert!(results.len() >= 5, "{name} has few cases");
        }
    }
}

/// splitmix64: a small deterministic generator, so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    /// Printable ASCII, as HTTP header values are.
    fn text(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| (b' ' + self.below(95) as u8) as char)
            .collect()
    }
}

const TRUTHY: &[&str] = &[
    "true", "TRUE", "tRuE", "1", " 1 ", "\ttrue", "true ", "0", "yes", "false", "", "truee", "11",
];
const PERCENTS: &[&str] = &[
    "0", "10", "50", "100", "12.5", "0.01", "99.995", "0.005", "33.333", " 7 ", "1e1", "5.", ".5",
    "+5", "-0", "abc", "150", "-1", "", "nan", "inf", "0x10", "1_0", "100.0001", "\"q\"", "a\\b",
    "\t3", "1 2", "1e400",
];
const ROLES: &[&str] = &["stable", "candidate", "canary", "shadow"];
const QUALIFIERS: &[&str] = &["1", "7", "8", "42", "live", "$LATEST", "blue"];
const HEADERS: &[&str] = &[
    "x-switchyard-synthetic",
    "X-Switchyard-Synthetic",
    "x-qa",
    "X-QA",
    "x-user-id",
    "X-User-Id",
    "x-tenant",
    "X-Tenant",
    "accept",
];

/// A route config, and a sticky key whose bucket sits exactly on the
/// config's canary threshold when the generator chose to test that edge.
fn gen_config(g: &mut Gen, function: &str) -> (RouteConfig, String) {
    let mut versions = serde_json::Map::new();
    versions.insert("stable".into(), g.pick(QUALIFIERS).into());
    for role in &ROLES[1..] {
        if g.chance(60) {
            versions.insert((*role).into(), g.pick(QUALIFIERS).into());
        }
    }
    let mut flags = serde_json::Map::new();
    let candidates = [
        (
            "synthetic-header",
            g.pick(&["x-qa", "X-QA", "x-switchyard-synthetic"])
                .to_owned(),
        ),
        ("mirror-role", g.pick(ROLES).to_owned()),
        ("canary-percent", g.pick(PERCENTS).to_owned()),
        (
            "sticky-header",
            g.pick(&["x-tenant", "X-Tenant", "x-user-id"]).to_owned(),
        ),
        ("sticky-salt", g.text(6)),
        (
            "qa-tenants",
            g.pick(&["acme", "acme,globex", " acme , initech ", ",,", "", "ACME"])
                .to_owned(),
        ),
    ];
    for (name, value) in candidates {
        if g.chance(40) {
            flags.insert(name.into(), value.into());
        }
    }
    if g.chance(70) && !flags.contains_key("canary-percent") {
        flags.insert("canary-percent".into(), g.pick(PERCENTS).into());
    }
    let edge_key = format!("edge-{}", g.below(1000));
    if g.chance(30) {
        // The percentage that puts edge_key's bucket exactly on the threshold.
        let salt = flags
            .get("sticky-salt")
            .and_then(|v| v.as_str())
            .unwrap_or(function);
        let bucket = switchyard_core::bucket(&edge_key, salt);
        let percent = format!("{}.{:02}", bucket / 100, bucket % 100);
        flags.insert("canary-percent".into(), percent.into());
    }
    let json = serde_json::json!({
        "mode": if g.chance(70) { "synthetic" } else { "production" },
        "versions": versions,
        "flags": flags,
    });
    let config = RouteConfig::from_json(&json.to_string()).expect("generated config is valid");
    (config, edge_key)
}

fn gen_request(g: &mut Gen, function: &str, edge_key: &str) -> Request {
    let mut headers = Vec::new();
    for _ in 0..g.below(5) {
        let name = g.pick(HEADERS);
        let value = if name.to_ascii_lowercase().contains("user")
            || name.to_ascii_lowercase().contains("tenant")
        {
            if g.chance(30) {
                edge_key.to_owned()
            } else if g.chance(30) {
                g.pick(&["acme", "globex", "initech", "ACME", " acme"])
                    .to_owned()
            } else if g.chance(50) {
                format!("user-{}", g.below(200))
            } else {
                g.text(12)
            }
        } else if g.chance(80) {
            g.pick(TRUTHY).to_owned()
        } else {
            g.text(8)
        };
        headers.push((name.to_owned(), value));
    }
    let method = g.pick(&["GET", "POST", "DELETE"]);
    Request::new(function, method, "/orders/1", headers)
}

/// What must match across languages: the whole decision.
fn show(d: &Decision) -> String {
    serde_json::to_string(d).unwrap()
}

#[test]
fn languages_decide_identically_over_generated_requests() {
    const REQUESTS: usize = 1_200;
    for name in PORTED {
        let langs = [Language::Rust, Language::Python, Language::JavaScript];
        let mut evaluators: Vec<_> = langs.iter().map(|l| built(*l, name).evaluator()).collect();
        let mut g = Gen(0x5eed ^ name.len() as u64);
        let mut route = None::<Route>;
        let mut edge_key = String::new();
        let mut in_canary = 0;
        for i in 0..REQUESTS {
            // A new route config every 25 requests: `configure` runs again.
            if i % 25 == 0 {
                let function = g.pick(&["orders", "payments", "o"]);
                let (config, key) = gen_config(&mut g, function);
                route = Some(Route::new(function, config).unwrap());
                edge_key = key;
            }
            let route = route.as_ref().unwrap();
            let req = Arc::new(gen_request(&mut g, route.function(), &edge_key));
            let decisions: Vec<_> = evaluators
                .iter_mut()
                .map(|ev| {
                    let (d, err) = ev.decide(&req, route);
                    assert!(err.is_none(), "{name} failed on {req:?}: {err:?}");
                    show(&d)
                })
                .collect();
            for (lang, d) in langs.iter().zip(&decisions).skip(1) {
                assert_eq!(
                    d,
                    &decisions[0],
                    "{name}: {lang:?} differs from Rust on request #{i} {req:?} with {:?}",
                    route.config()
                );
            }
            in_canary += decisions[0].contains("in canary") as usize;
        }
        if name == "sticky-canary" {
            // The generator reaches both sides of the bucket comparison.
            assert!(in_canary > 20, "only {in_canary} requests in a canary");
        }
    }
}

/// What a capability attempt may show: a failure, or nothing of the host's.
fn leaked(what: &str, reason: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match what {
        "file" => reason.contains("root:"),
        "env" => std::env::vars()
            .any(|(k, v)| v.len() > 3 && reason.contains(k.as_str()) && reason.contains(&v)),
        // The leading digits of the current Unix time, in seconds or ms.
        "clock" => [now, now - 1000]
            .iter()
            .any(|t| reason.contains(&t.to_string()[..7])),
        "socket" => reason.contains("connected"),
        // Judged over two calls by the caller: one value cannot tell.
        "random" => false,
        _ => panic!("no leak check for {what:?}"),
    }
}

#[test]
fn policies_get_no_files_network_environment_or_clock() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let route = synthetic_route();
    for lang in [Language::Python, Language::JavaScript] {
        let policy = built(lang, "bad-capabilities");
        let mut ev = policy.evaluator();
        for what in ["file", "env", "clock", "random", "socket"] {
            let req = Arc::new(Request::new(
                "orders",
                "GET",
                "/",
                [("x-try", what), ("x-port", port.as_str())],
            ));
            let (d, err) = ev.decide(&req, &route);
            eprintln!(
                "{lang:?} {what}: {:?} / {}",
                err.as_ref().map(|e| e.to_string()),
                d.reason
            );
            match err {
                // Trapped: the fail-safe applies.
                Some(_) => {
                    assert_eq!(d.target, "7");
                    assert!(d.reason.starts_with("fail-safe: "), "{}", d.reason);
                }
                None => {
                    assert!(
                        !leaked(what, &d.reason),
                        "{lang:?} policy got the host's {what}: {}",
                        d.reason
                    );
                    if what == "random" {
                        // Seeded from the host's entropy, two fresh instances
                        // would draw different first values; from a stub (or
                        // an in-guest generator with a fixed seed), the same.
                        let (fresh, _) = policy.evaluator().decide(&req, &route);
                        assert_eq!(
                            fresh.reason, d.reason,
                            "{lang:?} policy got the host's randomness"
                        );
                    }
                }
            }
        }
    }
    assert!(
        listener.accept().is_err(),
        "a policy opened a connection to the host"
    );
}

/// An upstream standing in for one function version: answers every request
/// with `<version> <x-switchyard-traffic it received>`.
fn upstream(version: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let mut traffic = String::from("-");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("x-switchyard-traffic")
                {
                    traffic = v.trim().to_owned();
                }
                line.clear();
            }
            let body = format!("{version} {traffic}");
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// The done-when of the languages work: a JavaScript policy published to
/// SSM + S3 (moto) is served by `switchyard serve` and routes like its Rust
/// twin, function by function, request by request.
#[test]
fn a_js_policy_published_to_ssm_and_s3_routes_like_its_rust_twin() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    built(Language::JavaScript, "synthetic-header");
    aws::endpoint();
    let id = format!("{}-{}", std::process::id(), line!());
    let bucket = format!("sy-lang-{id}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = rt.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let s3 = switchyard_config::s3_client(&config);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        s3
    });
    let prefix = format!("/lang{id}");
    let publish_store = format!("ssm:{prefix}?blobs=s3://{bucket}/policies");

    let tmp = tempfile::tempdir().unwrap();
    let (v7, v8) = (upstream("7"), upstream("8"));
    let route = tmp.path().join("route.json");
    std::fs::write(
        &route,
        serde_json::json!({
            "mode": "synthetic",
            "versions": {"stable": "7", "candidate": "8"},
            "dispatch": {"type": "http", "urls": {"7": v7, "8": v8}},
        })
        .to_string(),
    )
    .unwrap();
    let rust = switchyard_test_artifacts::SYNTHETIC_HEADER.to_owned();
    let js = built_path(Language::JavaScript, "synthetic-header");
    let cases = policy_dir(Language::Rust, "synthetic-header").join("cases.json");
    for (function, policy) in [("orders-rs", Path::new(&rust)), ("orders-js", &js)] {
        let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["publish", "--store", &publish_store, "--function", function])
            .arg("--policy")
            .arg(policy)
            .arg("--config")
            .arg(&route)
            .arg("--cases")
            .arg(&cases)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The 1.6 MB JavaScript component went to S3; the Rust one stayed in SSM.
    let keys: Vec<String> = rt.block_on(async {
        let out = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    });
    let js_digest = switchyard_core::Digest::of(&std::fs::read(&js).unwrap());
    assert_eq!(keys, [format!("policies/sha256-{}", js_digest.hex())]);

    // The proxy reads with a plain ssm: store; the manifests lead to S3.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--store",
                &format!("ssm:{prefix}"),
                "--listen",
                &listen,
                "--admin-listen",
                "off",
            ])
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let get = |function: &str, header: Option<&str>| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", &format!("http://{listen}/{function}/orders/1")]);
        if let Some(h) = header {
            cmd.args(["-H", h]);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while get("orders-js", None) != "7 production" || get("orders-rs", None) != "7 production" {
        assert!(
            Instant::now() < deadline,
            "the proxy did not serve both functions"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let headers = [
        None,
        Some("x-switchyard-synthetic: true"),
        Some("X-Switchyard-Synthetic: 1"),
        Some("x-switchyard-synthetic: yes"),
        Some("x-switchyard-synthetic:  TRUE "),
    ];
    let mut answers = Vec::new();
    for h in headers {
        let (js, rs) = (get("orders-js", h), get("orders-rs", h));
        assert_eq!(js, rs, "with header {h:?}");
        answers.push(js);
    }
    assert_eq!(
        answers,
        [
            "7 production",
            "8 synthetic",
            "8 synthetic",
            "7 production",
            "8 synthetic"
        ]
    );
}

/// The code blocks of `doc` marked `<!-- file: <path> -->` must be the
/// files CI builds and tests, byte for byte; returns how many there are.
fn shown_files_match(doc: &str) -> usize {
    let text = std::fs::read_to_string(repo_root().join(doc)).unwrap();
    let mut shown = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("<!-- file: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{doc}: {path}: no code block after the marker"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let file = std::fs::read_to_string(repo_root().join(path)).unwrap();
        assert_eq!(
            body.join("\n") + "\n",
            file,
            "{doc} shows a {path} that differs from the file"
        );
        shown += 1;
    }
    shown
}

/// docs/writing-a-policy.md shows the example's files; they must be the
/// files CI builds and tests, byte for byte.
#[test]
fn the_writing_a_policy_guide_shows_the_tested_files() {
    let shown = shown_files_match("docs/writing-a-policy.md");
    assert_eq!(shown, 5, "cases, Rust (2 files), JavaScript and Python");
}

/// The README's tour shows `synthetic-header` as it is.
#[test]
fn the_readme_tour_shows_the_tested_policy() {
    assert_eq!(shown_files_match("README.md"), 1);
}
