//! `switchyard serve` reaches an `https://` upstream (as every Lambda
//! function URL is) whose certificate comes from a private CA the test
//! makes, trusted through `SSL_CERT_FILE`; without that the upstream is
//! refused with a 502 that says why. Real TLS on loopback: rustls on both
//! sides, the proxy a real `switchyard serve` process.

use switchyard_test_support as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{Killed, workspace_bin};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A CA and a certificate it signed for `localhost` and 127.0.0.1: (CA PEM,
/// leaf chain, leaf key).
fn private_ca() -> (
    String,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .unwrap();
    (
        ca_cert.pem(),
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
}

/// Serves HTTPS on a loopback port: each answer names the upstream, the
/// path and the traffic tag it received.
async fn tls_upstream(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let tag = req
                            .headers()
                            .get("x-switchyard-traffic")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        let body = format!("tls-upstream path={} traffic={tag}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// `switchyard serve` on a free port; returns the process and its base URL
/// once it says it is listening.
fn serve(store: &str, ssl_cert_file: Option<&std::path::Path>) -> (Killed, String) {
    let mut cmd = Command::new(workspace_bin("switchyard"));
    cmd.args(["serve", "--store", store, "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "off"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(file) = ssl_cert_file {
        cmd.env("SSL_CERT_FILE", file);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("serve did not say it was listening ({e}): {line:?}"));
    (
        Killed(child),
        ready["listening"].as_str().unwrap().to_owned(),
    )
}

fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reaches_an_https_upstream_signed_by_a_private_ca() {
    let (ca_pem, chain, key) = private_ca();
    let port = tls_upstream(chain, key).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let store = format!("dir:{}", tmp.path().join("store").display());
    let route = serde_json::json!({
        "mode": "production",
        "versions": {"stable": "7"},
        "dispatch": {"type": "http", "urls": {"7": format!("https://localhost:{port}")}},
    });
    common::publish_synthetic_header(&store, "orders", &route, tmp.path());

    let trusted = {
        let (_serve, base) = serve(&store, Some(&ca_file));
        tokio::task::spawn_blocking(move || get(&format!("{base}/orders/api/1")))
            .await
            .unwrap()
    };
    assert_eq!(
        trusted,
        (
            200,
            "tls-upstream path=/api/1 traffic=production".to_owned()
        ),
        "through the private CA in SSL_CERT_FILE"
    );

    // The same upstream without the CA: refused, and the answer says why.
    let (_serve, base) = serve(&store, None);
    let (status, body) = tokio::task::spawn_blocking(move || get(&format!("{base}/orders/api/1")))
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("certificate"), "{body}");
}
