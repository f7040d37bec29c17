//! Time from creating Bottles to all their objects existing, against the real control plane,
//! for 1 Bottle (repeated) and 200 Bottles at once. Prints figures; asserts nothing about time.
//!
//! Anchor, measured in the same run: the same objects (rendered by the same code) created
//! directly by a client with the same concurrency and in the operator's order (CA, ConfigMap
//! and NetworkPolicies side by side, then the Pod), i.e. the API server's floor with no
//! operator in between. The ratio is the operator's overhead over that floor.
//!
//! API calls are counted by the API server itself (`apiserver_request_total` on its
//! `/metrics`, read before and after each 200-Bottle run), so they include everything the
//! operator sends and the bench's own reads (a LIST and a WATCH of Pods per run, and on the
//! operator side a LIST of Bottles every 200 ms until all report ConfigApplied), and are
//! quoted per converged Bottle by verb, for the second of the two 200-Bottle runs.
//!
//! Then, at scale: 1,000 more Bottles (`BENCH_SCALE`, 0 skips it) through the operator and
//! directly (time until every Pod exists, and until every Bottle reports ConfigApplied), the
//! operator's RSS (VmRSS of its process, read from /proc after each phase), and a restart of
//! the operator over every converged Bottle: the writes it makes (goal: none) and the time
//! until it has reconciled them all. Last, a policy change on those Bottles at once (a host
//! added to each spec): the time until every ConfigMap carries it, through the operator and
//! with the ConfigMaps applied directly.
//!
//! Run: `cargo bench --bench apply_to_objects` (set BOTTLE_TOOLS_BIN or let it run install.sh).

#[path = "../tests/support/control_plane.rs"]
mod control_plane;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_operator::contract::api::{Bottle, BottleSpec};
use bottle_operator::operator::render::{self, Settings, ca};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

const CONCURRENCY: usize = 32;

fn spec() -> BottleSpec {
    serde_json::from_value(
        serde_json::json!({"egress": {"allow": ["api.anthropic.com", "pypi.org"]}}),
    )
    .unwrap()
}

