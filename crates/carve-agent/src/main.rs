//! carve-agent: the optional cluster-side helper of the carve CSI driver.
//! See docs/agent.md for what it does and every flag.

use std::time::Duration;

use clap::Parser;

use carve_agent::leader::LeaseConfig;
use carve_agent::node_removal::{NodeRemoval, Policy};
use carve_agent::run::{run, Settings};

/// Durations on the command line: a number and a unit (`90s`, `10m`, `2h`).
fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and s, m or h"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: expected a number and s, m or h")),
    }
}

#[derive(Parser)]
#[command(
    version,
    about = "carve's cluster agent: restore placement, StorageClass checks, node removal"
)]
struct Flags {
    /// The CSI driver name carve runs as.
    #[arg(long, default_value = "carve.dev")]
    driver_name: String,
    /// What to do with the claims of a node deleted from the cluster.
    #[arg(long, value_enum, default_value = "event")]
    node_removal_policy: Policy,
    /// How long a node must stay deleted before the policy applies.
    #[arg(long, value_parser = duration, default_value = "10m")]
    node_removal_grace: Duration,
    /// How often carve's PVs and capacities are compared with the Nodes.
    #[arg(long, value_parser = duration, default_value = "60s")]
    node_removal_interval: Duration,
    /// Namespace of the leader Lease (the agent's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "carve-system")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "carve-agent")]
    leader_election_lease: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// How long the Lease holds without renewal.
    #[arg(long, value_parser = duration, default_value = "15s")]
    leader_election_lease_duration: Duration,
    /// How often the leader renews.
    #[arg(long, value_parser = duration, default_value = "5s")]
    leader_election_renew_interval: Duration,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let filter = tracing_subscriber::EnvFilter::new(&flags.log);
    if flags.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if flags.leader_election_renew_interval * 3 > flags.leader_election_lease_duration {
        eprintln!("carve-agent: --leader-election-renew-interval must be at most a third of --leader-election-lease-duration");
        std::process::exit(2);
    }
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carve-agent: no Kubernetes API configuration: {e}");
            std::process::exit(1);
        }
    };
    let settings = Settings {
        driver: flags.driver_name,
        lease: LeaseConfig {
            namespace: flags.leader_election_namespace,
            name: flags.leader_election_lease,
            identity: flags.identity,
            duration: flags.leader_election_lease_duration,
            renew_every: flags.leader_election_renew_interval,
        },
        node_removal: NodeRemoval::new(flags.node_removal_policy, flags.node_removal_grace),
        sweep_every: flags.node_removal_interval,
    };
    if let Err(e) = run(client, settings).await {
        eprintln!("carve-agent: {e}");
        std::process::exit(1);
    }
}
