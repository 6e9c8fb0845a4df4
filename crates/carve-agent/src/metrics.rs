//! The agent's Prometheus metrics (docs/agent.md lists each), served by
//! carve-core's endpoint when `--metrics-address` is set.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Default, Clone)]
pub struct AgentMetrics {
    leader: Gauge,
    reconciles: Family<Labels, Counter>,
    orphan_lvs: Family<Labels, Gauge>,
    missing_lvs: Family<Labels, Gauge>,
    inventory_up: Family<Labels, Gauge>,
    removed_nodes: Gauge,
    claims_deleted: Counter,
}

impl AgentMetrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "carve_agent_leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        r.register(
            "carve_agent_reconciles",
            "reconciles by controller (placement, storage-class, node-removal, orphans) and result (ok, error)",
            self.reconciles.clone(),
        );
        r.register(
            "carve_agent_orphan_lvs",
            "carve LVs past the grace period that nothing references, by node and kind (volume, snapshot)",
            self.orphan_lvs.clone(),
        );
        r.register(
            "carve_agent_missing_lvs",
            "carve PVs past the grace period whose LV is not on their node",
            self.missing_lvs.clone(),
        );
        r.register(
            "carve_agent_inventory_up",
            "1 when the node's LV inventory (/volumes) was read at the last sweep",
            self.inventory_up.clone(),
        );
        r.register(
            "carve_agent_removed_nodes",
            "nodes carve's PVs or capacities name that are not in the cluster",
            self.removed_nodes.clone(),
        );
        r.register(
            "carve_agent_claims_deleted",
            "claims deleted by the node removal policy delete-claims",
            self.claims_deleted.clone(),
        );
        r
    }

    pub fn leader(&self, leading: bool) {
        self.leader.set(leading as i64);
    }

    pub fn reconciled(&self, controller: &str, ok: bool) {
        self.reconciles
            .get_or_create(&l(&[
                ("controller", controller),
                ("result", if ok { "ok" } else { "error" }),
            ]))
            .inc();
    }

    pub fn inventory_up(&self, node: &str, up: bool) {
        self.inventory_up
            .get_or_create(&l(&[("node", node)]))
            .set(up as i64);
    }

    pub fn orphans(&self, node: &str, volumes: i64, snapshots: i64, missing: i64) {
        self.orphan_lvs
            .get_or_create(&l(&[("node", node), ("kind", "volume")]))
            .set(volumes);
        self.orphan_lvs
            .get_or_create(&l(&[("node", node), ("kind", "snapshot")]))
            .set(snapshots);
        self.missing_lvs
            .get_or_create(&l(&[("node", node)]))
            .set(missing);
    }

    /// Forgets the per-node series before a sweep sets them again, so a node
    /// that is gone leaves no stale series.
    pub fn clear_nodes(&self) {
        self.orphan_lvs.clear();
        self.missing_lvs.clear();
        self.inventory_up.clear();
    }

    pub fn node_removal(&self, removed: usize, deleted: usize) {
        self.removed_nodes.set(removed as i64);
        self.claims_deleted.inc_by(deleted as u64);
    }
}

/// Serves `registry` at /metrics.
pub struct Handler(pub Registry);

impl carve_core::endpoint::Handler for Handler {
    fn get(&self, path: &str) -> Option<carve_core::endpoint::Answer> {
        (path == "/metrics").then(|| {
            let mut s = String::new();
            encode(&mut s, &self.0)
                .map(|_| (carve_core::endpoint::OPENMETRICS, s))
                .map_err(|e| e.to_string())
        })
    }

    fn paths(&self) -> &'static str {
        "/metrics is"
    }
}

#[cfg(test)]
mod tests {
    /// docs/agent.md's metrics table names exactly what the registry exports.
    #[test]
    fn every_metric_is_in_the_docs() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/agent.md"))
                .unwrap();
        let m = super::AgentMetrics::default();
        m.reconciled("placement", true);
        m.orphans("n", 0, 0, 0);
        m.inventory_up("n", true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        let mut exported: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').unwrap();
                if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                }
            })
            .collect();
        exported.sort();
        let table = &docs[docs.find("## Metrics").unwrap()..docs.find("## Flags").unwrap()];
        let mut documented: Vec<String> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| l[..l.find('`').unwrap()].to_string())
            .collect();
        documented.sort();
        assert_eq!(exported, documented);
    }
}
