//! `kubectl bottle`: get into a bottle, see how it is doing, read its logs, fetch its CA,
//! pause and resume it, and work the access queue (file, list, approve, deny).
//! Installed on PATH as `kubectl-bottle`, kubectl runs it as `kubectl bottle ...`.

use std::io::IsTerminal;
use std::process::Command;

use bottle_operator::contract::api::{AccessRequest, Bottle, Verdict};
use bottle_operator::contract::config::layout::{self, Sidecar};
use bottle_operator::operator::render::meta;
use bottle_operator::plugin;
use bottle_operator::pod::config_status::Report;
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

#[derive(Parser)]
#[command(
    name = "kubectl bottle",
    version,
    about = "Work with bottles: exec, status, logs, ca, pause, resume, requests, request, approve, deny, dashboard"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open a shell or program in the agent container (default: claude).
    Exec {
        /// Bottle name.
        name: String,
        /// Command to run instead of claude.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Phase, conditions, containers, CA fingerprint, and each sidecar's config version
    /// (ConfigMap, mounted, running).
    Status {
        /// Bottle name.
        name: String,
    },
    /// All containers' logs merged by time.
    Logs {
        /// Bottle name.
        name: String,
        /// Only lines newer than this many seconds.
        #[arg(long)]
        since: Option<i64>,
    },
    /// Print the bottle CA certificate (PEM), to trust the bottle's interception elsewhere.
    Ca {
        /// Bottle name.
        name: String,
    },
    /// Stop the bottle's Pod, keeping its CA, config, workspace and NetworkPolicies
    /// (sets spec.paused).
    Pause {
        /// Bottle name.
        name: String,
    },
    /// Start a paused bottle again, with the same workspace.
    Resume {
        /// Bottle name.
        name: String,
    },
    /// The access queue: pending requests first.
    Requests {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// File an access request for a bottle: a route (with --path) or a whole host.
    Request {
        /// Bottle name.
        name: String,
        /// The host asked for.
        #[arg(long)]
        host: String,
        /// A path prefix on it (repeat for more); none asks for every path.
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Approve an access request, perhaps narrowed and time-boxed.
    Approve {
        /// AccessRequest name.
        name: String,
        /// Grant only these path prefixes (each within a requested one; repeat for more).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Take the grant back after this long (30m, 2h, 1d).
        #[arg(long = "for", value_parser = plugin::access::parse_for)]
        for_seconds: Option<u32>,
        /// Words for the agent.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Serve the access queue, the bottles and their Events on a page at 127.0.0.1, with
    /// approve and deny, acting as you (your kubeconfig).
    Dashboard {
        /// Port on 127.0.0.1 (0: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Deny an access request.
    Deny {
        /// AccessRequest name.
        name: String,
        /// Why, for the agent.
        #[arg(long)]
        reason: String,
    },
}

/// Records the caller's decision on request `name`.
async fn decide(
    client: &Client,
    ns: &str,
    name: &str,
    patch: serde_json::Value,
) -> anyhow::Result<()> {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), ns);
    let r = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let verdict = r.spec.decision.map(|d| d.verdict);
    println!(
        "accessrequest {ns}/{name}: {verdict:?} recorded; the operator carries it out (kubectl get areq {name} -n {ns})"
    );
    Ok(())
}

/// Asks every config-reloading sidecar of `pod` (by exec, all at once) which config version
/// it has mounted and which it runs.
async fn sidecar_configs(pods: &Api<Pod>, pod: &Pod, cm: &ConfigMap) -> Vec<plugin::SidecarConfig> {
    let names = bottle_operator::operator::render::pod::container_names(pod);
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let asks = Sidecar::ALL
        .into_iter()
        .filter(|s| names.iter().any(|n| n == s.container()))
        .map(|s| async move {
            let report = if running {
                config_report(pods, pod.metadata.name.as_deref().unwrap_or_default(), s).await
            } else {
                Err("the Pod is not running".to_string())
            };
            plugin::SidecarConfig {
                sidecar: s,
                desired: plugin::desired_hash(cm, s),
                report,
            }
        });
    futures::future::join_all(asks).await
}

async fn config_report(pods: &Api<Pod>, pod: &str, s: Sidecar) -> Result<Report, String> {
    let command = [layout::SIDECAR_BIN, "config-status", s.arg()];
    plugin::exec::json(pods, pod, s.container(), &command).await
}

/// Sets `spec.paused` with a merge patch of that one field (the rest of the user's spec is
/// left alone), and says what follows.
async fn set_paused(
    bottles: &Api<Bottle>,
    ns: &str,
    name: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    bottles
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let what = if paused {
        "pausing: its Pod is deleted, everything else is kept"
    } else {
        "resuming: its Pod starts again with the same workspace"
    };
    println!("bottle {ns}/{name} {what}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::try_default().await?;
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let bottles: Api<Bottle> = Api::namespaced(client.clone(), &ns);
    match cli.command {
        Cmd::Exec { name, command } => {
            let b = bottles.get(&name).await?;
            let supervised = b.spec.supervised();
            let pod = b.status.and_then(|s| s.pod_name).unwrap_or(name);
            let command = plugin::agent_command(command, supervised);
            // A terminal only when there is one (scripts and pipes get plain stdin).
            let tty = if std::io::stdin().is_terminal() {
                "-it"
            } else {
                "-i"
            };
            let status = Command::new("kubectl")
                .args(["exec", tty, "-n", &ns, &pod, "-c", "agent", "--"])
                .args(&command)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Status { name } => {
            let b = bottles.get(&name).await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let pod = pods.get_opt(&meta::pod_name(&b)).await?;
            let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
            let cm = cms.get_opt(&meta::config_map_name(&b)).await?;
            let configs = match (&pod, &cm) {
                (Some(p), Some(cm)) => sidecar_configs(&pods, p, cm).await,
                _ => Vec::new(),
            };
            print!("{}", plugin::status_text(&b, pod.as_ref(), &configs));
        }
        Cmd::Logs { name, since } => {
            let b = bottles.get(&name).await?;
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let pod = pods.get(&meta::pod_name(&b)).await?;
            let names = bottle_operator::operator::render::pod::container_names(&pod);
            let mut all = Vec::new();
            for c in names {
                let lp = LogParams {
                    container: Some(c.clone()),
                    timestamps: true,
                    since_seconds: since,
                    ..Default::default()
                };
                match pods.logs(&meta::pod_name(&b), &lp).await {
                    Ok(text) => all.push((c, text)),
                    Err(e) => eprintln!("{c}: {e}"),
                }
            }
            print!("{}", plugin::merge_logs(&all));
        }
        Cmd::Pause { name } => set_paused(&bottles, &ns, &name, true).await?,
        Cmd::Resume { name } => set_paused(&bottles, &ns, &name, false).await?,
        Cmd::Requests { all_namespaces } => {
            let api: Api<AccessRequest> = if all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &ns)
            };
            let items = api.list(&ListParams::default()).await?.items;
            let now = k8s_openapi::jiff::Timestamp::now();
            print!(
                "{}",
                plugin::access::requests_table(&items, now, all_namespaces)
            );
        }
        Cmd::Request {
            name,
            host,
            paths,
            reason,
        } => {
            let user = plugin::access::whoami(&client).await?;
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let r = plugin::access::new_request(&name, &user, &host, &paths, &reason);
            let made = api.create(&PostParams::default(), &r).await?;
            println!(
                "accessrequest {ns}/{} filed for bottle {name}; an approver decides it (kubectl bottle requests)",
                made.metadata.name.unwrap_or_default()
            );
        }
        Cmd::Approve {
            name,
            paths,
            for_seconds,
            reason,
        } => {
            let user = plugin::access::whoami(&client).await?;
            let paths = (!paths.is_empty()).then_some(paths);
            let patch =
                plugin::access::decision_patch(Verdict::Approve, &user, paths, for_seconds, reason);
            decide(&client, &ns, &name, patch).await?;
        }
        Cmd::Dashboard {
            port,
            all_namespaces,
        } => {
            let user = plugin::access::whoami(&client).await?;
            let scope = (!all_namespaces).then(|| ns.clone());
            let who = user.clone();
            plugin::dashboard::serve(client, user, scope, port, move |url| {
                // One line a script can read; kubectl keeps serving until Ctrl-C.
                println!("dashboard for {who}: {url}");
            })
            .await?;
        }
        Cmd::Deny { name, reason } => {
            let user = plugin::access::whoami(&client).await?;
            let patch =
                plugin::access::decision_patch(Verdict::Deny, &user, None, None, Some(reason));
            decide(&client, &ns, &name, patch).await?;
        }
        Cmd::Ca { name } => {
            let b = bottles.get(&name).await?;
            let secrets: Api<Secret> = Api::namespaced(client, &ns);
            let s = secrets.get(&meta::ca_secret_name(&b)).await?;
            let cert = s.data.and_then(|d| {
                d.get(bottle_operator::contract::config::layout::CA_CERT_FILE)
                    .cloned()
            });
            match cert {
                Some(c) => print!("{}", String::from_utf8_lossy(&c.0)),
                None => anyhow::bail!("the CA Secret has no certificate yet"),
            }
        }
    }
    Ok(())
}
