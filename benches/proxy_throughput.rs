//! Requests per second and latency through `egress`, side by side with no proxy, with
//! pipelock 2.3.0 alone and behind egress (the real bottle path: egress → pipelock, TLS
//! intercepted at both hops), and with mitmproxy doing the same TLS interception (what the
//! reference system used), against the same loopback HTTPS origin in one run; plus idle and
//! loaded RSS of each proxy. Then egress and cred-proxy straight to the origin under other
//! loads (64 connections, HTTP/2, a new connection per request, a 1 GiB download), each
//! beside a no-proxy anchor. Prints tables; asserts nothing about speed. Run with
//! `scripts/bench.sh proxy_throughput`.
//!
//! pipelock runs the config the operator renders for a Bottle allowing the origin's host,
//! changed only where a loopback benchmark must: its listener port, the CA paths, an SSRF
//! exemption for 127.0.0.0/8 (pipelock refuses loopback destinations, rightly, in a bottle)
//! and its per-host rate limit (`fetch_proxy.monitoring.max_requests_per_minute`, default 60,
//! where a CONNECT and every intercepted request each count) raised out of the way. One more
//! row keeps the default limit to show what it does to this load.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/origin.rs"]
mod origin;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_operator::contract::config::HeaderInjection;
use bottle_operator::contract::config::egress::{EgressConfig, EgressRoute};
use bottle_operator::pod::core::upstream::{self, Connector, UpstreamClient};
use bottle_operator::pod::core::{BoxError, full, init_crypto};
use control_plane::{free_port, spawn_tied, tools_bin};
use http_body_util::BodyExt;

const CONNECTIONS: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Result {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// The most frequent kind of error (an HTTP status, or the client's error), if any.
    top_error: Option<String>,
}

async fn load(client: UpstreamClient, url: String, duration: Duration, conns: usize) -> Result {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), Vec::<String>::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = http::Request::get(&url).body(full("")).unwrap();
                    // Bounded: one request a proxy never answers must not hold the row open.
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        let r = client.request(req).await?;
                        let status = r.status();
                        r.into_body().collect().await?;
                        Ok::<_, BoxError>(status)
                    });
                    match answer.await {
                        Ok(Ok(s)) if s.is_success() => lat.push(t.elapsed()),
                        Ok(Ok(s)) => errors.push(format!("HTTP {}", s.as_u16())),
                        Ok(Err(e)) => errors.push(format!("{e:?}").chars().take(160).collect()),
                        Err(_) => errors.push(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors.extend(e);
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Result {
        rps: all.len() as f64 / duration.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        errors: errors.len(),
        top_error: most_frequent(&errors),
    }
}

fn most_frequent(errors: &[String]) -> Option<String> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for e in errors {
        *counts.entry(e.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(e, n)| format!("{n}× {e}"))
}

fn client(proxy: Option<&str>, ca_files: &[&str]) -> UpstreamClient {
    let roots = upstream::roots(ca_files).unwrap();
    upstream::clients(Connector::new(proxy).unwrap(), roots).1 // HTTP/1.1: one request per connection at a time
}

/// How the clients of one load row talk to the proxy.
#[derive(Clone, Copy)]
enum Mode {
    /// HTTP/1.1 keep-alive, this many connections.
    KeepAlive(usize),
    /// HTTP/2 where TLS offers it: one connection, [`CONNECTIONS`] concurrent streams.
    Http2,
    /// A new connection (and, through egress, a new TLS handshake) for every request.
    NewConnection,
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::KeepAlive(n) => format!("{n} keep-alive HTTP/1.1 connections"),
            Mode::Http2 => format!("HTTP/2, {CONNECTIONS} streams on one connection"),
            Mode::NewConnection => format!("{CONNECTIONS} clients, a new connection per request"),
        }
    }

    fn conns(self) -> usize {
        match self {
            Mode::KeepAlive(n) => n,
            _ => CONNECTIONS,
        }
    }

    fn client(self, proxy: Option<&str>, ca_files: &[&str]) -> UpstreamClient {
        let roots = upstream::roots(ca_files).unwrap();
        let connector = Connector::new(proxy).unwrap();
        match self {
            Mode::KeepAlive(_) => upstream::clients(connector, roots).1,
            Mode::Http2 => upstream::clients(connector, roots).0,
            Mode::NewConnection => {
                let tls = rustls::ClientConfig::builder()
                    .with_root_certificates(std::sync::Arc::new(roots))
                    .with_no_client_auth();
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(https)
            }
        }
    }
}

