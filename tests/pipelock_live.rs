//! Live Bottle changes through the real pipelock, end to end.
//!
//! The real control plane runs the operator; a Bottle is applied; the ConfigMap and CA
//! Secret it renders are read back from the API server and laid out the way the kubelet
//! does (`pipelock_live/kubelet.rs`); the real sidecars run against those volumes in a
//! network namespace playing the Pod (`pipelock_live/pod.rs`): `bottle-sidecar config-sync`,
//! real pipelock 2.3.0 (`$BOTTLE_TOOLS_BIN/pipelock`) and `bottle-sidecar egress`, in front of
//! a real HTTPS origin on a documentation address (pipelock's SSRF guard refuses loopback).
//!
//! What it shows: a host added to the Bottle is refused before (by egress, then, with only
//! egress's volume updated, by pipelock's allowlist) and passes once pipelock reloaded; a
//! stream opened before survives every reload; a passthrough host or a DLP pattern change,
//! which pipelock's strict reload refuses, rolls the Pod and is held back by config-sync
//! meanwhile. The time from `kubectl apply` to a passing request is printed, by phase.
//!
//! Not in this setup: the kubelet's own sync delay (in a real cluster a ConfigMap change
//! reaches the volume after up to the kubelet sync period plus its cache TTL, about a
//! minute by default). Here the test lays the volume out as soon as the API server has it,
//! and the measured figures start from there.

mod support;

#[path = "pipelock_live/kubelet.rs"]
mod kubelet;
#[path = "pipelock_live/pod.rs"]
mod pod;
use support::control_plane;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bottle_operator::contract::config::layout::{self, files};
use bottle_operator::contract::config::pipelock::PipelockConfig;
use k8s_openapi::api::core::v1::{ConfigMap, Pod as KPod, Secret};
use kube::{Api, ResourceExt};
use pod::Pod;
use serde_json::json;
use support::{Operator, cluster, namespace};

const BOTTLE: &str = "live";
const WAIT: Duration = Duration::from_secs(60);
/// Hosts added one by one; each is one measured change.
const CHANGES: usize = 5;

fn pipelock_bin() -> PathBuf {
    let bin = control_plane::tools_bin()
        .expect("the tool installer (tests/tools/install.sh) builds pipelock")
        .join("pipelock");
    assert!(
        bin.exists(),
        "{} is missing: tests/tools/install.sh builds pipelock 2.3.0 from the shared source",
        bin.display()
    );
    bin
}

fn bottle(allow: &[String], passthrough: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "bottle-operator.dev/v1alpha1",
        "kind": "Bottle",
        "metadata": {"name": BOTTLE},
        "spec": {"egress": {"allow": allow, "passthrough": passthrough}},
    })
}

fn apply(ns: &str, object: &serde_json::Value) {
    let mut o = object.clone();
    o["metadata"]["namespace"] = json!(ns);
    cluster().apply_json(&o).expect("kubectl apply");
}

/// Polls `check` every 10 ms until it returns `Some`; panics with `what` after `WAIT`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ConfigMap once its files satisfy `ok`.
async fn config_map(
    api: &Api<ConfigMap>,
    what: &str,
    ok: impl Fn(&ConfigMap) -> bool,
) -> ConfigMap {
    until(what, || async {
        api.get_opt(&format!("{BOTTLE}-config"))
            .await
            .ok()
            .flatten()
            .filter(|c| ok(c))
    })
    .await
}

fn file<'a>(cm: &'a ConfigMap, name: &str) -> &'a str {
    cm.data
        .as_ref()
        .and_then(|d| d.get(name))
        .unwrap_or_else(|| panic!("ConfigMap has no {name}"))
}

/// Lays out one container's slice of the ConfigMap (mode 0444, as the Pod's volumes say).
fn lay_out(dir: &Path, cm: &ConfigMap, name: &str) {
    kubelet::write(
        dir,
        &[kubelet::File {
            name,
            bytes: file(cm, name).as_bytes(),
            mode: 0o444,
        }],
    );
}

