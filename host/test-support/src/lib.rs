//! Shared by the host crates' integration tests (`use
//! switchyard_test_support as common;`): one engine per test binary, the
//! policy components built by `switchyard-test-artifacts`, route helpers,
//! moto, the workspace's binaries and `cargo lambda watch`.

pub mod aws;
pub mod prometheus;

use std::sync::{Arc, OnceLock};

use switchyard_core::{Engine, Policy, Request, Route, RouteConfig};

/// The one engine of this test process (engines reserve a pool each).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("engine"))
}

/// Loads a built policy component.
pub fn load(path: &str) -> Arc<Policy> {
    let bytes = std::fs::read(path).expect("artifact");
    Policy::new(engine(), &bytes, path).expect("policy loads")
}

/// A route for `orders` from route config JSON.
pub fn route(json: &str) -> Route {
    Route::new(
        "orders",
        RouteConfig::from_json(json).expect("route config"),
    )
    .expect("route")
}

/// The usual synthetic-mode route with a candidate.
pub fn synthetic_route() -> Route {
    route(r#"{"mode":"synthetic","versions":{"stable":"7","candidate":"8"}}"#)
}

/// A request to `orders` with the given headers.
pub fn request(headers: &[(&str, &str)]) -> Arc<Request> {
    Arc::new(Request::new(
        "orders",
        "GET",
        "/",
        headers.iter().map(|(k, v)| (*k, *v)),
    ))
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace, from the target directory this test runs
/// from (`target/<profile>/deps/<test>` -> `target/<profile>/<name>`), so a
/// test crate can run another crate's binary. `cargo test --workspace`
/// builds them all before any test runs.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Kills the child process when dropped, so a failing test leaves no server.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The router function's binary `exe` as Lambda starts it, attached to
/// `cargo lambda watch`'s Runtime API on `port` as `switchyard-lambda`, with
/// `env` and its stderr written to `log`.
pub fn router_function(
    exe: &std::path::Path,
    port: u16,
    env: &[(String, String)],
    log: &std::path::Path,
) -> Killed {
    let mut cmd = std::process::Command::new(exe);
    cmd.env(
        "AWS_LAMBDA_RUNTIME_API",
        format!("http://127.0.0.1:{port}/.rt/switchyard-lambda"),
    )
    .env("AWS_LAMBDA_FUNCTION_NAME", "switchyard-lambda")
    .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    .envs(env.iter().map(|(k, v)| (k, v)))
    // Its stdout (the EMF metric lines) beside the log, as `<log>.out`.
    .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
    .stderr(std::fs::File::create(log).unwrap());
    Killed(cmd.spawn().unwrap())
}

/// A tag no other run of any test shares (`<pid>-<nanoseconds>`), for names
/// in the emulator, which outlives a test run.
pub fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// A function in moto's Lambda with two versions, and `function`'s route in
/// `store`: the `synthetic-header` policy, synthetic mode, the first version
/// stable and the second the candidate, dispatched to it by `lambda`.
/// Returns `(stable, candidate)`.
pub fn lambda_route_with_two_versions(
    store: &str,
    function: &str,
    target: &str,
    dir: &std::path::Path,
) -> (String, String) {
    let versions: Vec<String> = serde_json::from_value(
        moto_lambda(&["setup", aws::endpoint(), "us-east-1", target])["versions"].clone(),
    )
    .unwrap();
    publish_synthetic_header(
        store,
        function,
        &serde_json::json!({
            "mode": "synthetic",
            "versions": {"stable": versions[0], "candidate": versions[1]},
            "dispatch": {"type": "lambda", "function-name": target},
        }),
        dir,
    );
    (versions[0].clone(), versions[1].clone())
}

/// Runs `host/test-support/support/moto_lambda.py` (boto3 against moto's Lambda)
/// and parses its JSON output.
pub fn moto_lambda(args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("host/test-support/support/moto_lambda.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "moto_lambda.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A free loopback port (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`, failing the test after
/// `timeout` with `what` did not start.
pub fn wait_for_port(port: u16, what: &str, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start on port {port} within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs the `switchyard` CLI against `store`; fails the test when it fails.
pub fn switchyard_cli(store: &str, args: &[&str]) {
    switchyard_json(store, args);
}

/// Runs the `switchyard` CLI against `store` and parses what it prints
/// (JSON); fails the test when it fails.
pub fn switchyard_json(store: &str, args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(workspace_bin("switchyard"))
        .args(args)
        .env("SWITCHYARD_STORE", store)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// `switchyard publish` of `policy` for `function` with the route config
/// `config` (JSON text, written to a file beside the store's), plus `more`
/// flags; returns what publish prints.
pub fn publish_route(
    store: &str,
    function: &str,
    policy: &str,
    config: &str,
    more: &[&str],
) -> serde_json::Value {
    let path = std::env::temp_dir().join(format!(
        "switchyard-route-{}-{function}-{}.json",
        std::process::id(),
        free_port()
    ));
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    let args = [
        &[
            "publish",
            "--function",
            function,
            "--policy",
            policy,
            "--config",
            &path,
        ][..],
        more,
    ]
    .concat();
    let out = switchyard_json(store, &args);
    let _ = std::fs::remove_file(&path);
    out
}

/// `cargo lambda watch --only-lambda-apis` (PyPI `cargo-lambda`) serving
/// the Runtime, Extensions and Invoke APIs on a free port, for the binaries
/// of the Cargo project in `dir` (watch only invokes functions named like
/// one of its binaries).
pub fn cargo_lambda_watch(dir: &std::path::Path) -> (Killed, u16) {
    cargo_lambda_watch_on(dir, free_port())
}

/// [`cargo_lambda_watch`] on a given port.
pub fn cargo_lambda_watch_on(dir: &std::path::Path, port: u16) -> (Killed, u16) {
    let child = std::process::Command::new(
        std::env::var("CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into()),
    )
    .args([
        "lambda",
        "watch",
        "--only-lambda-apis",
        "-A",
        "127.0.0.1",
        "-P",
    ])
    .arg(port.to_string())
    .current_dir(dir)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("cargo-lambda runs (pip install --no-deps cargo-lambda==1.9.2)");
    let child = Killed(child);
    wait_for_port(
        port,
        "cargo lambda watch",
        std::time::Duration::from_secs(60),
    );
    (child, port)
}

/// Invokes `function` through `cargo lambda watch`'s Invoke API on `port`
/// with an API Gateway HTTP API (2.0) event for `method path` carrying
/// `headers`; returns what the function answered, raw.
pub fn invoke_http_event(
    port: u16,
    function: &str,
    method: &str,
    path: &str,
    headers: serde_json::Value,
) -> Vec<u8> {
    let event = serde_json::json!({
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {"http": {"method": method}},
        "isBase64Encoded": false,
    });
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "-X", "POST", "-d"])
        .arg(event.to_string())
        .arg(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations"
        ))
        .output()
        .unwrap();
    out.stdout
}

/// Runs `check` every 50 ms until it gives `Ok`, failing the test after
/// `timeout` with `what` and the last `Err` (what was seen instead).
pub fn eventually<T>(
    timeout: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if std::time::Instant::now() >= deadline => {
                panic!("{what} within {timeout:?}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Publishes the `synthetic-header` policy for `function` with `route` as
/// its route config (written to a file in `dir`) to `store`.
pub fn publish_synthetic_header(
    store: &str,
    function: &str,
    route: &serde_json::Value,
    dir: &std::path::Path,
) {
    let file = dir.join(format!("{function}.route.json"));
    std::fs::write(&file, route.to_string()).unwrap();
    switchyard_cli(
        store,
        &[
            "publish",
            "--function",
            function,
            "--policy",
            switchyard_test_artifacts::SYNTHETIC_HEADER,
            "--config",
            file.to_str().unwrap(),
        ],
    );
}

/// A fresh Ed25519 key pair in `dir`, made by OpenSSL as a team would make
/// one: `(<name>.pem, <name>.pub.pem)`, the PKCS#8 private key and its SPKI
/// public half.
pub fn ed25519_keys(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "ed25519".as_ref(),
        "-out".as_ref(),
        private.as_os_str(),
    ]);
    run(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        private.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    (private, public)
}

/// An upstream standing in for a function version that answers every
/// request with the request's head (its request line and the headers it
/// received, names lower-cased) as the body. Returns its base URL.
pub fn echo_head_upstream() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let (mut head, mut line) = (String::new(), String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push_str(&line.to_ascii_lowercase());
                line.clear();
            }
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
                head.len()
            );
        }
    });
    url
}

/// A real OTLP/HTTP trace receiver on loopback
/// (`support/otlp_receiver.py`, decoding with `opentelemetry-proto`), and
/// its base URL; `GET <url>/spans` lists what it received.
pub fn otlp_receiver() -> (Killed, String) {
    use std::io::BufRead;
    let script = repo_root().join("host/test-support/support/otlp_receiver.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| {
        panic!("the OTLP receiver did not start (pip install opentelemetry-proto): {line:?}")
    });
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

/// `curl -s ARGS`: the body.
pub fn curl(args: &[&str]) -> String {
    let o = std::process::Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One request with curl: `(status, body)` (status 0 when none came).
pub fn call(url: &str, args: &[&str]) -> (u16, String) {
    let out = curl(&[&["-w", "\n%{http_code}"][..], args, &[url]].concat());
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls `ready` every 50 ms until it holds, failing the test with `what`
/// after 30 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A running `switchyard serve` (killed when dropped).
pub struct Served {
    _child: Killed,
    /// The public listener's port.
    pub port: u16,
    /// The admin listener's port.
    pub admin: u16,
    log: std::path::PathBuf,
}

impl Served {
    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// What it wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The file its stdout goes to (e.g. `--emf-namespace`'s lines).
    pub fn stdout_path(&self) -> std::path::PathBuf {
        self.log.with_extension("out")
    }

    /// The value of one series in its `/metrics` (0 when absent), e.g.
    /// `switchyard_fallback_total{function="payments"}`.
    pub fn metric(&self, series: &str) -> u64 {
        curl(&[&self.admin_url("/metrics")])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Starts `switchyard serve --store STORE ARGS` with environment `env`, on
/// free public and admin ports on loopback; its stderr goes to a log file.
pub fn serve(store: &str, args: &[&str], env: &[(&str, &str)]) -> Served {
    serve_by(
        std::process::Command::new(workspace_bin("switchyard")),
        store,
        args,
        env,
    )
}

/// [`serve`] with an open-file limit of `files` (soft and hard), set by
/// util-linux's `prlimit` as `ulimit -n` in its shell would.
pub fn serve_with_open_files(
    files: u64,
    store: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Served {
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--nofile={files}:{files}"))
        .arg("--")
        .arg(workspace_bin("switchyard"));
    serve_by(cmd, store, args, env)
}

fn serve_by(
    mut cmd: std::process::Command,
    store: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Served {
    let (port, admin) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!(
        "switchyard-serve-{}-{port}.log",
        std::process::id()
    ));
    cmd.args(["serve", "--store", store])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(args)
        .stdout(std::fs::File::create(log.with_extension("out")).expect("an output file"))
        .stderr(std::fs::File::create(&log).expect("a log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Served {
        _child: Killed(cmd.spawn().expect("switchyard serve starts")),
        port,
        admin,
        log,
    }
}