/// One streamed download of [`DOWNLOAD_BYTES`] from `url` through `c`: MB/s, and the
/// proxy's RSS before and at its highest during the transfer (sampled every 50 ms).
async fn download(c: UpstreamClient, url: &str, pid: Option<u32>) -> (f64, u64, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let before = pid.map(|p| rss_kib(p, "VmRSS:")).unwrap_or(0);
    let peak = std::sync::Arc::new(AtomicU64::new(before));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = pid.map(|p| {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(p, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let t = Instant::now();
    let req = http::Request::get(url).body(full("")).unwrap();
    let mut body = c.request(req).await.unwrap().into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    assert_eq!(got, DOWNLOAD_BYTES, "the download arrived whole");
    (
        got as f64 / 1e6 / secs,
        before,
        peak.load(Ordering::Relaxed),
    )
}

/// Bytes of the streamed download row (1 GiB).
const DOWNLOAD_BYTES: u64 = 1 << 30;

async fn wait_port(addr: &str) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{addr} never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Row {
    name: &'static str,
    r: Result,
    idle_kib: u64,
    peak_kib: u64,
}

async fn measure(name: &'static str, c: UpstreamClient, url: &str, pid: Option<u32>) -> Row {
    let idle_kib = pid.map(|p| rss_kib(p, "VmRSS:")).unwrap_or(0);
    let _ = load(c.clone(), url.to_string(), WARMUP, CONNECTIONS).await;
    let r = load(c, url.to_string(), RUN, CONNECTIONS).await;
    let peak_kib = pid.map(|p| rss_kib(p, "VmHWM:")).unwrap_or(0);
    Row {
        name,
        r,
        idle_kib,
        peak_kib,
    }
}

/// One row's load with the clients of `mode`, after a warm-up.
async fn measure_mode(mode: Mode, proxy: Option<&str>, ca: &str, url: &str) -> Result {
    let c = mode.client(proxy, &[ca]);
    let _ = load(c.clone(), url.to_string(), WARMUP, mode.conns()).await;
    load(c, url.to_string(), RUN, mode.conns()).await
}

/// Starts cred-proxy with one route, `api` → `https://localhost:{port}/allowed` (the
/// origin's CA trusted through `SSL_CERT_FILE`), and waits for its listener.
async fn start_cred_proxy(
    dir: &Path,
    port: u16,
    ca_cert: &Path,
    token: &Path,
    origin_ca: &str,
) -> (Child, String) {
    use bottle_operator::contract::config::cred_proxy::{CredProxyConfig, CredRoute};
    let cfg = CredProxyConfig {
        listen: format!("127.0.0.1:{}", free_port()),
        admin_listen: format!("127.0.0.1:{}", free_port()),
        upstream_proxy: None,
        ca_cert: ca_cert.display().to_string(),
        routes: vec![CredRoute {
            name: "api".into(),
            upstream: format!("https://localhost:{port}/allowed")
                .try_into()
                .unwrap(),
            auth: HeaderInjection {
                header: "Authorization".into(),
                scheme: Some("Bearer".into()),
                token_file: token.display().to_string(),
            },
        }],
    };
    let path = dir.join("cred-proxy.yaml");
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let child = spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
            .args(["cred-proxy", "--config"])
            .arg(&path)
            .env("SSL_CERT_FILE", origin_ca)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_port(&cfg.listen).await;
    (child, format!("http://{}", cfg.listen))
}

/// Open descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One soak sample: time since the start, the proxy's RSS and descriptors, requests so far.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    done: u64,
    failed: u64,
}

/// `rps` requests a second (spread over [`CONNECTIONS`] clients) for `length`, sampling
/// process `pid` twenty times: a proxy that leaks memory or descriptors shows it here.
async fn soak(
    client: UpstreamClient,
    url: &str,
    pid: u32,
    rps: f64,
    length: Duration,
) -> Vec<Sample> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let failed = std::sync::Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + length;
    let every = Duration::from_secs_f64(CONNECTIONS as f64 / rps.max(1.0));
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url, done, failed) = (
                client.clone(),
                url.to_string(),
                done.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while tokio::time::Instant::now() < deadline {
                    tick.tick().await;
                    let req = http::Request::get(&url).body(full("")).unwrap();
                    let ok = match client.request(req).await {
                        Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = tokio::time::Instant::now();
    let mut samples = Vec::new();
    for i in 0..=20u32 {
        tokio::time::sleep_until(start + length / 20 * i).await;
        samples.push(Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(pid, "VmRSS:"),
            fds: fds(pid),
            done: done.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        });
    }
    for t in tasks {
        let _ = t.await;
    }
    samples
}

/// Per-host limit for the pipelock rows: high enough that this load never meets it.
const UNLIMITED_PER_MINUTE: u64 = 100_000_000;

/// The rendered pipelock config of a Bottle allowing one host, adapted to this benchmark
/// (see the module comment): the loopback origin `localhost` is allowed in its place (the
/// model refuses it in a Bottle); `per_minute: None` keeps pipelock's default rate limit.
fn pipelock_yaml(listen: &str, ca_cert: &Path, ca_key: &Path, per_minute: Option<u64>) -> String {
    use serde_norway::{Mapping, Value};
    let spec: bottle_operator::contract::api::BottleSpec =
        serde_json::from_value(serde_json::json!({"egress": {"allow": ["bench.example.com"]}}))
            .unwrap();
    let policy = bottle_operator::contract::model::Policy::from_spec(&spec).unwrap();
    let rendered = bottle_operator::operator::render::config_map::pipelock_config(&policy);
    let mut v: Value = serde_norway::to_value(&rendered).unwrap();
    let set = |v: &mut Value, path: &[&str], x: Value| {
        let mut m = v;
        for k in &path[..path.len() - 1] {
            let map = m.as_mapping_mut().expect("a mapping");
            m = map
                .entry(Value::from(*k))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
        }
        m.as_mapping_mut()
            .expect("a mapping")
            .insert(Value::from(path[path.len() - 1]), x);
    };
    set(&mut v, &["fetch_proxy", "listen"], listen.into());
    set(
        &mut v,
        &["api_allowlist"],
        Value::Sequence(vec!["localhost".into()]),
    );
    set(
        &mut v,
        &["tls_interception", "ca_cert"],
        ca_cert.display().to_string().into(),
    );
    set(
        &mut v,
        &["tls_interception", "ca_key"],
        ca_key.display().to_string().into(),
    );
    // Loopback origin: exempt from the SSRF guard here only. A bottle never gets this.
    set(
        &mut v,
        &["ssrf", "ip_allowlist"],
        Value::Sequence(vec!["127.0.0.0/8".into()]),
    );
    if let Some(n) = per_minute {
        set(
            &mut v,
            &["fetch_proxy", "monitoring", "max_requests_per_minute"],
            n.into(),
        );
    }
    serde_norway::to_string(&v).unwrap()
}

/// Starts pipelock on `config`, trusting the origin's CA, and waits for its listener; if it
/// exits first, its log says why.
async fn start_pipelock(
    bin: &Path,
    dir: &Path,
    name: &str,
    yaml: &str,
    listen: &str,
    origin_ca: &str,
) -> Child {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = spawn_tied(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("PIPELOCK_HOME", dir.join(format!("{name}-home")))
            // Go honours SSL_CERT_FILE: pipelock re-originates TLS to the origin.
            .env("SSL_CERT_FILE", origin_ca)
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    )
    .unwrap();
    let t = Instant::now();
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pipelock exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pipelock never listened on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn pipelock_version(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string()
}

fn main() {
    init_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin::start(dir.path()).await;
        let url = format!("https://localhost:{}/allowed/bench", origin.port);
        let origin_ca = origin.ca_file.to_str().unwrap().to_string();

        // egress with a credential-injecting route, as in a bottle.
        let ca = bottle_operator::operator::render::ca::generate("bench", "bottle").unwrap();
        let (ca_cert, ca_key, token) = (dir.path().join("ca.crt"), dir.path().join("ca.key"), dir.path().join("token"));
        std::fs::write(&ca_cert, &ca.cert_pem).unwrap();
        std::fs::write(&ca_key, &ca.key_pem).unwrap();
        // pipelock refuses a CA key any looser than 0640.
        std::fs::set_permissions(&ca_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(&token, "bench-token").unwrap();
        let cfg = EgressConfig {
            listen: format!("127.0.0.1:{}", free_port()),
            admin_listen: format!("127.0.0.1:{}", free_port()),
            upstream_proxy: None,
            ca_cert: ca_cert.display().to_string(),
            ca_key: ca_key.display().to_string(),
            ports: vec![443, origin.port],
            allow: vec![],
            passthrough: vec![],
            routes: vec![EgressRoute {
                host: "localhost".parse().unwrap(),
                paths: vec!["/allowed/".into()],
                auth: Some(HeaderInjection { header: "Authorization".into(), scheme: Some("Bearer".into()), token_file: token.display().to_string() }),
            }],
        };
        let cfg_path = dir.path().join("egress.yaml");
        std::fs::write(&cfg_path, serde_norway::to_string(&cfg).unwrap()).unwrap();
        let mut egress: Child = spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
                .args(["egress", "--config"])
                .arg(&cfg_path)
                .env("SSL_CERT_FILE", &origin_ca)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        wait_port(&cfg.listen).await;

        let mut rows = vec![measure("no proxy", client(None, &[&origin_ca]), &url, None).await];
        let egress_url = format!("http://{}", cfg.listen);
        rows.push(measure("egress", client(Some(&egress_url), &[ca_cert.to_str().unwrap()]), &url, Some(egress.id())).await);

        // `SOAK_SECS` (scripts/bench.sh soak): egress at half the rate it just reached.
        let soak_secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if soak_secs > 0 {
            let rate = rows[1].r.rps / 2.0;
            let samples = soak(client(Some(&egress_url), &[ca_cert.to_str().unwrap()]), &url, egress.id(), rate, Duration::from_secs(soak_secs)).await;
            println!("soak: egress at {rate:.0} req/s (half its maximum above) for {soak_secs} s, {CONNECTIONS} keep-alive connections");
            println!("| at | RSS | open descriptors | requests served | failed |");
            println!("|---:|---:|---:|---:|---:|");
            for s in &samples {
                println!("| {:.0} s | {:.1} MiB | {} | {} | {} |", s.at.as_secs_f64(), s.rss_kib as f64 / 1024.0, s.fds, s.done, s.failed);
            }
            if std::env::var("SOAK_ONLY").is_ok() {
                let _ = egress.kill();
                let _ = egress.wait();
                return;
            }
        }

        // pipelock intercepts with the same bottle CA egress uses, as in the Pod.
        let pipelock_bin = tools_bin().expect("tests/tools/install.sh builds pipelock").join("pipelock");
        assert!(pipelock_bin.exists(), "{} is missing: tests/tools/install.sh builds pipelock 2.3.0", pipelock_bin.display());
        let pl_listen = format!("127.0.0.1:{}", free_port());
        let yaml = pipelock_yaml(&pl_listen, &ca_cert, &ca_key, Some(UNLIMITED_PER_MINUTE));
        let mut pipelock = start_pipelock(&pipelock_bin, dir.path(), "pipelock", &yaml, &pl_listen, &origin_ca).await;
        let pl_url = format!("http://{pl_listen}");
        rows.push(measure("pipelock alone", client(Some(&pl_url), &[ca_cert.to_str().unwrap()]), &url, Some(pipelock.id())).await);

        // The bottle path: egress whose upstream proxy is pipelock (it trusts pipelock's
        // interception through the bottle CA, as the rendered egress config does).
        let chained = EgressConfig {
            listen: format!("127.0.0.1:{}", free_port()),
            admin_listen: format!("127.0.0.1:{}", free_port()),
            upstream_proxy: Some(pl_url.clone()),
            ..cfg.clone()
        };
        let chained_path = dir.path().join("egress-chained.yaml");
        std::fs::write(&chained_path, serde_norway::to_string(&chained).unwrap()).unwrap();
        let mut egress2: Child = spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
                .args(["egress", "--config"])
                .arg(&chained_path)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        wait_port(&chained.listen).await;
        let chained_url = format!("http://{}", chained.listen);
        let mut row = measure("egress → pipelock", client(Some(&chained_url), &[ca_cert.to_str().unwrap()]), &url, Some(egress2.id())).await;
        // RSS of the pair: egress now, pipelock as it stands after this row too.
        row.idle_kib += rss_kib(pipelock.id(), "VmRSS:");
        row.peak_kib += rss_kib(pipelock.id(), "VmHWM:");
        rows.push(row);
        let _ = egress2.kill();
        let _ = egress2.wait();
        let _ = pipelock.kill();
        let _ = pipelock.wait();

        // pipelock at its default per-host limit (60 URL checks a minute), same load.
        let pl_listen = format!("127.0.0.1:{}", free_port());
        let yaml = pipelock_yaml(&pl_listen, &ca_cert, &ca_key, None);
        let mut limited = start_pipelock(&pipelock_bin, dir.path(), "pipelock-default", &yaml, &pl_listen, &origin_ca).await;
        rows.push(
            measure("pipelock alone, default rate limit", client(Some(&format!("http://{pl_listen}")), &[ca_cert.to_str().unwrap()]), &url, Some(limited.id())).await,
        );
        let _ = limited.kill();
        let _ = limited.wait();

        match std::env::var("MITMDUMP") {
            Ok(mitmdump) if Path::new(&mitmdump).exists() => {
                let port = free_port();
                let confdir = dir.path().join("mitmproxy");
                let mut mitm = spawn_tied(
                    Command::new(&mitmdump)
                        .args(["--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", &port.to_string(), "-q"])
                        .args(["--set", &format!("confdir={}", confdir.display())])
                        .args(["--set", &format!("ssl_verify_upstream_trusted_ca={origin_ca}")])
                        .args(["--set", "flow_detail=0", "--set", "stream_large_bodies=1m"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )
                .unwrap();
                wait_port(&format!("127.0.0.1:{port}")).await;
                let mitm_ca = confdir.join("mitmproxy-ca-cert.pem");
                rows.push(
                    measure("mitmproxy 11.0.2", client(Some(&format!("http://127.0.0.1:{port}")), &[mitm_ca.to_str().unwrap()]), &url, Some(mitm.id())).await,
                );
                let _ = mitm.kill();
                let _ = mitm.wait();
            }
            _ => eprintln!("MITMDUMP not set or missing: run through scripts/bench.sh to compare with mitmproxy"),
        }
        // egress and cred-proxy under the other loads, each beside its no-proxy anchor; the
        // agent reaches cred-proxy over plain HTTP, so it has no HTTP/2 (TLS ALPN) row.
        let (mut cred, cred_base) = start_cred_proxy(dir.path(), origin.port, &ca_cert, &token, &origin_ca).await;
        let cred_url = format!("{cred_base}/api/bench");
        let bottle_ca = ca_cert.to_str().unwrap();
        let modes = [Mode::KeepAlive(CONNECTIONS), Mode::KeepAlive(64), Mode::Http2, Mode::NewConnection];
        let mut matrix = Vec::new();
        for mode in modes {
            let base = measure_mode(mode, None, &origin_ca, &url).await;
            let eg = measure_mode(mode, Some(&egress_url), bottle_ca, &url).await;
            let cp = match mode {
                Mode::Http2 => None,
                _ => Some(measure_mode(mode, None, bottle_ca, &cred_url).await),
            };
            matrix.push((mode, base, eg, cp));
        }
        let dl_path = format!("/allowed/bytes/{DOWNLOAD_BYTES}");
        let dl_url = format!("https://localhost:{}{dl_path}", origin.port);
        let downloads = [
            ("no proxy", download(client(None, &[&origin_ca]), &dl_url, None).await),
            ("egress", download(client(Some(&egress_url), &[bottle_ca]), &dl_url, Some(egress.id())).await),
            ("cred-proxy", download(client(None, &[bottle_ca]), &format!("{cred_base}/api/bytes/{DOWNLOAD_BYTES}"), Some(cred.id())).await),
        ];
        let _ = cred.kill();
        let _ = cred.wait();
        let _ = egress.kill();
        let _ = egress.wait();

        let base = rows[0].r.p50;
        let (base_rps, egress_rps) = (rows[0].r.rps.max(1.0), rows[1].r.rps.max(1.0));
        println!("proxy_throughput: {CONNECTIONS} keep-alive HTTP/1.1 connections, {}s per row after {}s warm-up, same loopback HTTPS origin", RUN.as_secs(), WARMUP.as_secs());
        println!("{}: the rendered bottle config, plus ssrf.ip_allowlist [127.0.0.0/8] (loopback origin; benchmark only) and max_requests_per_minute {UNLIMITED_PER_MINUTE} (default 60: last row); TLS intercepted with the bottle CA, request body + header DLP on", pipelock_version(&pipelock_bin));
        println!("| path | req/s | vs no proxy | vs egress | p50 | p99 | p50 added | errors | RSS idle | RSS peak |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let added = row.r.p50.saturating_sub(base);
            let rss = |k: u64| if k == 0 { "-".to_string() } else { format!("{:.1} MiB", k as f64 / 1024.0) };
            println!(
                "| {} | {:.0} | {:.2}x | {:.2}x | {} | {} | {} | {} | {} | {} |",
                row.name, row.r.rps, row.r.rps / base_rps, row.r.rps / egress_rps, ms(row.r.p50), ms(row.r.p99), ms(added), row.r.errors, rss(row.idle_kib), rss(row.peak_kib)
            );
        }
        println!("errors: requests that failed or got a non-2xx answer (pipelock's rate limit answers 429); req/s and latencies count successes only");
        for row in rows.iter().filter(|r| r.r.errors > 0) {
            println!("errors of {}: most frequent {}", row.name, row.r.top_error.as_deref().unwrap_or("?"));
        }
        println!("egress → pipelock RSS: both processes");
        if let Some(m) = rows.iter().find(|r| r.name.starts_with("mitmproxy")) {
            println!("egress / mitmproxy throughput ratio: {:.1}x", rows[1].r.rps / m.r.rps.max(1.0));
        }

        println!();
        println!("egress and cred-proxy by load (straight to the origin, no pipelock), each row beside its no-proxy anchor measured just before it; {}s per row after {}s warm-up", RUN.as_secs(), WARMUP.as_secs());
        println!("| load | path | req/s | vs no proxy | p50 | p99 | p50 added | errors |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (mode, base, eg, cp) in &matrix {
            let line = |name: &str, r: &Result| {
                println!(
                    "| {} | {name} | {:.0} | {:.2}x | {} | {} | {} | {} |",
                    mode.label(), r.rps, r.rps / base.rps.max(1.0), ms(r.p50), ms(r.p99), ms(r.p50.saturating_sub(base.p50)), r.errors
                );
            };
            line("no proxy", base);
            line("egress", eg);
            if let Some(cp) = cp {
                line("cred-proxy", cp);
            }
        }
        println!();
        println!("one streamed {} MiB download (HTTP/1.1), the proxy's RSS sampled every 50 ms", DOWNLOAD_BYTES >> 20);
        println!("| path | MB/s | vs no proxy | RSS before | RSS highest during |");
        println!("|---|---:|---:|---:|---:|");
        let dl_base = downloads[0].1 .0.max(0.001);
        for (name, (mbps, before, peak)) in &downloads {
            let rss = |k: &u64| if *k == 0 { "-".to_string() } else { format!("{:.1} MiB", *k as f64 / 1024.0) };
            println!("| {name} | {mbps:.0} | {:.2}x | {} | {} |", mbps / dl_base, rss(before), rss(peak));
        }
    });
}
