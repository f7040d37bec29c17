//! egress and cred-proxy as real processes on loopback, with a real HTTPS origin, curl and
//! Python `requests` as the agent, and the bottle CA made by the operator's own code.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/origin.rs"]
mod origin;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_operator::contract::config::HeaderInjection;
use bottle_operator::contract::config::cred_proxy::{CredProxyConfig, CredRoute};
use bottle_operator::contract::config::egress::{EgressConfig, EgressRoute};
use control_plane::{free_port, kubelet_write, spawn_tied};
use serde_json::Value;

struct Bench {
    dir: tempfile::TempDir,
    origin: origin::Origin,
    ca_cert: PathBuf,
    ca_key: PathBuf,
}

impl Bench {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin::start(dir.path()).await;
        let ca = bottle_operator::operator::render::ca::generate("test", "bottle").unwrap();
        let (ca_cert, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        std::fs::write(&ca_cert, &ca.cert_pem).unwrap();
        std::fs::write(&ca_key, &ca.key_pem).unwrap();
        // As mounted in the Pod; pipelock refuses a CA key others can read.
        std::fs::set_permissions(&ca_key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        kubelet_write(&dir.path().join("secrets"), &[("token", "s3cret-token\n")]);
        Self {
            dir,
            origin,
            ca_cert,
            ca_key,
        }
    }

    fn token_file(&self) -> String {
        self.dir.path().join("secrets/token").display().to_string()
    }

    fn egress_config(&self, routes: Vec<EgressRoute>, passthrough: &[&str]) -> EgressConfig {
        EgressConfig {
            listen: format!("127.0.0.1:{}", free_port()),
            admin_listen: format!("127.0.0.1:{}", free_port()),
            upstream_proxy: None,
            ca_cert: self.ca_cert.display().to_string(),
            ca_key: self.ca_key.display().to_string(),
            ports: vec![443, self.origin.port],
            allow: vec![],
            passthrough: passthrough.iter().map(|h| h.parse().unwrap()).collect(),
            routes,
        }
    }

    fn default_routes(&self) -> Vec<EgressRoute> {
        vec![EgressRoute {
            host: "localhost".parse().unwrap(),
            paths: vec![
                "/allowed/".into(),
                "/sse".into(),
                "/ws".into(),
                "/release".into(),
            ],
            auth: Some(HeaderInjection {
                header: "Authorization".into(),
                scheme: Some("Bearer".into()),
                token_file: self.token_file(),
            }),
        }]
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.origin.port)
    }
}

/// A sidecar process; killed on drop, its log printed when the test failed.
struct Sidecar {
    child: Child,
    listen: String,
    admin: String,
    config_dir: PathBuf,
    log: PathBuf,
}

impl Sidecar {
    async fn start(
        b: &Bench,
        kind: &str,
        file: &str,
        yaml: String,
        listen: &str,
        admin: &str,
    ) -> Self {
        let config_dir = b.dir.path().join(format!("config-{kind}-{}", free_port()));
        kubelet_write(&config_dir, &[(file, &yaml)]);
        let log = b.dir.path().join(format!("{kind}-{}.log", free_port()));
        let child = spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
                .args([kind, "--config"])
                .arg(config_dir.join(file))
                // The origin's CA stands in for the public roots (rustls-native-certs reads it).
                .env("SSL_CERT_FILE", &b.origin.ca_file)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .unwrap();
        let s = Self {
            child,
            listen: listen.into(),
            admin: admin.into(),
            config_dir,
            log,
        };
        s.wait_ready().await;
        s
    }

    async fn egress(b: &Bench, cfg: &EgressConfig) -> Self {
        Self::start(
            b,
            "egress",
            "egress.yaml",
            serde_norway::to_string(cfg).unwrap(),
            &cfg.listen,
            &cfg.admin_listen,
        )
        .await
    }

    async fn cred_proxy(b: &Bench, cfg: &CredProxyConfig) -> Self {
        Self::start(
            b,
            "cred-proxy",
            "cred-proxy.yaml",
            serde_norway::to_string(cfg).unwrap(),
            &cfg.listen,
            &cfg.admin_listen,
        )
        .await
    }

    async fn wait_ready(&self) {
        let t = Instant::now();
        while tokio::net::TcpStream::connect(&self.listen).await.is_err()
            || tokio::net::TcpStream::connect(&self.admin).await.is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "sidecar did not start:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn proxy(&self) -> String {
        format!("http://{}", self.listen)
    }

