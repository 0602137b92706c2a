//! A local AWS API emulator (moto in server mode) for store and Lambda tests. `.ci/run`
//! starts one and sets `AWS_ENDPOINT_URL`; without it, the first test that
//! needs it starts `python3 -m moto.server` on a free loopback port, watched
//! so it exits with the test process.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The emulator's endpoint URL; the AWS environment variables are set so
/// that `aws-config` reaches it with dummy credentials.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        // SAFETY (set_var): called once, under OnceLock, before any test
        // in this process builds an AWS client.
        let set = |k: &str, v: &str| unsafe { std::env::set_var(k, v) };
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            set("AWS_ACCESS_KEY_ID", "test");
            set("AWS_SECRET_ACCESS_KEY", "test");
        }
        if std::env::var_os("AWS_REGION").is_none() {
            set("AWS_REGION", "us-east-1");
        }
        if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
            return url;
        }
        let (url, _watchdog) = start_moto();
        set("AWS_ENDPOINT_URL", &url);
        url
    })
}

/// Starts a moto server of its own on a free loopback port; returns its URL
/// and the pid of its watchdog shell (see [`kill_moto`]).
pub fn start_moto() -> (String, u32) {
    let port = super::free_port();
    let parent = std::process::id();
    // The watchdog shell kills moto once this test process is gone.
    let script = format!(
        "MOTO_RECORDER_FILEPATH=\"${{TMPDIR:-/tmp}}/switchyard-moto-recording.{port}\" \
         python3 -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null"
    );
    // Never waited for: the watchdog outlives this call by design and ends
    // itself (and moto) once the test process is gone.
    #[allow(clippy::zombie_processes)]
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start moto (pip install 'moto[server]')");
    super::wait_for_port(
        port,
        "moto (pip install 'moto[server]')",
        Duration::from_secs(30),
    );
    (format!("http://127.0.0.1:{port}"), child.id())
}

/// Kills the moto server whose watchdog shell is `watchdog`.
pub fn kill_moto(watchdog: u32) {
    let _ = Command::new("pkill")
        .args(["-P", &watchdog.to_string()])
        .status();
}
