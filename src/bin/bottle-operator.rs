//! `bottle-operator`: the controller.

use bottle_operator::operator;
use bottle_operator::operator::render::Settings;
use clap::Parser;
use tracing_subscriber::EnvFilter;

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

#[derive(Parser)]
#[command(version, about = "Reconciles Bottles into sandboxed agent Pods")]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "BOTTLE_NAMESPACE")]
    namespace: Option<String>,
    /// Agent image for Bottles that name none.
    #[arg(long, env = "BOTTLE_AGENT_IMAGE")]
    agent_image: Option<String>,
    /// Image with the bottle-sidecar binary.
    #[arg(long, env = "BOTTLE_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,
    /// pipelock image.
    #[arg(long, env = "BOTTLE_PIPELOCK_IMAGE")]
    pipelock_image: Option<String>,
    /// imagePullPolicy of the agent container (default: Kubernetes' own).
    #[arg(long, value_parser = PULL_POLICIES)]
    agent_image_pull_policy: Option<String>,
    /// imagePullPolicy of the containers running the sidecar image.
    #[arg(long, value_parser = PULL_POLICIES)]
    sidecar_image_pull_policy: Option<String>,
    /// imagePullPolicy of the pipelock container.
    #[arg(long, value_parser = PULL_POLICIES)]
    pipelock_image_pull_policy: Option<String>,
    /// Secrets the kubelet uses to pull bottle images; each must exist in every Bottle's
    /// namespace (comma-separated).
    #[arg(long, env = "BOTTLE_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    image_pull_secret: Vec<String>,
    /// Cluster CIDRs outside the private ranges that bottles must not reach (comma-separated).
    #[arg(long, env = "BOTTLE_CLUSTER_CIDRS", value_delimiter = ',',
          value_parser = bottle_operator::operator::render::network_policy::parse_cidr)]
    cluster_cidrs: Vec<ipnet::IpNet>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "BOTTLE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Elect a leader with a Lease before reconciling (run more than one replica safely).
    #[arg(long, env = "BOTTLE_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Seconds a Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds before a converged Bottle is checked again without a trigger (drift the
    /// watches cannot see).
    #[arg(long, env = "BOTTLE_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Bottles reconciled at once (0: no limit).
    #[arg(long, env = "BOTTLE_CONCURRENCY", default_value_t = 128)]
    concurrency: u16,
    /// Seconds an access request waits for a decision before it expires.
    #[arg(long, env = "BOTTLE_ACCESS_PENDING_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    access_pending_seconds: u64,
    /// Access requests of one Bottle that may wait at once; more are denied.
    #[arg(long, env = "BOTTLE_ACCESS_MAX_PENDING", default_value_t = 5)]
    access_max_pending: usize,
    /// The API server as bottle Pods reach it, IP:PORT, for supervised Bottles (default: an
    /// endpoint of the default/kubernetes Service, read at start).
    #[arg(long, env = "BOTTLE_API_SERVER_FOR_PODS")]
    api_server_for_pods: Option<std::net::SocketAddr>,
    /// Log as JSON.
    #[arg(long, env = "BOTTLE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let mut settings = Settings::default();
    if let Some(i) = args.agent_image {
        settings.agent_image = i;
    }
    if let Some(i) = args.sidecar_image {
        settings.sidecar_image = i;
    }
    if let Some(i) = args.pipelock_image {
        settings.pipelock_image = i;
    }
    settings.agent_pull_policy = args.agent_image_pull_policy;
    settings.sidecar_pull_policy = args.sidecar_image_pull_policy;
    settings.pipelock_pull_policy = args.pipelock_image_pull_policy;
    for name in &args.image_pull_secret {
        let dns = name.len() <= 253
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        anyhow::ensure!(dns, "--image-pull-secret {name:?} is not a Secret name");
    }
    settings.image_pull_secrets = args.image_pull_secret;
    settings.cluster_cidrs = args.cluster_cidrs;
    let config = kube::Config::infer().await?;
    // With leader election every write is fenced by the lease; without it, nothing to fence.
    let fence = std::sync::Arc::new(operator::leader::Fence::default());
    let client = if args.leader_elect {
        operator::leader::fenced_client(config, fence.clone())?
    } else {
        kube::Client::try_from(config)?
    };
    tracing::info!(namespace = ?args.namespace, "bottle-operator starting");
    settings.api_server = match args.api_server_for_pods {
        Some(a) => Some(a),
        None => operator::api_endpoint::discover(&client).await,
    };
    let telemetry = operator::telemetry::Telemetry::new();
    telemetry.clone().serve(&args.metrics_addr).await?;
    if args.leader_elect {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("bottle-operator-{}", std::process::id()));
        let election = operator::leader::Election {
            namespace: args.leader_election_namespace,
            name: "bottle-operator".into(),
            identity,
            lease: std::time::Duration::from_secs(args.lease_duration_seconds),
        };
        operator::leader::lead(client.clone(), election, fence).await;
    }
    operator::run(
        client,
        settings,
        args.namespace,
        telemetry,
        std::time::Duration::from_secs(args.resync_seconds),
        args.concurrency,
        operator::access::review::Limits {
            pending_for: std::time::Duration::from_secs(args.access_pending_seconds),
            max_pending: args.access_max_pending,
        },
    )
    .await
}