fn namespace(cp: &control_plane::ControlPlane, name: &str) {
    let ok = cp
        .kubectl()
        .args(["create", "namespace", name])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let t = Instant::now();
    while !cp
        .kubectl()
        .args(["-n", name, "get", "sa", "default"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests the API server has served, by (verb, resource), from `apiserver_request_total`.
/// The resource carries its subresource (`bottles/status`); server-side apply counts as
/// verb `APPLY`.
type Calls = BTreeMap<(String, String), f64>;

async fn api_calls(client: &Client) -> Calls {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .expect("the API server's /metrics");
    let label = |series: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        series
            .find(&key)
            .map(|i| {
                let rest = &series[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
            .unwrap_or_default()
    };
    let mut calls = Calls::new();
    for line in text.lines() {
        let Some(series) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((series, value)) = series.rsplit_once(' ') else {
            continue;
        };
        let mut resource = label(series, "resource");
        let sub = label(series, "subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *calls.entry((label(series, "verb"), resource)).or_default() +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    calls
}

/// What was served between two readings, kept to the resources a Bottle involves (the
/// control plane's own leases and the like are not the operator's).
fn delta(before: &Calls, after: &Calls) -> Calls {
    const OURS: [&str; 7] = [
        "bottles",
        "pods",
        "configmaps",
        "secrets",
        "networkpolicies",
        "persistentvolumeclaims",
        "events",
    ];
    after
        .iter()
        .filter(|((_, r), _)| OURS.contains(&r.split('/').next().unwrap_or_default()))
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Prints calls per Bottle by verb, then by verb and resource, for each path side by side.
fn print_calls(n: usize, sides: &[(&str, &Calls)]) {
    let per = |c: &Calls, pick: &dyn Fn(&(String, String)) -> bool| {
        // From 0.0: an empty f64 sum is -0.0, which would print as "-0.00".
        c.iter()
            .filter(|(k, _)| pick(k))
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b)
            / n as f64
    };
    let mut verbs: Vec<String> = sides
        .iter()
        .flat_map(|(_, c)| c.keys().map(|(v, _)| v.clone()))
        .collect();
    verbs.sort();
    verbs.dedup();
    let header: Vec<String> = sides.iter().map(|(s, _)| format!("{s:>10}")).collect();
    println!("  API calls per converged Bottle ({n} Bottles, apiserver_request_total):");
    println!("    {:<36}{}", "verb", header.join(""));
    for v in &verbs {
        let cells: Vec<String> = sides
            .iter()
            .map(|(_, c)| format!("{:>10.2}", per(c, &|k| &k.0 == v)))
            .collect();
        println!("    {v:<36}{}", cells.join(""));
    }
    let total: Vec<String> = sides
        .iter()
        .map(|(_, c)| format!("{:>10.2}", per(c, &|_| true)))
        .collect();
    println!("    {:<36}{}", "all", total.join(""));
    let mut keys: Vec<(String, String)> =
        sides.iter().flat_map(|(_, c)| c.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    println!("    by verb and resource:");
    for k in &keys {
        let cells: Vec<String> = sides
            .iter()
            .map(|(_, c)| format!("{:>10.2}", per(c, &|x| x == k)))
            .collect();
        println!("    {:<36}{}", format!("{} {}", k.0, k.1), cells.join(""));
    }
}

/// Waits until every Bottle in `names` reports its config applied: the operator is done
/// with it, so the API calls read afterwards are those of a converged Bottle.
async fn wait_converged(client: &Client, ns: &str, names: &[String]) {
    wait_converged_polling(client, ns, names, Duration::from_millis(200)).await
}

async fn wait_converged_polling(client: &Client, ns: &str, names: &[String], every: Duration) {
    let api: Api<Bottle> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = api.list(&Default::default()).await.unwrap();
        let done = list
            .items
            .iter()
            .filter(|b| names.contains(&b.name_any()))
            .filter(|b| {
                b.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "ConfigApplied" && c.status == "True")
                })
            })
            .count();
        if done == names.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done}/{} converged",
            names.len()
        );
        tokio::time::sleep(every).await;
    }
}

/// Resident memory of process `pid` in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0
}

/// One series of the operator's own /metrics.
fn operator_metric(addr: &str, series: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

/// The operator over `bench-op`, serving metrics on `metrics`.
fn operator(
    cp: &control_plane::ControlPlane,
    metrics: &str,
) -> anyhow::Result<std::process::Child> {
    Ok(control_plane::spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-operator"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .args(["--namespace", "bench-op", "--metrics-addr", metrics]),
    )?)
}

const WRITES: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// The writes among `c`, as `VERB resource n, …` (or `none`).
fn writes(c: &Calls) -> String {
    let parts: Vec<String> = c
        .iter()
        .filter(|((verb, _), _)| WRITES.contains(&verb.as_str()))
        .map(|((verb, resource), v)| format!("{verb} {resource} {v}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Records when each object `api` watches is first seen with `arrived` true.
fn arrivals<K>(api: Api<K>, arrived: impl Fn(&K) -> bool + Send + 'static) -> Arrivals
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut w = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(o)) = w.try_next().await {
            if arrived(&o) {
                s.lock()
                    .unwrap()
                    .entry(o.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    seen
}

/// When each object first arrived, by name.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each Pod in `ns` first appears.
fn pod_arrivals(client: Client, ns: &str) -> Arrivals {
    arrivals(Api::<Pod>::namespaced(client, ns), |_| true)
}

async fn wait_for(seen: &Arrivals, names: &[String]) -> Instant {
    loop {
        {
            let s = seen.lock().unwrap();
            if names.iter().all(|n| s.contains_key(n)) {
                return names.iter().map(|n| s[n]).max().unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Creates `names` as Bottles and returns the time until every Pod exists.
async fn through_operator(client: &Client, ns: &str, names: &[String]) -> Duration {
    let seen = pod_arrivals(client.clone(), ns);
    tokio::time::sleep(Duration::from_millis(300)).await; // watch established
    let api: Api<Bottle> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &Bottle::new(&n, spec()))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    wait_for(&seen, names).await - t
}

/// The anchor: the same objects created directly, in the operator's order, no operator.
async fn direct(client: &Client, ns: &str, names: &[String]) -> Duration {
    let seen = pod_arrivals(client.clone(), ns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bottles: Api<Bottle> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|n| {
            let (client, bottles) = (client.clone(), bottles.clone());
            let ns = ns.to_string();
            async move {
                // A real Bottle to own the objects, as the operator's objects are owned.
                let b = bottles
                    .create(&PostParams::default(), &Bottle::new(&n, spec()))
                    .await
                    .unwrap();
                let material = ca::generate(&ns, &n).unwrap();
                let fp = ca::fingerprint(&material.cert_pem).unwrap();
                let d = render::desired(
                    &b,
                    render::validate(&b, &Settings::default()).unwrap(),
                    &Settings::default(),
                    &fp,
                );
                let pp = PatchParams::apply("bench-direct").force();
                // As the operator writes them: CA, config and fences side by side, then the Pod.
                let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
                let secret = ca::secret(&b, &material);
                let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
                let config = format!("{n}-config");
                let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
                let names: Vec<String> =
                    d.network_policies.iter().map(|np| np.name_any()).collect();
                let patches: Vec<Patch<&NetworkPolicy>> =
                    d.network_policies.iter().map(Patch::Apply).collect();
                let fences = futures::future::try_join_all(
                    names
                        .iter()
                        .zip(&patches)
                        .map(|(name, patch)| nps.patch(name, &pp, patch)),
                );
                let (post, config_patch) = (PostParams::default(), Patch::Apply(&d.config_map));
                futures::try_join!(
                    secrets.create(&post, &secret),
                    config_maps.patch(&config, &pp, &config_patch),
                    fences,
                )
                .unwrap();
                Api::<Pod>::namespaced(client.clone(), &ns)
                    .patch(&n, &pp, &Patch::Apply(&d.pod))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    wait_for(&seen, names).await - t
}

/// Records when each ConfigMap in `ns` first carries `needle` in its data.
fn config_arrivals(client: Client, ns: &str, needle: &str) -> Arrivals {
    let needle = needle.to_string();
    arrivals(Api::<ConfigMap>::namespaced(client, ns), move |cm| {
        cm.data
            .as_ref()
            .is_some_and(|d| d.values().any(|v| v.contains(&needle)))
    })
}

/// A policy change on every Bottle `names` in `ns` at once: each spec gains `host` in
/// `egress.allow` (a merge patch, as `kubectl patch` sends). With `direct`, the bench then
/// applies the re-rendered ConfigMap itself (the anchor: no operator). Returns the time
/// until every ConfigMap carries the host.
async fn policy_change(
    client: &Client,
    ns: &str,
    names: &[String],
    host: &str,
    direct: bool,
) -> Duration {
    let seen = config_arrivals(client.clone(), ns, host);
    tokio::time::sleep(Duration::from_millis(300)).await; // watch established
    let bottles: Api<Bottle> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let patch =
        serde_json::json!({"spec": {"egress": {"allow": ["api.anthropic.com", "pypi.org", host]}}});
    let t = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|n| {
            let (bottles, config_maps, patch) =
                (bottles.clone(), config_maps.clone(), patch.clone());
            async move {
                let b = bottles
                    .patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                if direct {
                    let d = render::desired(
                        &b,
                        render::validate(&b, &Settings::default()).unwrap(),
                        &Settings::default(),
                        "",
                    );
                    let pp = PatchParams::apply("bench-direct").force();
                    config_maps
                        .patch(&format!("{n}-config"), &pp, &Patch::Apply(&d.config_map))
                        .await
                        .unwrap();
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let configs: Vec<String> = names.iter().map(|n| format!("{n}-config")).collect();
    wait_for(&seen, &configs).await - t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let cp = control_plane::ControlPlane::start()?;
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    assert!(
        cp.kubectl()
            .args(["apply", "-f", crds])
            .stdout(Stdio::null())
            .status()?
            .success()
    );
    assert!(
        cp.kubectl()
            .args([
                "wait",
                "--for=condition=Established",
                "crd/bottles.bottle-operator.dev"
            ])
            .stdout(Stdio::null())
            .status()?
            .success()
    );
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(cp.client())?;

    // Operator watching only the operator namespaces; the anchor namespaces have none.
    let mut op = operator(&cp, &format!("127.0.0.1:{}", control_plane::free_port()))?;
    namespace(&cp, "bench-op");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);

    println!("apply_to_objects: time from create to every Pod existing (the Pod is applied last)");
    let (mut one_op, mut one_direct) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Interleaved, so drift on a shared machine hits both sides alike.
        one_op.push(rt.block_on(through_operator(&client, "bench-op", &[format!("one-{r}")])));
        let ns = format!("bench-direct-{r}");
        namespace(&cp, &ns);
        one_direct.push(rt.block_on(direct(&client, &ns, &["one".to_string()])));
    }
    let (mo, md) = (median(one_op.clone()), median(one_direct.clone()));
    println!(
        "  1 Bottle   x{rounds}: operator median {} (min {}, max {}) | direct median {} | ratio {:.2}",
        ms(mo),
        ms(*one_op.iter().min().unwrap()),
        ms(*one_op.iter().max().unwrap()),
        ms(md),
        mo.as_secs_f64() / md.as_secs_f64()
    );

    let n = 200;
    let (mut many_op, mut many_direct) = (Vec::new(), Vec::new());
    let (mut calls_op, mut calls_direct) = (Vec::new(), Vec::new());
    for r in 0..2 {
        let names: Vec<String> = (0..n).map(|i| format!("many-{r}-{i}")).collect();
        let before = rt.block_on(api_calls(&client));
        many_op.push(rt.block_on(through_operator(&client, "bench-op", &names)));
        rt.block_on(wait_converged(&client, "bench-op", &names));
        // Trailing reconciles (woken by the operator's own writes) belong to this run.
        std::thread::sleep(Duration::from_secs(2));
        let between = rt.block_on(api_calls(&client));
        calls_op.push(delta(&before, &between));
        let ns = format!("bench-direct-many-{r}");
        namespace(&cp, &ns);
        let before = rt.block_on(api_calls(&client));
        many_direct.push(rt.block_on(direct(&client, &ns, &names)));
        std::thread::sleep(Duration::from_secs(2));
        calls_direct.push(delta(&before, &rt.block_on(api_calls(&client))));
    }
    let (mo, md) = (median(many_op.clone()), median(many_direct.clone()));
    println!(
        "  {n} Bottles x2: operator {} and {} | direct {} and {} | ratio of medians {:.2} | {:.1} Bottles/s through the operator",
        ms(many_op[0]),
        ms(many_op[1]),
        ms(many_direct[0]),
        ms(many_direct[1]),
        mo.as_secs_f64() / md.as_secs_f64(),
        n as f64 / mo.as_secs_f64()
    );
    print_calls(
        n,
        &[("operator", &calls_op[1]), ("direct", &calls_direct[1])],
    );
    println!(
        "  operator RSS after {} Bottles: {:.1} MiB",
        1 + rounds + 2 * n,
        rss_mib(op.id())
    );

    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    if scale > 0 {
        let names: Vec<String> = (0..scale).map(|i| format!("scale-{i}")).collect();
        let before = rt.block_on(api_calls(&client));
        let t = Instant::now();
        let to_pods = rt.block_on(through_operator(&client, "bench-op", &names));
        // Polled once a second: a LIST of a thousand Bottles is not free for the API server.
        rt.block_on(wait_converged_polling(
            &client,
            "bench-op",
            &names,
            Duration::from_secs(1),
        ));
        let converged = t.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let calls = delta(&before, &rt.block_on(api_calls(&client)));
        let ns = "bench-direct-scale";
        namespace(&cp, ns);
        let before = rt.block_on(api_calls(&client));
        let direct_pods = rt.block_on(direct(&client, ns, &names));
        std::thread::sleep(Duration::from_secs(2));
        let direct_calls = delta(&before, &rt.block_on(api_calls(&client)));
        println!(
            "  {scale} Bottles: operator {} to every Pod, {} to every Bottle converged (polled each second) | direct {} | ratio {:.2} | operator RSS {:.1} MiB with {} Bottles",
            ms(to_pods),
            ms(converged),
            ms(direct_pods),
            to_pods.as_secs_f64() / direct_pods.as_secs_f64(),
            rss_mib(op.id()),
            1 + rounds + 2 * n + scale
        );
        print_calls(scale, &[("operator", &calls), ("direct", &direct_calls)]);
    }

    // A restart over every converged Bottle: it should find nothing to write.
    let total = 1 + rounds + 2 * n + scale;
    let _ = op.kill();
    let _ = op.wait();
    let metrics = format!("127.0.0.1:{}", control_plane::free_port());
    let before = rt.block_on(api_calls(&client));
    let t = Instant::now();
    let mut op = operator(&cp, &metrics)?;
    let ok = "bottle_operator_reconcile_duration_seconds_count{result=\"ok\"}";
    while operator_metric(&metrics, ok).unwrap_or(0.0) < total as f64 {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the restarted operator did not reconcile {total} Bottles"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let calls = delta(&before, &rt.block_on(api_calls(&client)));
    println!(
        "  restart over {total} converged Bottles: every Bottle reconciled {} after start | writes: {} | RSS {:.1} MiB",
        ms(ready),
        writes(&calls),
        rss_mib(op.id())
    );
    print_calls(total, &[("restart", &calls)]);

    // A policy change on all of the scale Bottles at once, through the restarted operator,
    // and the same change made directly (the Bottle patched, its ConfigMap applied by hand).
    if scale > 0 {
        let names: Vec<String> = (0..scale).map(|i| format!("scale-{i}")).collect();
        let host = "policy-change.example.com";
        let before = rt.block_on(api_calls(&client));
        let through = rt.block_on(policy_change(&client, "bench-op", &names, host, false));
        std::thread::sleep(Duration::from_secs(2));
        let calls = delta(&before, &rt.block_on(api_calls(&client)));
        let by_hand = rt.block_on(policy_change(
            &client,
            "bench-direct-scale",
            &names,
            host,
            true,
        ));
        println!(
            "  policy change on {scale} Bottles at once (a host added to egress.allow): every ConfigMap carries it {} after the first patch | direct {} | ratio {:.2} | operator RSS {:.1} MiB",
            ms(through),
            ms(by_hand),
            through.as_secs_f64() / by_hand.as_secs_f64(),
            rss_mib(op.id())
        );
        print_calls(scale, &[("policy change", &calls)]);
    }
    let _ = op.kill();
    let _ = op.wait();
    Ok(())
}
