//! Time from creating Bottles to all their objects existing, against the real control plane,
//! for 1 Bottle (repeated) and 200 Bottles at once. Prints figures; asserts nothing about time.
//!
//! Anchor, measured in the same run: the same objects (rendered by the same code) created
//! directly by a client with the same concurrency, i.e. the API server's floor with no
//! operator in between. The ratio is the operator's overhead over that floor.
//!
//! Run: `cargo bench --bench apply_to_objects` (set BOTTLE_TOOLS_BIN or let it run install.sh).

#[path = "../tests/support/control_plane.rs"]
mod control_plane;

use std::collections::HashMap;
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

/// Records when each Pod in `ns` first appears.
fn pod_arrivals(client: Client, ns: &str) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let mut w = watcher(pods, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(p)) = w.try_next().await {
            s.lock()
                .unwrap()
                .entry(p.name_any())
                .or_insert_with(Instant::now);
        }
    });
    seen
}

async fn wait_for(seen: &Arc<Mutex<HashMap<String, Instant>>>, names: &[String]) -> Instant {
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
                let d =
                    render::desired(&b, render::validate(&b).unwrap(), &Settings::default(), &fp);
                let pp = PatchParams::apply("bench-direct").force();
                Api::<Secret>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &ca::secret(&b, &material))
                    .await
                    .unwrap();
                Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .patch(&format!("{n}-config"), &pp, &Patch::Apply(&d.config_map))
                    .await
                    .unwrap();
                let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
                for np in &d.network_policies {
                    nps.patch(&np.name_any(), &pp, &Patch::Apply(np))
                        .await
                        .unwrap();
                }
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
    let mut op = control_plane::spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-operator"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .args(["--namespace", "bench-op", "--metrics-addr", "127.0.0.1:0"]),
    )?;
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
    for r in 0..2 {
        let names: Vec<String> = (0..n).map(|i| format!("many-{r}-{i}")).collect();
        many_op.push(rt.block_on(through_operator(&client, "bench-op", &names)));
        let ns = format!("bench-direct-many-{r}");
        namespace(&cp, &ns);
        many_direct.push(rt.block_on(direct(&client, &ns, &names)));
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
    let _ = op.kill();
    let _ = op.wait();
    Ok(())
}
