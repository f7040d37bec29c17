//! Requests per second and latency through `egress`, side by side with no proxy and with
//! mitmproxy doing the same TLS interception (what the reference system used), against the
//! same loopback HTTPS origin in one run; plus idle and loaded RSS of each proxy.
//! Prints a table; asserts nothing about speed. Run with `scripts/bench.sh proxy_throughput`.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/origin.rs"]
mod origin;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_operator::config::HeaderInjection;
use bottle_operator::config::egress::{EgressConfig, EgressRoute};
use bottle_operator::proxy::upstream::{self, Connector, UpstreamClient};
use bottle_operator::proxy::{full, init_crypto};
use control_plane::{free_port, spawn_tied};
use http_body_util::BodyExt;

const CONNECTIONS: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(5);

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
}

async fn load(client: UpstreamClient, url: String, duration: Duration) -> Result {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = http::Request::get(&url).body(full("")).unwrap();
                    match client.request(req).await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.into_body().collect().await;
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
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
        errors,
    }
}

fn client(proxy: Option<&str>, ca_files: &[&str]) -> UpstreamClient {
    let roots = upstream::roots(ca_files).unwrap();
    upstream::clients(Connector::new(proxy).unwrap(), roots).1 // HTTP/1.1: one request per connection at a time
}

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
    let _ = load(c.clone(), url.to_string(), WARMUP).await;
    let r = load(c, url.to_string(), RUN).await;
    let peak_kib = pid.map(|p| rss_kib(p, "VmHWM:")).unwrap_or(0);
    Row {
        name,
        r,
        idle_kib,
        peak_kib,
    }
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
        let ca = bottle_operator::render::ca::generate("bench", "bottle").unwrap();
        let (ca_cert, ca_key, token) = (dir.path().join("ca.crt"), dir.path().join("ca.key"), dir.path().join("token"));
        std::fs::write(&ca_cert, &ca.cert_pem).unwrap();
        std::fs::write(&ca_key, &ca.key_pem).unwrap();
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
                host: "localhost".into(),
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
        let _ = egress.kill();
        let _ = egress.wait();

        let base = rows[0].r.p50;
        println!("proxy_throughput: {CONNECTIONS} keep-alive HTTP/1.1 connections, {}s per row after {}s warm-up, same loopback HTTPS origin", RUN.as_secs(), WARMUP.as_secs());
        println!("| path | req/s | p50 | p99 | p50 added | errors | RSS idle | RSS peak |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let added = row.r.p50.saturating_sub(base);
            let rss = |k: u64| if k == 0 { "-".to_string() } else { format!("{:.1} MiB", k as f64 / 1024.0) };
            println!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                row.name, row.r.rps, ms(row.r.p50), ms(row.r.p99), ms(added), row.r.errors, rss(row.idle_kib), rss(row.peak_kib)
            );
        }
        if rows.len() == 3 {
            println!("egress / mitmproxy throughput ratio: {:.1}x", rows[1].r.rps / rows[2].r.rps.max(1.0));
        }
    });
}
