//! `bottle-sidecar`: the programs that run inside a bottle Pod, one subcommand each.

use std::path::PathBuf;

use bottle_operator::sidecar::ca_bundle;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Programs that run inside a bottle Pod")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
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
