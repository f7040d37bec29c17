//! `bottle-sidecar`: the programs that run inside a bottle Pod, one subcommand each.

use std::path::PathBuf;

use bottle_operator::contract::config::layout;
use bottle_operator::pod::netinit;
use bottle_operator::pod::{ca_bundle, config_status};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Programs that run inside a bottle Pod")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The agent's HTTP(S) proxy: TLS interception, host + path routes, credential injection.
    Egress {
        /// egress.yaml (in the mounted ConfigMap; reloaded live).
        #[arg(long)]
        config: PathBuf,
    },
    /// Base-URL style door to named upstream APIs, credential injected.
    CredProxy {
        /// cred-proxy.yaml (in the mounted ConfigMap; reloaded live).
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the declared git remotes on loopback; scan pushes; forward clean ones upstream.
    GitGate {
        /// git-gate.yaml (in the mounted ConfigMap; reloaded live).
        #[arg(long)]
        config: PathBuf,
        /// The gitleaks binary.
        #[arg(long, default_value = "gitleaks")]
        gitleaks: String,
    },
    /// The agent's MCP tool server and JSON API for access requests.
    Supervise {
        /// supervise.yaml (in the mounted ConfigMap).
        #[arg(long)]
        config: PathBuf,
    },
    /// The pre-receive hook git-gate installs in its mirrors (run by git, not by people).
    GitGateHook {
        /// git-gate.yaml.
        #[arg(long)]
        config: PathBuf,
        /// The remote whose mirror runs the hook.
        #[arg(long)]
        remote: String,
        /// The gitleaks binary.
        #[arg(long, default_value = "gitleaks")]
        gitleaks: String,
    },
    /// Deliver pipelock's config from the ConfigMap into the directory pipelock watches.
    ConfigSync {
        /// The file in the mounted ConfigMap.
        #[arg(long)]
        from: PathBuf,
        /// The file pipelock reads (in a shared emptyDir).
        #[arg(long)]
        to: PathBuf,
    },
    /// Print (JSON) the config version this container has mounted and the one its sidecar
    /// runs; `kubectl bottle status` runs it by exec.
    ConfigStatus {
        /// Which sidecar this container serves.
        #[arg(value_enum)]
        kind: layout::Sidecar,
        /// The mounted config file (the Pod sets it in the environment).
        #[arg(long, env = layout::CONFIG_ENV)]
        config: PathBuf,
        /// pipelock only: the file config-sync delivers (the Pod sets it in the environment).
        #[arg(long, env = layout::DELIVERED_CONFIG_ENV)]
        delivered: Option<PathBuf>,
    },
    /// Print (JSON) the hosts egress refused lately for want of a route; the dashboard runs
    /// it by exec.
    Refused {
        /// egress's admin address.
        #[arg(long, default_value_t = std::net::SocketAddr::from(([127, 0, 0, 1], layout::EGRESS_ADMIN_PORT)))]
        admin: std::net::SocketAddr,
    },
    /// Install the in-Pod traffic lock (iptables/ip6tables) and exit. Needs NET_ADMIN.
    Netinit {
        /// The agent's UID.
        #[arg(long)]
        agent_uid: u32,
        /// A sidecar UID allowed to connect out (repeat).
        #[arg(long = "sidecar-uid", required = true)]
        sidecar_uids: Vec<u32>,
        /// A loopback port the agent may connect to (repeat).
        #[arg(long = "agent-port", required = true)]
        agent_ports: Vec<u16>,
        /// The API server (IP:PORT), reachable only by `--api-uid`.
        #[arg(long, requires = "api_uid")]
        api_server: Option<std::net::SocketAddr>,
        /// The one UID that may connect to `--api-server`.
        #[arg(long, requires = "api_server")]
        api_uid: Option<u32>,
        /// Print the rules instead of installing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// The kubelet's startup/readiness check: the admin port answers `/readyz`, and the
    /// listeners this sidecar forwards to accept connections. Exits non-zero otherwise.
    Probe {
        /// The sidecar's admin address (on the Pod's loopback).
        #[arg(long)]
        ready: std::net::SocketAddr,
        /// An address that must accept connections (repeat), e.g. pipelock's.
        #[arg(long)]
        listening: Vec<std::net::SocketAddr>,
    },
    /// Build the agent's trust store: system roots plus the bottle CA.
    CaBundle {
        /// The bottle CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// Directory to write bottle-ca.crt and ca-bundle.crt into.
        #[arg(long)]
        out_dir: PathBuf,
        /// System bundles to try, first found wins.
        #[arg(long = "system-bundle", default_values = ca_bundle::SYSTEM_BUNDLES)]
        system_bundles: Vec<PathBuf>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Egress { config } => {
            runtime()?.block_on(bottle_operator::pod::egress::run(config))?
        }
        Command::CredProxy { config } => {
            runtime()?.block_on(bottle_operator::pod::cred_proxy::run(config))?
        }
        Command::GitGate { config, gitleaks } => {
            runtime()?.block_on(bottle_operator::pod::git_gate::run(config, gitleaks))?
        }
        Command::Supervise { config } => {
            runtime()?.block_on(bottle_operator::pod::supervise::run(config))?
        }
        Command::GitGateHook {
            config,
            remote,
            gitleaks,
        } => {
            let (cfg, _) = bottle_operator::pod::git_gate::server::read_config(&config)?;
            // stderr reaches the pusher as `remote:` lines; a non-zero exit refuses the push.
            if let Err(e) = bottle_operator::pod::git_gate::hook::run(
                &cfg,
                &remote,
                &gitleaks,
                std::io::stdin().lock(),
            ) {
                eprintln!("git-gate: {e:#}");
                std::process::exit(1);
            }
        }
        Command::ConfigSync { from, to } => {
            runtime()?.block_on(bottle_operator::pod::config_sync::run(from, to))?
        }
        Command::ConfigStatus {
            kind,
            config,
            delivered,
        } => {
            let r = runtime()?.block_on(config_status::report(kind, &config, delivered.as_deref()));
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Refused { admin } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let body = rt.block_on(bottle_operator::pod::core::admin::get(&format!(
                "http://{admin}/refused"
            )))?;
            println!("{}", String::from_utf8_lossy(&body));
        }
        Command::Netinit {
            agent_uid,
            sidecar_uids,
            agent_ports,
            api_server,
            api_uid,
            dry_run,
        } => {
            let plan = netinit::Plan {
                agent_uid,
                sidecar_uids,
                agent_ports,
                api_server: api_server.zip(api_uid),
            };
            if dry_run {
                print!(
                    "{}{}",
                    netinit::render(&plan, netinit::Family::V4),
                    netinit::render(&plan, netinit::Family::V6)
                );
            } else {
                netinit::apply(&plan)?;
            }
        }
        Command::Probe { ready, listening } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if let Err(e) = rt.block_on(bottle_operator::pod::probe::check(ready, &listening)) {
                // The kubelet shows this line in the probe's failure Event.
                println!("not ready: {e:#}");
                std::process::exit(1);
            }
        }
        Command::CaBundle {
            ca,
            out_dir,
            system_bundles,
        } => {
            let n = ca_bundle::build(&ca, &out_dir, &system_bundles)?;
            tracing::info!(certificates = n, dir = %out_dir.display(), "trust bundle written");
        }
    }
    Ok(())
}
