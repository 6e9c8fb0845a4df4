//! carve-agent: the optional cluster-side helper of the carve CSI driver.
//! See docs/agent.md for what it does and every flag.

use std::time::Duration;

use clap::Parser;

use carve_agent::leader::LeaseConfig;
use carve_agent::node_removal::{NodeRemoval, Policy};
use carve_agent::orphans::{HttpInventories, Orphans};
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
    /// How long a carve LV may exist without a PV (or a PV without its LV)
    /// before it is reported as an orphan.
    #[arg(long, value_parser = duration, default_value = "1h")]
    orphan_grace: Duration,
    /// How often each node's LV inventory is compared with the PVs.
    #[arg(long, value_parser = duration, default_value = "10m")]
    orphan_interval: Duration,
    /// The port carve serves /metrics and /volumes on in its node pods
    /// (carve serve --metrics-address).
    #[arg(long, default_value_t = 9842)]
    node_inventory_port: u16,
    /// Label selector of carve's node pods in the agent's namespace.
    #[arg(long, default_value = "app.kubernetes.io/name=carve-node")]
    node_pod_selector: String,
    /// Serve the agent's Prometheus metrics at HOST:PORT/metrics.
    #[arg(long)]
    metrics_address: Option<String>,
    /// Namespace of the leader Lease: the agent's own, where carve's node pods
    /// and CSIStorageCapacity objects are.
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
        node_removal_every: flags.node_removal_interval,
        orphans: Orphans::new(
            flags.orphan_grace,
            &flags.node_pod_selector,
            Box::new(HttpInventories {
                port: flags.node_inventory_port,
                timeout: Duration::from_secs(20),
            }),
        ),
        orphans_every: flags.orphan_interval,
        metrics_address: flags.metrics_address,
    };
    if let Err(e) = run(client, settings).await {
        eprintln!("carve-agent: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// docs/agent.md documents every flag, and no flag that does not exist.
    #[test]
    fn every_flag_is_in_the_docs_and_every_documented_flag_exists() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/agent.md"))
                .unwrap();
        let flags: Vec<String> = super::Flags::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .filter(|f| f != "--help" && f != "--version")
            .collect();
        let table = &docs[docs.find("## Flags").unwrap()..];
        for f in &flags {
            assert!(
                table.contains(&format!("| `{f}` |")),
                "{f} is not in docs/agent.md's flag table"
            );
        }
        let documented = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `--"))
            .count();
        assert_eq!(
            documented,
            flags.len(),
            "docs/agent.md lists flags carve-agent does not have"
        );
    }

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(
            super::duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            super::duration("10m"),
            Ok(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            super::duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        for bad in ["", "10", "m", "5d", "-1s", "1.5h"] {
            assert!(super::duration(bad).is_err(), "{bad}");
        }
    }
}
