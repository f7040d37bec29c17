//! `bottle-operator`: the controller.

use bottle_operator::operator;
use bottle_operator::render::Settings;
use clap::Parser;
use tracing_subscriber::EnvFilter;

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
    /// Cluster CIDRs outside the private ranges that bottles must not reach (comma-separated).
    #[arg(long, env = "BOTTLE_CLUSTER_CIDRS", value_delimiter = ',')]
    cluster_cidrs: Vec<String>,
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
    for cidr in &args.cluster_cidrs {
        bottle_operator::model::check_cidr(cidr).map_err(anyhow::Error::msg)?;
    }
    settings.cluster_cidrs = args.cluster_cidrs;
    let client = kube::Client::try_default().await?;
    tracing::info!(namespace = ?args.namespace, "bottle-operator starting");
    operator::run(client, settings, args.namespace).await
}