    async fn admin_get(&self, path: &str) -> String {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", &format!("http://{}{path}", self.admin)])
            .output()
            .await
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    async fn status(&self) -> Value {
        serde_json::from_str(&self.admin_get("/status").await).unwrap()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sidecar log ---\n{}", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl; returns (HTTP status, body). A refused CONNECT reports the CONNECT status;
/// 0 means no HTTP response at all.
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{http_connect}",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (code, connect) = codes.split_once(' ').unwrap_or((codes, "0"));
    let (code, connect): (u16, u16) = (
        code.trim().parse().unwrap_or(0),
        connect.trim().parse().unwrap_or(0),
    );
    let code = if code == 0 && connect >= 300 {
        connect
    } else {
        code
    };
    if code == 0 {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (code, body.to_string())
}

async fn via(e: &Sidecar, b: &Bench, extra: &[&str], url: &str) -> (u16, String) {
    let proxy = e.proxy();
    let mut args = vec!["--proxy", &proxy, "--cacert", b.ca_cert.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args).await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_intercepts_injects_the_route_credential_and_refuses_the_rest() {
    let b = Bench::new().await;
    let e = Sidecar::egress(&b, &b.egress_config(b.default_routes(), &[])).await;

    // Allowed path: intercepted (curl trusts only the bottle CA), agent credential replaced.
    for http in ["--http1.1", "--http2"] {
        let (code, body) = via(
            &e,
            &b,
            &[
                http,
                "-H",
                "Authorization: Bearer agent-made-up",
                "-H",
                "Proxy-Authorization: Basic c211Z2dsZWQ=",
            ],
            &b.url("/allowed/x?q=1"),
        )
        .await;
        assert_eq!(code, 200, "{http}: {body}");
        let echo = json(&body);
        assert_eq!(echo["headers"]["authorization"], "Bearer s3cret-token");
        assert!(
            echo["headers"].get("proxy-authorization").is_none(),
            "Proxy-Authorization must not reach the origin"
        );
        assert_eq!(echo["path"], "/allowed/x");
        // The origin offers h2; egress speaks to it what the agent spoke to egress.
        let want = if http == "--http2" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(echo["version"], want, "{http}: the upstream protocol");
        assert!(echo["uri"].as_str().unwrap().ends_with("/allowed/x?q=1"));
    }

    // Path not in the route.
    let (code, body) = via(&e, &b, &[], &b.url("/secret")).await;
    assert_eq!(code, 403);
    assert!(
        body.contains("path /secret is not allowed for host localhost"),
        "{body}"
    );
    // The token never shows up in what the agent sees or in the log.
    assert!(!body.contains("s3cret"));
    assert!(!e.logs().contains("s3cret"), "token leaked into the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_attack_suite() {
    let b = Bench::new().await;
    let e = Sidecar::egress(&b, &b.egress_config(b.default_routes(), &[])).await;
    let port = b.origin.port;
    let p = e.proxy();

    // Absolute-form request to a host with no route.
    let (code, body) = curl(&["--proxy", &p, "http://evil.example/"]).await;
    assert_eq!(
        (code, body.contains("no route for host evil.example")),
        (403, true),
        "{body}"
    );
    // Absolute-form to an allowed host whose Host header names another.
    let (code, body) = curl(&[
        "--proxy",
        &p,
        "-H",
        "Host: evil.example",
        &format!("http://localhost:{port}/allowed/x"),
    ])
    .await;
    assert_eq!(
        (code, body.contains("inside a tunnel to localhost")),
        (403, true),
        "{body}"
    );
    // Host header differing from the CONNECT target.
    let (code, body) = via(
        &e,
        &b,
        &["--http1.1", "-H", "Host: evil.example"],
        &b.url("/allowed/x"),
    )
    .await;
    assert_eq!(
        (code, body.contains("request for host evil.example")),
        (403, true),
        "{body}"
    );
    // Encoded and double-encoded traversal.
    for (path, reason) in [
        ("/allowed/%2e%2e/secret", "path /secret is not allowed"),
        ("/allowed/../secret", "path /secret is not allowed"),
        ("/allowed/%252e%252e/secret", "ambiguously encoded"),
        ("/allowed%2f..%2fsecret", "ambiguously encoded"),
    ] {
        let (code, body) = via(&e, &b, &["--path-as-is"], &b.url(path)).await;
        assert_eq!((code, body.contains(reason)), (403, true), "{path}: {body}");
    }
    // Upper-case and trailing-dot host names are the same host.
    let (code, body) = via(&e, &b, &[], &format!("https://LOCALHOST.:{port}/allowed/y")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["headers"]["authorization"],
        "Bearer s3cret-token"
    );
    // IP literals, v4 and v6, are never routed.
    for target in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let (code, _) = curl(&[
            "--proxy",
            &p,
            "-p",
            "--cacert",
            b.ca_cert.to_str().unwrap(),
            &format!("https://{target}/allowed/x"),
        ])
        .await;
        assert_eq!(code, 403, "{target}");
        assert!(e.logs().contains("ip_literal"));
    }
    // CONNECT to a port the bottle does not use.
    let (code, _) = via(&e, &b, &[], "https://localhost:8444/allowed/x").await;
    assert_eq!(code, 403);
    assert!(e.logs().contains("port 8444 is not allowed"));
    // Oversized headers are refused and never forwarded: 1 MiB over HTTP/1.1 (raw socket
    // below, curl will not send that much), 100 KiB over HTTP/2.
    let hdr_file = b.dir.path().join("big-header");
    std::fs::write(&hdr_file, format!("X-Big: {}", "a".repeat(100 * 1024))).unwrap();
    let at = format!("@{}", hdr_file.display());
    let (code, _) = via(&e, &b, &["--http2", "-H", &at], &b.url("/allowed/x")).await;
    assert!(
        code == 431 || code == 0,
        "HTTP/2 oversized header got {code}"
    );
    // Ambiguous framing and SNI that disagrees with the CONNECT target, with raw sockets.
    let script = format!(
        r#"
import socket, ssl, sys
def tunnel(sni):
    s = socket.create_connection(("127.0.0.1", {proxy_port}))
    s.sendall(b"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile="{ca}")
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(s, server_hostname=sni)
t = tunnel("localhost")
# CL.TE smuggling: Content-Length covers the chunk terminator and a second request
# rides behind. Transfer-Encoding wins (RFC 9112): the first request has an empty body,
# and the connection is closed after it, so the hidden request is never read.
hidden = b"GET /secret HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
t.sendall(b"POST /allowed/x HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: " + str(5 + len(hidden)).encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden)
got = b""
while got.count(b"HTTP/1.1 ") < 2:
    chunk = t.recv(65536)
    if not chunk:
        break
    got += chunk
heads = [l.decode() for l in got.split(b"\r\n") if l.startswith(b"HTTP/1.1 ")]
print("clte", heads, b'"body_len":0' in got)
t = tunnel("localhost")
# egress answers 431 and closes as soon as the head is too large, possibly before the
# whole megabyte is written: a failed send is expected, the answer is what counts.
try:
    t.sendall(b"GET /allowed/x HTTP/1.1\r\nHost: localhost:{port}\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
except OSError:
    pass
print("big", t.recv(4096).split(b"\r\n")[0].decode())
t = tunnel("evil.example")
t.sendall(b"GET /allowed/x HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
try:
    print("sni", repr(t.recv(4096)))
except Exception as e:
    print("sni", type(e).__name__)
"#,
        proxy_port = e.listen.rsplit(':').next().unwrap(),
        ca = b.ca_cert.display()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("clte ['HTTP/1.1 200 OK'] True"),
        "CL.TE smuggling: {text}"
    );
    assert!(
        !e.logs().contains("/secret\",\"status\":200"),
        "the hidden request must not be forwarded"
    );
    assert!(text.contains("big HTTP/1.1 431"), "1 MiB header: {text}");
    assert!(
        text.contains("sni b''") || text.contains("sni SSL") || text.contains("sni Connection"),
        "SNI mismatch must get no answer: {text}"
    );
    assert!(e.logs().contains("sni_mismatch"));

    // Every refusal was counted, none as allowed traffic to the origin.
    let metrics = e.admin_get("/metrics").await;
    let denied: u64 = metrics
        .lines()
        .find(|l| l.starts_with("egress_requests_total{outcome=\"denied\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(denied >= 10, "denied count {denied}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_hosts_are_tunnelled_without_interception() {
    let b = Bench::new().await;
    let e = Sidecar::egress(&b, &b.egress_config(vec![], &["localhost"])).await;
    // The origin's own certificate arrives: curl trusts only the origin CA here.
    let (code, body) = curl(&[
        "--proxy",
        &e.proxy(),
        "--cacert",
        b.origin.ca_file.to_str().unwrap(),
        &b.url("/anything"),
    ])
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(json(&body)["headers"].get("authorization").is_none());
    // And the bottle CA does not verify it: nothing was intercepted.
    let (code, _) = via(&e, &b, &[], &b.url("/anything")).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_requests_streams_server_sent_events_and_upgrades_websockets() {
    let b = Bench::new().await;
    let e = Sidecar::egress(&b, &b.egress_config(b.default_routes(), &[])).await;
    let script = format!(
        r#"
import requests, socket, ssl
proxies = {{"https": "{proxy}"}}
r = requests.get("{url}/allowed/py", proxies=proxies, verify="{ca}")
print("status", r.status_code, r.json()["headers"]["authorization"])
# Streaming: event two is only sent after /release, which we call after reading event one.
s = requests.get("{url}/sse", proxies=proxies, verify="{ca}", stream=True, timeout=10)
lines = s.iter_lines()
first = next(l for l in lines if l)
print("first", first.decode())
requests.get("{url}/release", proxies=proxies, verify="{ca}")
print("second", next(l for l in lines if l).decode())
# WebSocket upgrade: 101, then bytes flow both ways through the tunnel.
sock = socket.create_connection(("127.0.0.1", {proxy_port}))
sock.sendall(b"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
assert sock.recv(4096).startswith(b"HTTP/1.1 200")
ctx = ssl.create_default_context(cafile="{ca}")
ctx.set_alpn_protocols(["http/1.1"])
t = ctx.wrap_socket(sock, server_hostname="localhost")
t.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(4096)
print("ws", head.split(b"\r\n")[0].decode())
t.sendall(b"ping-through-the-tunnel")
got = b""
while len(got) < 23:
    got += t.recv(4096)
print("echo", got.decode())
"#,
        proxy = e.proxy(),
        url = format!("https://localhost:{}", b.origin.port),
        port = b.origin.port,
        proxy_port = e.listen.rsplit(':').next().unwrap(),
        ca = b.ca_cert.display()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status 200 Bearer s3cret-token"), "{text}");
    assert!(
        text.contains("first data: one") && text.contains("second data: two"),
        "{text}"
    );
    assert!(
        text.contains("ws HTTP/1.1 101") && text.contains("echo ping-through-the-tunnel"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_reloads_live_rejects_bad_versions_and_keeps_open_streams() {
    let b = Bench::new().await;
    let mut cfg = b.egress_config(b.default_routes(), &[]);
    let e = Sidecar::egress(&b, &cfg).await;
    let first_hash = e.status().await["config_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(via(&e, &b, &[], &b.url("/new/x")).await.0, 403);

    // A stream held open across the reload.
    let held = {
        let (proxy, ca, url) = (e.proxy(), b.ca_cert.display().to_string(), b.url("/sse"));
        tokio::spawn(async move { curl(&["-N", "--proxy", &proxy, "--cacert", &ca, &url]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    cfg.routes[0].paths.push("/new/".into());
    kubelet_write(
        &e.config_dir,
        &[("egress.yaml", &serde_norway::to_string(&cfg).unwrap())],
    );
    let t = Instant::now();
    while e.status().await["config_hash"] == first_hash.as_str() {
        assert!(t.elapsed() < Duration::from_secs(10), "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(via(&e, &b, &[], &b.url("/new/x")).await.0, 200);

    // An invalid version is refused; the previous one keeps serving.
    kubelet_write(
        &e.config_dir,
        &[("egress.yaml", "listen: [this is not a config\n")],
    );
    let t = Instant::now();
    while e.status().await["last_error"].is_null() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "bad config not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(via(&e, &b, &[], &b.url("/new/x")).await.0, 200);
    let metrics = e.admin_get("/metrics").await;
    assert!(
        metrics.contains("egress_config_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("egress_config_reloads_total 1"),
        "{metrics}"
    );

    // Token rotation reaches the next request without a restart.
    kubelet_write(
        &b.dir.path().join("secrets"),
        &[("token", "rotated-token\n")],
    );
    kubelet_write(
        &e.config_dir,
        &[("egress.yaml", &serde_norway::to_string(&cfg).unwrap())],
    );
    let t = Instant::now();
    loop {
        let (_, body) = via(&e, &b, &[], &b.url("/allowed/r")).await;
        if json(&body)["headers"]["authorization"] == "Bearer rotated-token" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "token not rotated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The held stream was never cut: it completes with both events once released.
    curl(&[
        "--proxy",
        &e.proxy(),
        "--cacert",
        b.ca_cert.to_str().unwrap(),
        &b.url("/release"),
    ])
    .await;
    let (code, body) = held.await.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("data: one") && body.contains("data: two"),
        "{body}"
    );
}

fn cred_config(b: &Bench, upstream_proxy: Option<String>) -> CredProxyConfig {
    CredProxyConfig {
        listen: format!("127.0.0.1:{}", free_port()),
        admin_listen: format!("127.0.0.1:{}", free_port()),
        upstream_proxy,
        ca_cert: b.ca_cert.display().to_string(),
        routes: vec![CredRoute {
            name: "api".into(),
            upstream: format!("https://localhost:{}/base", b.origin.port)
                .try_into()
                .unwrap(),
            auth: HeaderInjection {
                header: "x-api-key".into(),
                scheme: None,
                token_file: b.token_file(),
            },
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cred_proxy_injects_refuses_git_push_and_goes_through_the_next_proxy() {
    let b = Bench::new().await;
    let c = Sidecar::cred_proxy(&b, &cred_config(&b, None)).await;
    let base = format!("http://{}", c.listen);

    // What Claude Code sends in a bottle: its placeholder bearer token and a made-up key.
    let placeholder = format!(
        "Authorization: Bearer {}",
        bottle_operator::operator::render::pod::AGENT_TOKEN_PLACEHOLDER
    );
    let (code, body) = curl(&[
        "-H",
        "x-api-key: agent-made-up",
        "-H",
        &placeholder,
        &format!("{base}/api/v1/messages?beta=1"),
        "-d",
        "{}",
    ])
    .await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-api-key"], "s3cret-token");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the agent's placeholder must not reach upstream: {echo}"
    );
    assert_eq!(echo["path"], "/base/v1/messages");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["authority"], format!("localhost:{}", b.origin.port));
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "straight to the origin, the agent's HTTP/1.1 goes on as HTTP/1.1"
    );

    let (code, body) = curl(&[&format!(
        "{base}/api/org/repo.git/info/refs?service=git-receive-pack"
    )])
    .await;
    assert_eq!((code, body.contains("git-gate")), (403, true), "{body}");
    let (code, _) = curl(&[
        "-X",
        "POST",
        &format!("{base}/api/org/repo.git/git-receive-pack"),
    ])
    .await;
    assert_eq!(code, 403);
    let (code, _) = curl(&[&format!(
        "{base}/api/org/repo.git/info/refs?service=git-upload-pack"
    )])
    .await;
    assert_eq!(code, 200, "fetch stays allowed");
    let (code, body) = curl(&[&format!("{base}/nope/x")]).await;
    assert_eq!(
        (code, body.contains("no cred-proxy route named \"nope\"")),
        (404, true)
    );

    // Through a real intercepting next hop (an egress instance with the bottle CA, as
    // pipelock is in the Pod): the request still arrives, credential injected, and the next
    // hop saw it.
    let mut hop = b.egress_config(vec![], &[]);
    hop.allow = vec!["localhost".parse().unwrap()];
    let hop = Sidecar::egress(&b, &hop).await;
    let c2 = Sidecar::cred_proxy(&b, &cred_config(&b, Some(hop.proxy()))).await;
    let (code, body) = curl(&[&format!("http://{}/api/chained", c2.listen)]).await;
    assert_eq!(code, 200, "{body}\n{}", hop.logs());
    assert_eq!(json(&body)["headers"]["x-api-key"], "s3cret-token");
    // Toward a next proxy it is h2 (pipelock drops reused HTTP/1.1 connections); the hop,
    // an egress, passes on the protocol it was spoken to.
    assert_eq!(json(&body)["version"], "HTTP/2.0", "{body}");
    assert!(
        hop.logs().contains("/base/chained"),
        "the next hop must have seen the request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelock_config_arrives_by_rename_so_pipelocks_file_watch_fires() {
    use notify::Watcher;
    let dir = tempfile::tempdir().unwrap();
    let policy = bottle_operator::contract::model::Policy::from_spec(&Default::default()).unwrap();
    let mut cfg = bottle_operator::operator::render::config_map::pipelock_config(&policy);
    let src_dir = dir.path().join("configmap");
    kubelet_write(
        &src_dir,
        &[("pipelock.yaml", &serde_norway::to_string(&cfg).unwrap())],
    );
    let target_dir = dir.path().join("pipelock");
    let target = target_dir.join("pipelock.yaml");
    let log = dir.path().join("sync.log");
    let mut child = spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
            .args(["config-sync", "--from"])
            .arg(src_dir.join("pipelock.yaml"))
            .arg("--to")
            .arg(&target)
            .stderr(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    let t = Instant::now();
    while !target.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "first delivery missing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Watch the target directory the way pipelock does: events whose name is its file.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if let Ok(e) = e {
            let _ = tx.send(e);
        }
    })
    .unwrap();
    w.watch(&target_dir, notify::RecursiveMode::NonRecursive)
        .unwrap();

    cfg.api_allowlist.push("pypi.org".into());
    kubelet_write(
        &src_dir,
        &[("pipelock.yaml", &serde_norway::to_string(&cfg).unwrap())],
    );
    let t = Instant::now();
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an event on pipelock.yaml");
        if e.paths.iter().any(|p| p.file_name() == target.file_name()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        std::fs::read_to_string(&target)
            .unwrap()
            .contains("pypi.org")
    );

    // A version pipelock would reject (unknown key) never reaches it.
    kubelet_write(
        &src_dir,
        &[(
            "pipelock.yaml",
            "version: 1\nmode: strict\nsurprise: true\n",
        )],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = std::fs::read_to_string(&target).unwrap();
    assert!(delivered.contains("pypi.org") && !delivered.contains("surprise"));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("still serving the previous one")
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The real pipelock 2.3.0 on loopback, its config rendered by the operator's own code; killed
/// on drop, its log printed when the test failed.
struct Pipelock {
    child: Option<Child>,
    listen: String,
    log: PathBuf,
}

impl Pipelock {
    /// Starts pipelock with the config `render::config_map::pipelock_config` makes for a
    /// Bottle with `spec` (YAML), merged with `overrides` (YAML; each caller says why).
    async fn start(b: &Bench, spec: &str, overrides: &str) -> Self {
        let bin = control_plane::tools_bin()
            .map(|d| d.join("pipelock"))
            .unwrap_or_else(|e| panic!("the tool directory is unavailable: {e:#}"));
        assert!(
            bin.exists(),
            "pipelock is not built at {} (tests/tools/install.sh builds it); this test needs the real binary",
            bin.display()
        );
        let spec: bottle_operator::contract::api::BottleSpec =
            serde_norway::from_str(spec).unwrap();
        let policy = bottle_operator::contract::model::Policy::from_spec(&spec).unwrap();
        let mut cfg = serde_norway::to_value(
            bottle_operator::operator::render::config_map::pipelock_config(&policy),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        // The rendered config names the Pod's paths and port; here they are the test's.
        let local = format!(
            "fetch_proxy: {{listen: \"{listen}\"}}\n\
             tls_interception: {{ca_cert: \"{}\", ca_key: \"{}\"}}\n",
            b.ca_cert.display(),
            b.ca_key.display()
        );
        merge(&mut cfg, serde_norway::from_str(&local).unwrap());
        merge(&mut cfg, serde_norway::from_str(overrides).unwrap());
        let file = b.dir.path().join(format!("pipelock-{}.yaml", free_port()));
        // The Bottle names a public host (validation refuses loopback names, as pipelock
        // would); the test's origin is on loopback, so that one name is swapped afterwards.
        let text = serde_norway::to_string(&cfg)
            .unwrap()
            .replace("origin.example", "localhost");
        std::fs::write(&file, text).unwrap();
        let log = b.dir.path().join(format!("pipelock-{}.log", free_port()));
        let child = spawn_tied(
            Command::new(&bin)
                .args(["run", "--config"])
                .arg(&file)
                // pipelock re-originates TLS to the origin: Go reads its roots from here.
                .env("SSL_CERT_FILE", &b.origin.ca_file)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .unwrap();
        let p = Self {
            child: Some(child),
            listen,
            log,
        };
        let t = Instant::now();
        while tokio::net::TcpStream::connect(&p.listen).await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "pipelock did not start:\n{}",
                p.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    fn proxy(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills pipelock and waits until its port refuses connections.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(tokio::net::TcpStream::connect(&self.listen).await.is_err());
    }
}

impl Drop for Pipelock {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- pipelock log ---\n{}", self.logs());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
fn merge(base: &mut serde_norway::Value, over: serde_norway::Value) {
    match (base, over) {
        (serde_norway::Value::Mapping(b), serde_norway::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The test's own CONNECT to `proxy` (hyper's client, so headers and body of a refusal are
/// visible): status, headers, body (empty on 2xx).
async fn raw_connect(proxy: &str, target: &str) -> (u16, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = http::Request::connect(target)
        .header(http::header::HOST, target)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    if resp.status().is_success() {
        return (status, headers, String::new());
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one series (`name{labels}`) in Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A GitHub token shape pipelock's default DLP knows, built here so no scanner flags this
/// file. Tests send it in `X-Token`, one of the headers pipelock's default
/// `header_mode: sensitive` scans.
fn github_token() -> String {
    format!("ghp_{}", &"a1B2c3D4e5F6g7H8i9J0".repeat(2)[..36])
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_relays_pipelocks_refusals_to_the_agent_and_counts_them() {
    let b = Bench::new().await;
    // pipelock allows only localhost (the origin). `explain_blocks` is on so the test sees
    // pipelock's hint relayed; `ssrf.ip_allowlist` exempts the one loopback address the origin
    // listens on (pipelock refuses names resolving to loopback otherwise).
    let mut pl = Pipelock::start(
        &b,
        "egress: {allow: [origin.example]}",
        "explain_blocks: true\nssrf: {ip_allowlist: [\"127.0.0.1/32\"]}\n",
    )
    .await;
    // egress declares more than pipelock allows: the skewed pair.
    let mut routes = b.default_routes();
    routes[0].paths.push("/leak".into());
    routes.push(EgressRoute {
        host: "intercepted.example".parse().unwrap(),
        paths: vec!["/".into()],
        auth: None,
    });
    let mut cfg = b.egress_config(routes, &["passthrough.example"]);
    cfg.upstream_proxy = Some(pl.proxy());
    cfg.ports.push(80); // for the absolute-form http:// request below
    let e = Sidecar::egress(&b, &cfg).await;

    // Positive control: a host both allow reaches the origin through pipelock's interception,
    // the credential injected by egress.
    let (code, body) = via(&e, &b, &[], &b.url("/allowed/ok")).await;
    assert_eq!(code, 200, "{body}\n{}", e.logs());
    assert_eq!(
        json(&body)["headers"]["authorization"],
        "Bearer s3cret-token"
    );
    assert!(
        b.origin.saw("GET /allowed/ok"),
        "the origin records requests"
    );

    // Passthrough host pipelock lacks: the agent's CONNECT itself is answered 403, with
    // pipelock's reason and hint and the header naming it.
    let (code, headers, body) = raw_connect(&e.listen, "passthrough.example:443").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(headers["x-bottle-denied-by"], "pipelock");
    assert!(
        body.contains("pipelock refused the tunnel for CONNECT passthrough.example:443")
            && body.contains("domain not in allowlist: passthrough.example"),
        "{body}"
    );
    assert!(
        headers["x-pipelock-hint"]
            .to_str()
            .unwrap()
            .contains("allowlist"),
        "{headers:?}"
    );
    // curl sees the CONNECT refused (not 200 and a reset).
    let (code, _) = via(&e, &b, &[], "https://passthrough.example/").await;
    assert_eq!(code, 403);

    // Intercepted host pipelock lacks: the CONNECT is egress's (200), the request gets 403.
    let (code, body) = via(
        &e,
        &b,
        &["-i", "--http1.1"],
        "https://intercepted.example/anything",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottle-denied-by: pipelock"),
        "{body}"
    );
    assert!(
        body.contains("pipelock refused the tunnel for GET intercepted.example/anything")
            && body.contains("domain not in allowlist: intercepted.example"),
        "{body}"
    );
    // Over HTTP/2 too (the refusal crosses the h2 client's error chain the same way).
    let (code, body) = via(&e, &b, &["--http2"], "https://intercepted.example/h2").await;
    assert_eq!(
        (code, body.contains("domain not in allowlist")),
        (403, true),
        "{body}"
    );
    // An absolute-form http:// request to it (egress tunnels it through pipelock too).
    let (code, body) = curl(&[
        "-i",
        "--proxy",
        &e.proxy(),
        "http://intercepted.example/plain",
    ])
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottle-denied-by: pipelock")
            && body.contains("CONNECT blocked: domain not in allowlist: intercepted.example"),
        "{body}"
    );
    // A WebSocket upgrade to that host: refused the same way (the HTTP/1.1-only client).
    let (code, body) = via(
        &e,
        &b,
        &[
            "-i",
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
        "https://intercepted.example/ws",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottle-denied-by: pipelock"),
        "{body}"
    );

    // pipelock's own interception refusing an inner request (a token in a header: its header
    // DLP) reaches the agent as pipelock wrote it, marked, and never reaches the origin.
    let leak = format!("X-Token: {}", github_token());
    let (code, body) = via(&e, &b, &["-i", "-H", &leak], &b.url("/leak")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottle-denied-by: pipelock")
            && body.contains("blocked: "),
        "{body}"
    );
    assert!(!b.origin.saw("/leak"), "the origin must not receive it");

    // Control: egress's own refusal of an undeclared host carries no such header.
    let (code, headers, body) = raw_connect(&e.listen, "undeclared.example:443").await;
    assert_eq!(code, 403, "{body}");
    assert!(headers.get("x-bottle-denied-by").is_none(), "{headers:?}");
    assert!(
        body.contains("no route for host undeclared.example"),
        "{body}"
    );

    // pipelock itself logged the refusals, and egress logged host and reason at warn.
    assert!(
        pl.logs()
            .contains("domain not in allowlist: passthrough.example")
    );
    let warned = e.logs().lines().any(|l| {
        l.contains("WARN")
            && l.contains("passthrough.example")
            && l.contains("domain not in allowlist")
    });
    assert!(warned, "{}", e.logs());

    let m = e.admin_get("/metrics").await;
    // 2 CONNECTs (raw and curl), 4 requests (h1, h2, http://, WebSocket), 1 header DLP.
    assert_eq!(
        metric(&m, "egress_denials_total{by=\"pipelock\"}"),
        7,
        "{m}"
    );
    assert_eq!(metric(&m, "egress_denials_total{by=\"egress\"}"), 1, "{m}");
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"denied\"}"),
        8,
        "{m}"
    );
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"allowed\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"error\"}"),
        0,
        "{m}"
    );

    // pipelock stopped: 502 with a clear text, for a CONNECT and for a request, counted as error.
    pl.stop().await;
    let (code, headers, body) = raw_connect(&e.listen, "passthrough.example:443").await;
    assert_eq!(code, 502, "{body}");
    assert!(headers.get("x-bottle-denied-by").is_none());
    assert!(
        body.contains("the next proxy (pipelock) at") && body.contains("is unreachable"),
        "{body}"
    );
    let (code, body) = via(&e, &b, &[], &b.url("/allowed/down")).await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("is unreachable"), "{body}");
    let m = e.admin_get("/metrics").await;
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"error\"}"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "egress_denials_total{by=\"pipelock\"}"),
        7,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelocks_rate_limit_reaches_the_agent_as_429_on_a_passthrough_tunnel() {
    let b = Bench::new().await;
    // localhost is passthrough at both hops. A small per-host rate limit
    // (`fetch_proxy.monitoring.max_requests_per_minute`, 60 by default) so a few CONNECTs
    // exhaust it; the loopback exemption as in the test above.
    let _pl;
    let e = {
        let pl = Pipelock::start(
            &b,
            "egress: {passthrough: [origin.example]}",
            "fetch_proxy: {monitoring: {max_requests_per_minute: 3}}\n\
             ssrf: {ip_allowlist: [\"127.0.0.1/32\"]}\n",
        )
        .await;
        let mut cfg = b.egress_config(vec![], &["localhost"]);
        cfg.upstream_proxy = Some(pl.proxy());
        _pl = pl;
        Sidecar::egress(&b, &cfg).await
    };
    let origin_ca = b.origin.ca_file.to_str().unwrap();
    let mut passed = 0;
    let mut limited = None;
    // Bounded: the limit is 3, so the 4th CONNECT at the latest is refused.
    for i in 0..6 {
        let (code, body) = curl(&[
            "--proxy",
            &e.proxy(),
            "--cacert",
            origin_ca,
            &b.url(&format!("/pass/{i}")),
        ])
        .await;
        match code {
            // Spliced end to end: curl verified the origin's own certificate.
            200 => passed += 1,
            429 => {
                limited = Some(i);
                break;
            }
            other => panic!("request {i}: {other} {body}"),
        }
    }
    assert!(passed >= 1, "the positive control passed nothing");
    assert!(b.origin.saw("GET /pass/0"));
    assert!(limited.is_some(), "no 429 after {passed} requests");
    let (code, headers, body) =
        raw_connect(&e.listen, &format!("localhost:{}", b.origin.port)).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(headers["x-bottle-denied-by"], "pipelock");
    assert!(body.contains("rate limit exceeded for localhost"), "{body}");
    let m = e.admin_get("/metrics").await;
    assert_eq!(
        metric(&m, "egress_denials_total{by=\"pipelock\"}"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"error\"}"),
        0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "egress_requests_total{outcome=\"allowed\"}"),
        passed,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cred_proxy_relays_pipelocks_refusals_and_reports_a_dead_pipelock() {
    let b = Bench::new().await;
    // As above: pipelock allows localhost only; hint on; loopback origin exempted from SSRF.
    let mut pl = Pipelock::start(
        &b,
        "egress: {allow: [origin.example]}",
        "explain_blocks: true\nssrf: {ip_allowlist: [\"127.0.0.1/32\"]}\n",
    )
    .await;
    let mut cfg = cred_config(&b, Some(pl.proxy()));
    let mut skewed = cfg.routes[0].clone();
    skewed.name = "skewed".into();
    skewed.upstream = "https://denied.example/base"
        .to_string()
        .try_into()
        .unwrap();
    cfg.routes.push(skewed);
    let c = Sidecar::cred_proxy(&b, &cfg).await;
    let base = format!("http://{}", c.listen);

    // Positive control: through pipelock's interception to the origin, key injected.
    let (code, body) = curl(&[&format!("{base}/api/v1/ok")]).await;
    assert_eq!(code, 200, "{body}\n{}", c.logs());
    assert_eq!(json(&body)["headers"]["x-api-key"], "s3cret-token");
    assert!(b.origin.saw("GET /base/v1/ok"));

    // A route whose host pipelock lacks: pipelock's 403 and reason, marked.
    let (code, body) = curl(&["-i", &format!("{base}/skewed/v1/x")]).await;
    assert_eq!(code, 403, "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(
        lower.contains("x-bottle-denied-by: pipelock") && lower.contains("x-pipelock-hint:"),
        "{body}"
    );
    assert!(
        body.contains("domain not in allowlist: denied.example"),
        "{body}"
    );
    // pipelock's header DLP on the inner request: relayed, marked, origin untouched.
    let leak = format!("X-Token: {}", github_token());
    let (code, body) = curl(&["-i", "-H", &leak, &format!("{base}/api/leak")]).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottle-denied-by: pipelock"),
        "{body}"
    );
    assert!(!b.origin.saw("/leak"));
    // Control: cred-proxy's own refusal has no such header.
    let (code, body) = curl(&["-i", &format!("{base}/nope/x")]).await;
    assert_eq!(code, 404);
    assert!(
        !body.to_ascii_lowercase().contains("x-bottle-denied-by"),
        "{body}"
    );

    let m = c.admin_get("/metrics").await;
    assert_eq!(
        metric(&m, "cred_proxy_denials_total{by=\"pipelock\"}"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "cred_proxy_denials_total{by=\"cred_proxy\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "cred_proxy_requests_total{outcome=\"error\"}"),
        0,
        "{m}"
    );

    pl.stop().await;
    let (code, body) = curl(&[&format!("{base}/api/v1/down")]).await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("the next proxy (pipelock) at") && body.contains("is unreachable"),
        "{body}"
    );
    let m = c.admin_get("/metrics").await;
    assert_eq!(
        metric(&m, "cred_proxy_requests_total{outcome=\"error\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "cred_proxy_denials_total{by=\"pipelock\"}"),
        2,
        "{m}"
    );
}