/// pipelock's log lines with `"event":"config_reload"` and the ones naming a refused reload.
fn reloads(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let ok = text
        .lines()
        .filter(|l| {
            l.contains("\"event\":\"config_reload\"") && l.contains("\"status\":\"success\"")
        })
        .count();
    let refused = text
        .lines()
        .filter(|l| l.contains("rejected: security downgrade from strict mode"))
        .count();
    (ok, refused)
}

/// The hosts that reached the origin, from its request log.
fn origin_hosts(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["host"].as_str().map(String::from))
        .collect()
}

/// The origin's CA and a certificate for every name under `live.test`.
fn origin_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "live origin CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["*.live.test".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("origin-ca.pem"),
        dir.join("origin.pem"),
        dir.join("origin-key.pem"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// One measured change, split into its phases.
struct Change {
    api_to_config_map: Duration,
    egress_reload: Duration,
    laid_out_to_delivered: Duration,
    delivered_to_passing: Duration,
}

/// Where the Pod's volumes live on this machine.
struct Volumes {
    config_egress: PathBuf,
    config_pipelock: PathBuf,
    ca_intercept: PathBuf,
    pipelock_config: PathBuf,
    pipelock_home: PathBuf,
}

impl Volumes {
    fn new(pod: &Pod, generation: u32) -> Self {
        let v = |n: &str| pod.path(&format!("vol{generation}-{n}"));
        let vols = Volumes {
            config_egress: v("config-egress"),
            config_pipelock: v("config-pipelock"),
            ca_intercept: v("ca-intercept"),
            pipelock_config: v("pipelock-config"),
            pipelock_home: v("pipelock-home"),
        };
        std::fs::create_dir_all(&vols.pipelock_config).unwrap();
        std::fs::create_dir_all(&vols.pipelock_home).unwrap();
        vols
    }
}

/// Starts config-sync and pipelock the way the Pod does (config-sync first; pipelock once the
/// first delivery is in place) and waits for pipelock to answer on 8888.
fn start_pipelock(pod: &mut Pod, v: &Volumes, origin_ca: &Path) {
    let from = format!("{}/{}", layout::CONFIG_DIR, files::PIPELOCK);
    let to = format!("{}/{}", layout::PIPELOCK_CONFIG_DIR, files::PIPELOCK);
    pod.spawn(
        "config-sync",
        &[
            (&v.config_pipelock, layout::CONFIG_DIR),
            (&v.pipelock_config, layout::PIPELOCK_CONFIG_DIR),
        ],
        &[("RUST_LOG", "info")],
        &[
            env!("CARGO_BIN_EXE_bottle-sidecar"),
            "config-sync",
            "--from",
            &from,
            "--to",
            &to,
        ],
    );
    let delivered = v.pipelock_config.join(files::PIPELOCK);
    let t = Instant::now();
    while std::fs::metadata(&delivered).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < WAIT,
            "config-sync never delivered pipelock.yaml"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let bin = pipelock_bin();
    let home = v.pipelock_home.display().to_string();
    pod.spawn(
        "pipelock",
        &[
            (&v.pipelock_config, layout::PIPELOCK_CONFIG_DIR),
            (&v.ca_intercept, layout::CA_DIR),
        ],
        // Go honours SSL_CERT_FILE: pipelock re-originates TLS and must trust the origin.
        &[
            ("PIPELOCK_HOME", &home),
            ("SSL_CERT_FILE", origin_ca.to_str().unwrap()),
        ],
        &[bin.to_str().unwrap(), "run", "--config", &to],
    );
    pod.wait_http(
        &format!("http://127.0.0.1:{}/health", layout::PIPELOCK_PORT),
        WAIT,
    );
}

fn start_egress(pod: &mut Pod, v: &Volumes) {
    let cfg = format!("{}/{}", layout::CONFIG_DIR, files::EGRESS);
    pod.spawn(
        "egress",
        &[
            (&v.config_egress, layout::CONFIG_DIR),
            (&v.ca_intercept, layout::CA_DIR),
        ],
        &[("RUST_LOG", "info")],
        &[
            env!("CARGO_BIN_EXE_bottle-sidecar"),
            "egress",
            "--config",
            &cfg,
        ],
    );
    pod.wait_http(
        &format!("http://127.0.0.1:{}/healthz", layout::EGRESS_ADMIN_PORT),
        WAIT,
    );
}

fn egress_hash(pod: &Pod) -> String {
    let s = pod.wait_http(
        &format!("http://127.0.0.1:{}/status", layout::EGRESS_ADMIN_PORT),
        WAIT,
    );
    let v: serde_json::Value = serde_json::from_str(&s).expect("status is JSON");
    v["config_hash"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bottle_changes_reach_the_whole_chain_through_real_pipelock() {
    let pipelock = pipelock_bin();
    let hosts: Vec<String> = std::iter::once("a.live.test".to_string())
        .chain((1..=CHANGES).map(|i| format!("b{i}.live.test")))
        .chain(["c.live.test".to_string()])
        .collect();
    let mut pod = Pod::new(&hosts.iter().map(String::as_str).collect::<Vec<_>>());
    let (origin_ca, origin_cert, origin_key) = origin_certs(pod.dir.path());
    let requests = pod.path("origin-requests.jsonl");
    pod.start_origin(&origin_cert, &origin_key, &requests);

    let ns = namespace("pipelock-live");
    let _operator = Operator::start(&ns);
    let client = cluster().client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pods: Api<KPod> = Api::namespaced(client.clone(), &ns);

    let mut allow = vec!["a.live.test".to_string()];
    apply(&ns, &bottle(&allow, &[]));
    let cm = config_map(&cms, "the rendered ConfigMap", |c| {
        c.data
            .as_ref()
            .is_some_and(|d| d.contains_key(files::PIPELOCK))
    })
    .await;
    let ca = until("the CA Secret", || async {
        secrets
            .get_opt(&format!("{BOTTLE}-ca"))
            .await
            .ok()
            .flatten()
    })
    .await;
    let ca_data = ca.data.expect("CA Secret data");
    let (ca_cert, ca_key) = (
        &ca_data[layout::CA_CERT_FILE].0,
        &ca_data[layout::CA_KEY_FILE].0,
    );
    // The agent's trust: the bottle CA (egress intercepts).
    let agent_ca = pod.path("agent-ca.pem");
    std::fs::write(&agent_ca, ca_cert).unwrap();

    let v = Volumes::new(&pod, 0);
    lay_out(&v.config_egress, &cm, files::EGRESS);
    lay_out(&v.config_pipelock, &cm, files::PIPELOCK);
    // The modes the Pod's ca-intercept volume gives: 0444 certificate, 0440 key.
    let ca_files = [
        kubelet::File {
            name: layout::CA_CERT_FILE,
            bytes: ca_cert,
            mode: 0o444,
        },
        kubelet::File {
            name: layout::CA_KEY_FILE,
            bytes: ca_key,
            mode: 0o440,
        },
    ];
    kubelet::write(&v.ca_intercept, &ca_files);
    start_pipelock(&mut pod, &v, &origin_ca);
    start_egress(&mut pod, &v);

    // Positive control: the declared host answers through egress → pipelock → origin.
    let (code, body) = pod.agent_get("https://a.live.test/hello", &agent_ca);
    assert_eq!(
        (code, body.trim()),
        (200, "hello from a.live.test"),
        "the declared host passes the chain"
    );

    // A stream opened before any change, to be read again after all of them.
    let sse = pod.open_stream("https://a.live.test/sse", &agent_ca);
    let (_, first) = sse.recv_timeout(WAIT).expect("the stream's first event");
    assert_eq!(first, "data: tick 0");

    let pipelock_log = pod.log("pipelock");
    let mut measured = Vec::new();
    for i in 1..=CHANGES {
        let host = format!("b{i}.live.test");
        let url = format!("https://{host}/hello");
        // Negative control: not declared yet, refused, and the origin never sees it.
        let (code, body) = pod.agent_get(&url, &agent_ca);
        println!("{host} undeclared: {code} {}", body.trim());
        assert_eq!(
            code, 403,
            "egress refuses the CONNECT to {host}: not declared yet"
        );
        assert!(
            !origin_hosts(&requests).contains(&host),
            "{host} reached the origin before it was declared"
        );

        allow.push(host.clone());
        let t_apply = Instant::now();
        apply(&ns, &bottle(&allow, &[]));
        let needle = format!("- {host}");
        let cm = config_map(&cms, "the ConfigMap with the new host", |c| {
            c.data.as_ref().is_some_and(|d| {
                d.get(files::PIPELOCK).is_some_and(|f| f.contains(&needle))
                    && d.get(files::EGRESS).is_some_and(|f| f.contains(&needle))
            })
        })
        .await;
        let api_to_config_map = t_apply.elapsed();

        // The kubelet updates each volume on its own: egress's first. egress now lets the
        // host through, and pipelock, still on the old list, is the wall that holds.
        let before = egress_hash(&pod);
        let t_egress = Instant::now();
        lay_out(&v.config_egress, &cm, files::EGRESS);
        until("egress reloads", || async {
            (egress_hash(&pod) != before).then_some(())
        })
        .await;
        let egress_reload = t_egress.elapsed();
        let (code, body) = pod.agent_get(&url, &agent_ca);
        println!(
            "{host} in egress, not yet in pipelock: {code} {}",
            body.trim()
        );
        assert_ne!(code, 200, "pipelock's old allowlist still refuses {host}");
        assert!(
            !origin_hosts(&requests).contains(&host),
            "{host} got past pipelock's old list"
        );
        let log = std::fs::read_to_string(&pipelock_log).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains("\"event\":\"blocked\"")
                && l.contains(&format!("\"target\":\"{host}:443\""))
                && l.contains("\"scanner\":\"allowlist\"")),
            "pipelock's allowlist is what refused {host}"
        );

        // Then pipelock's volume: config-sync delivers, pipelock reloads, the host passes.
        let (reloaded_before, _) = reloads(&pipelock_log);
        let delivered = v.pipelock_config.join(files::PIPELOCK);
        let t_laid = Instant::now();
        lay_out(&v.config_pipelock, &cm, files::PIPELOCK);
        until("config-sync delivers", || async {
            std::fs::read_to_string(&delivered)
                .ok()
                .filter(|f| f.contains(&needle))
        })
        .await;
        let t_delivered = Instant::now();
        until("pipelock reloads", || async {
            (reloads(&pipelock_log).0 > reloaded_before).then_some(())
        })
        .await;
        let (code, body) = pod.agent_get(&url, &agent_ca);
        assert_eq!(
            (code, body.trim()),
            (200, format!("hello from {host}").as_str()),
            "{host} passes once pipelock reloaded"
        );
        measured.push(Change {
            api_to_config_map,
            egress_reload,
            laid_out_to_delivered: t_delivered - t_laid,
            delivered_to_passing: t_delivered.elapsed(),
        });
    }

    // The stream survived every reload of egress and pipelock: events keep arriving after
    // the last one, in order, none lost.
    let after_reloads = Instant::now();
    let mut last = 0;
    while let Ok((_, line)) = sse.recv_timeout(WAIT) {
        if let Some(n) = line.strip_prefix("data: tick ") {
            let n: u32 = n.parse().unwrap();
            assert!(n == last + 1, "event {n} follows {last}: none lost");
            last = n;
        }
        if Instant::now() > after_reloads + Duration::from_secs(1) {
            break;
        }
    }
    assert!(
        Instant::now() > after_reloads + Duration::from_secs(1),
        "the stream ended early, at tick {last}"
    );

    // A passthrough host widens pipelock's trust: its strict-mode reload refuses that. The
    // operator rolls the Pod (the template hash covers passthrough); the old Pod keeps its
    // old pipelock config; the new Pod's pipelock starts with the new one.
    let old = pods.get(BOTTLE).await.expect("the bottle Pod");
    let old_hash = old
        .annotations()
        .get("bottle-operator.dev/template-hash")
        .cloned();
    allow.push("c.live.test".into());
    apply(&ns, &bottle(&allow, &["c.live.test"]));
    let cm = config_map(&cms, "the ConfigMap with the passthrough host", |c| {
        c.data.as_ref().is_some_and(|d| {
            d.get(files::PIPELOCK)
                .and_then(|f| serde_norway::from_str::<PipelockConfig>(f).ok())
                .is_some_and(|p| {
                    p.tls_interception
                        .passthrough_domains
                        .contains(&"c.live.test".to_string())
                })
        })
    })
    .await;
    let new = until("the operator replaces the Pod", || async {
        pods.get_opt(BOTTLE)
            .await
            .ok()
            .flatten()
            .filter(|p| p.uid() != old.uid())
    })
    .await;
    let new_hash = new
        .annotations()
        .get("bottle-operator.dev/template-hash")
        .cloned();
    assert_ne!(
        new_hash, old_hash,
        "a new passthrough host changes the template hash"
    );

    // What the old Pod's containers do with it in the meantime: config-sync sees pipelock
    // would refuse it (`config_sync_predicts_what_pipelock_strict_reload_refuses` holds it to
    // the real binary), says why and leaves the running version in place, so the delivered
    // file keeps naming what pipelock runs.
    lay_out(&v.config_egress, &cm, files::EGRESS);
    let sync_log = pod.log("config-sync");
    let delivered = v.pipelock_config.join(files::PIPELOCK);
    let running = std::fs::read_to_string(&delivered).unwrap();
    let (reloaded_before, refused_before) = reloads(&pipelock_log);
    lay_out(&v.config_pipelock, &cm, files::PIPELOCK);
    until("config-sync withholds the widening version", || async {
        std::fs::read_to_string(&sync_log)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains("not delivered") && l.contains("passthrough domains added: c.live.test")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&delivered).unwrap(),
        running,
        "the delivered file is still the running version"
    );
    assert_eq!(
        reloads(&pipelock_log),
        (reloaded_before, refused_before),
        "pipelock was not asked to reload"
    );
    let (code, _) = pod.agent_get("https://c.live.test/hello", &origin_ca);
    assert_ne!(
        code, 200,
        "the old pipelock keeps its old config: c.live.test is not on it"
    );
    assert!(!origin_hosts(&requests).contains(&"c.live.test".to_string()));
    let (code, _) = pod.agent_get("https://a.live.test/hello", &agent_ca);
    assert_eq!(code, 200, "and keeps serving what it had");

    // The new Pod: fresh emptyDirs, the updated volumes, its sidecars started in order.
    for c in ["egress", "pipelock", "config-sync"] {
        pod.stop(c);
    }
    let v2 = Volumes::new(&pod, 1);
    lay_out(&v2.config_egress, &cm, files::EGRESS);
    lay_out(&v2.config_pipelock, &cm, files::PIPELOCK);
    kubelet::write(&v2.ca_intercept, &ca_files);
    start_pipelock(&mut pod, &v2, &origin_ca);
    start_egress(&mut pod, &v2);
    // Spliced end to end: the agent trusting only the origin's CA gets the origin's answer.
    let (code, body) = pod.agent_get("https://c.live.test/hello", &origin_ca);
    assert_eq!(
        (code, body.trim()),
        (200, "hello from c.live.test"),
        "the new Pod passes the passthrough host"
    );

    // A DLP pattern added to the Bottle: pipelock's strict reload refuses any change of its
    // pattern list, so the operator rolls the Pod for it too, and config-sync holds it back
    // from the running pipelock meanwhile.
    let before = pods.get(BOTTLE).await.expect("the bottle Pod");
    let mut with_dlp = bottle(&allow, &["c.live.test"]);
    with_dlp["spec"]["dlp"] =
        json!({"patterns": [{"name": "live token", "regex": "livetok_[a-z]{12}"}]});
    apply(&ns, &with_dlp);
    let cm = config_map(&cms, "the ConfigMap with the DLP pattern", |c| {
        c.data.as_ref().is_some_and(|d| {
            d.get(files::PIPELOCK)
                .is_some_and(|f| f.contains("livetok_"))
        })
    })
    .await;
    until("the operator replaces the Pod for a DLP change", || async {
        pods.get_opt(BOTTLE)
            .await
            .ok()
            .flatten()
            .filter(|p| p.uid() != before.uid())
    })
    .await;
    let delivered = v2.pipelock_config.join(files::PIPELOCK);
    let running = std::fs::read_to_string(&delivered).unwrap();
    lay_out(&v2.config_pipelock, &cm, files::PIPELOCK);
    until("config-sync withholds the DLP change", || async {
        std::fs::read_to_string(&sync_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("not delivered") && l.contains("dlp.patterns changed"))
            .then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(&delivered).unwrap(), running);

    // `pipelock --version` prints to stdout (`pipelock version` to stderr).
    let version = std::process::Command::new(&pipelock)
        .arg("--version")
        .output()
        .unwrap();
    println!(
        "pipelock_live: {} changes (a host added to the Bottle each), {}",
        measured.len(),
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .trim()
    );
    println!("| phase | median | min | max |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, f: &dyn Fn(&Change) -> Duration| {
        let all: Vec<Duration> = measured.iter().map(f).collect();
        println!(
            "| {name} | {} | {} | {} |",
            ms(median(all.clone())),
            ms(*all.iter().min().unwrap()),
            ms(*all.iter().max().unwrap())
        );
    };
    row("kubectl apply → ConfigMap updated (operator)", &|c| {
        c.api_to_config_map
    });
    row("egress volume laid out → egress reloaded", &|c| {
        c.egress_reload
    });
    row("pipelock volume laid out → config-sync delivered", &|c| {
        c.laid_out_to_delivered
    });
    row("delivered → pipelock reloaded → request passes", &|c| {
        c.delivered_to_passing
    });
    row(
        "total (apply → ConfigMap + laid out → request passes)",
        &|c| c.api_to_config_map + c.laid_out_to_delivered + c.delivered_to_passing,
    );
    println!(
        "kubelet sync delay not included (a real kubelet takes up to ~1 min to update a ConfigMap volume)"
    );
}

/// A rendered config adapted to run on loopback outside the Pod: listener and CA paths only,
/// the same for both sides of a reload, so they are not part of what changes.
fn loopback_pipelock_yaml(cfg: &PipelockConfig, listen: &str, dir: &Path) -> String {
    let mut c = cfg.clone();
    c.fetch_proxy.listen = listen.to_string();
    c.tls_interception.ca_cert = dir.join("ca.crt").display().to_string();
    c.tls_interception.ca_key = dir.join("ca.key").display().to_string();
    serde_norway::to_string(&c).unwrap()
}

fn rendered_pipelock(spec: serde_json::Value) -> PipelockConfig {
    let spec: bottle_operator::contract::api::BottleSpec = serde_json::from_value(spec).unwrap();
    let policy = bottle_operator::contract::model::Policy::from_spec(&spec).unwrap();
    bottle_operator::operator::render::config_map::pipelock_config(&policy)
}

/// config-sync withholds exactly the versions pipelock's strict reload refuses: for each
/// change, the real pipelock runs the old config, the new one is renamed into place, and
/// pipelock's own verdict (reloaded, or "rejected: security downgrade") is compared with
/// `strict_reload_refusals`. Both verdicts occur, so neither side can pass by always
/// answering the same.
#[test]
fn config_sync_predicts_what_pipelock_strict_reload_refuses() {
    use bottle_operator::pod::config_sync::{deliver, strict_reload_refusals};
    let pipelock = pipelock_bin();
    let base = json!({
        "egress": {"allow": ["a.example.com"]},
        "dlp": {"patterns": [{"name": "acme", "regex": "acme_[a-z]{8}"}]},
    });
    let change = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut s = base.clone();
        f(&mut s);
        rendered_pipelock(s)
    };
    let cases: Vec<(&str, PipelockConfig)> = vec![
        (
            "host added",
            change(&|s| s["egress"]["allow"] = json!(["a.example.com", "b.example.com"])),
        ),
        (
            "host removed",
            change(&|s| s["egress"]["allow"] = json!(["b.example.com"])),
        ),
        ("DLP to warn", change(&|s| s["dlp"]["block"] = json!(false))),
        (
            "passthrough added",
            change(&|s| s["egress"]["passthrough"] = json!(["a.example.com"])),
        ),
        (
            "DLP pattern added",
            change(
                &|s| s["dlp"]["patterns"] = json!([{"name": "acme", "regex": "acme_[a-z]{8}"}, {"name": "two", "regex": "two_[a-z]{8}"}]),
            ),
        ),
        (
            "DLP pattern removed",
            change(&|s| s["dlp"]["patterns"] = json!([])),
        ),
        (
            "DLP regex changed",
            change(&|s| s["dlp"]["patterns"][0]["regex"] = json!("acme_[a-z]{9}")),
        ),
    ];
    let old = rendered_pipelock(base.clone());
    let dir = tempfile::tempdir().unwrap();
    let ca = bottle_operator::operator::render::ca::generate("live", "reload").unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("ca.key"), &ca.key_pem).unwrap();
    std::fs::set_permissions(
        dir.path().join("ca.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut verdicts = Vec::new();
    for (i, (what, new)) in cases.iter().enumerate() {
        let listen = format!("127.0.0.1:{}", control_plane::free_port());
        let cfg_dir = dir.path().join(format!("case{i}"));
        let cfg = cfg_dir.join("pipelock.yaml");
        deliver(
            &cfg,
            loopback_pipelock_yaml(&old, &listen, dir.path()).as_bytes(),
        )
        .unwrap();
        let log = dir.path().join(format!("case{i}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = control_plane::spawn_tied(
            std::process::Command::new(&pipelock)
                .args(["run", "--config"])
                .arg(&cfg)
                .env("PIPELOCK_HOME", dir.path().join(format!("home{i}")))
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
        .unwrap();
        let started = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"event\":\"startup\"")
        {
            assert!(started.elapsed() < WAIT, "pipelock did not start ({what})");
            std::thread::sleep(Duration::from_millis(20));
        }
        // As config-sync delivers: a rename into the watched directory.
        deliver(
            &cfg,
            loopback_pipelock_yaml(new, &listen, dir.path()).as_bytes(),
        )
        .unwrap();
        let verdict = loop {
            let (ok, refused) = reloads(&log);
            if ok > 0 {
                break "reloaded";
            }
            if refused > 0 {
                break "refused";
            }
            assert!(
                started.elapsed() < WAIT,
                "pipelock gave no verdict on {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        let predicted = strict_reload_refusals(&old, new);
        println!("{what}: pipelock {verdict}; config-sync predicts {predicted:?}");
        assert_eq!(
            predicted.is_empty(),
            verdict == "reloaded",
            "{what}: config-sync and pipelock disagree"
        );
        verdicts.push(verdict);
    }
    assert!(verdicts.contains(&"reloaded") && verdicts.contains(&"refused"));
}
