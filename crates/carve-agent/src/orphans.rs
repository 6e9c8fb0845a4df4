//! The orphan report: LVs that no PV (or, for snapshots, no
//! VolumeSnapshotContent) references, and PVs whose LV is gone. Neither is
//! visible from one side alone: a PV deleted while its node was down leaves
//! its LV behind; an LV removed by hand leaves its PV pointing at nothing.
//!
//! How the agent learns each node's LVs without CRDs and without a
//! Kubernetes client in the node plugin: every carve serves its LV inventory
//! at `GET /volumes` on its metrics address (carve_core::inventory); the
//! agent finds carve's node pods in its namespace and reads it like a scrape.
//!
//! Report only: Warning Events (on the PV, or on the Node for an LV without
//! a PV) and metrics. Nothing younger than the grace period is reported (a
//! create whose PV is not written yet, a PV whose create is still copying),
//! nor an incomplete copy, nor a Released PV, and a PV is called missing its
//! LV only when the node's inventory is complete (every configured VG in its
//! report, no entry cut). The agent removes nothing: the only way to
//! remove an LV is its node's CSI socket, which the agent cannot reach; the
//! runbook is in docs/agent.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, Pod};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Resource, ResourceExt};

use carve_core::inventory::{Inventory, Kind as LvKind};

use crate::kinds;
use crate::metrics::AgentMetrics;
use crate::notify::Kind;
use crate::{Ctx, Error};

/// Reads one node's inventory; an HTTP client in the agent, a table in tests.
#[async_trait::async_trait]
pub trait Inventories: Send + Sync {
    async fn fetch(&self, address: &str) -> Result<Inventory, String>;
}

/// `GET http://<pod IP>:<port>/volumes`, bounded in time and size.
pub struct HttpInventories {
    pub port: u16,
    pub timeout: Duration,
}

/// An inventory of 20,000 entries is about 6 MB; refuse more than twice that.
const MAX_BODY: usize = 16 << 20;

#[async_trait::async_trait]
impl Inventories for HttpInventories {
    async fn fetch(&self, ip: &str) -> Result<Inventory, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let address = format!("{host}:{}", self.port);
        let get = async {
            let mut conn = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| format!("connect {address}: {e}"))?;
            conn.write_all(
                format!("GET /volumes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("send to {address}: {e}"))?;
            let mut raw = Vec::new();
            (&mut conn)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut raw)
                .await
                .map_err(|e| format!("read from {address}: {e}"))?;
            if raw.len() > MAX_BODY {
                return Err(format!("{address}: answer larger than {MAX_BODY} bytes"));
            }
            Ok(raw)
        };
        let raw = tokio::time::timeout(self.timeout, get)
            .await
            .map_err(|_| format!("{address}: no answer within {:?}", self.timeout))??;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{address}: not an HTTP answer"))?;
        let head = String::from_utf8_lossy(&raw[..split]);
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{address}: {}", head.lines().next().unwrap_or("")));
        }
        serde_json::from_slice(&raw[split + 4..])
            .map_err(|e| format!("{address}: inventory is not carve's JSON: {e}"))
    }
}

/// What one sweep found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// (node, volume or snapshot ID) of carve LVs nothing references.
    pub lvs_without_pv: Vec<(String, String)>,
    /// (node, PV name) of carve PVs whose LV is not on their node.
    pub pvs_without_lv: Vec<(String, String)>,
    /// Nodes whose inventory could not be read (and why).
    pub unreachable: Vec<(String, String)>,
}

pub struct Orphans {
    pub grace: Duration,
    /// Label selector of carve's node pods in the agent's namespace.
    pub node_pods: String,
    pub source: Box<dyn Inventories>,
    /// Objects already reported by Event (once per agent lifetime).
    reported: Mutex<BTreeSet<String>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_string()),
        ..ObjectReference::default()
    }
}

impl Orphans {
    pub fn new(grace: Duration, node_pods: &str, source: Box<dyn Inventories>) -> Orphans {
        Orphans {
            grace,
            node_pods: node_pods.to_string(),
            source,
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    fn first_report(&self, key: String) -> bool {
        self.reported.lock().unwrap().insert(key)
    }

    pub async fn sweep(&self, ctx: &Ctx, metrics: &AgentMetrics) -> Result<Report, Error> {
        // One running pod per node (a rollout or an evicted pod can leave
        // more objects than that).
        let mut pods: BTreeMap<String, String> = BTreeMap::new();
        for pod in Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&ListParams::default().labels(&self.node_pods))
            .await?
            .items
        {
            let status = pod.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod.metadata.deletion_timestamp.is_none();
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let ip = status.and_then(|s| s.pod_ip.clone());
            if let (true, Some(node), Some(ip)) = (running, node, ip) {
                pods.entry(node).or_insert(ip);
            }
        }
        metrics.clear_nodes();
        let mut pvs_by_handle: HashMap<String, PersistentVolume> = HashMap::new();
        for pv in Api::<PersistentVolume>::all(ctx.client.clone())
            .list(&Default::default())
            .await?
            .items
        {
            let handle = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .filter(|c| c.driver == ctx.driver)
                .map(|c| c.volume_handle.clone());
            if let Some(h) = handle {
                pvs_by_handle.insert(h, pv);
            }
        }
        let contents: Api<DynamicObject> =
            Api::all_with(ctx.client.clone(), &kinds::volume_snapshot_content());
        let snapshot_handles: BTreeSet<String> = contents
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|c| c.data["spec"]["driver"].as_str() == Some(ctx.driver.as_str()))
            .filter_map(|c| {
                c.data["status"]["snapshotHandle"]
                    .as_str()
                    .or_else(|| c.data["spec"]["source"]["snapshotHandle"].as_str())
                    .map(String::from)
            })
            .collect();

        let mut report = Report::default();
        let now = now_secs();
        let grace = self.grace.as_secs() as i64;
        let mut per_node: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        for (node, ip) in pods {
            let inventory = match self.source.fetch(&ip).await {
                Ok(i) => i,
                Err(why) => {
                    tracing::warn!(node, why, "orphans: cannot read the node's LV inventory");
                    metrics.inventory_up(&node, false);
                    report.unreachable.push((node, why));
                    continue;
                }
            };
            metrics.inventory_up(&node, true);
            let counts = per_node.entry(node.clone()).or_default();
            let on_node: BTreeSet<&str> = inventory.volumes.iter().map(|e| e.id.as_str()).collect();
            for e in &inventory.volumes {
                let referenced = match e.kind {
                    LvKind::Volume => pvs_by_handle.contains_key(&e.id),
                    LvKind::Snapshot => snapshot_handles.contains(&e.id),
                };
                if referenced || e.incomplete || e.created <= 0 || now - e.created < grace {
                    continue;
                }
                match e.kind {
                    LvKind::Volume => counts.0 += 1,
                    LvKind::Snapshot => counts.1 += 1,
                }
                report.lvs_without_pv.push((node.clone(), e.id.clone()));
                if self.first_report(format!("lv {}", e.id)) {
                    let (what, missing) = match e.kind {
                        LvKind::Volume => ("volume", "no PersistentVolume"),
                        LvKind::Snapshot => ("snapshot", "no VolumeSnapshotContent"),
                    };
                    let claim = if e.pvc.is_empty() {
                        String::new()
                    } else {
                        format!(", made for claim {}/{}", e.pvc_namespace, e.pvc)
                    };
                    ctx.notify
                        .event(
                            &node_ref(&node),
                            Kind::Warning,
                            "OrphanVolume",
                            format!(
                                "carve {what} {} ({} bytes, request {}{claim}) on node {node} has {missing} \
                                 referring to it; it holds space until removed (docs/agent.md: orphans).",
                                e.id, e.size_bytes, e.name
                            ),
                        )
                        .await;
                }
            }
            if !inventory.complete {
                continue;
            }
            for (handle, pv) in &pvs_by_handle {
                // A Released PV is on its way out (its provisioner removes the
                // LV first, then the PV): not missing anything.
                let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
                if kinds::pv_node(pv, &ctx.driver).as_deref() != Some(node.as_str())
                    || on_node.contains(handle.as_str())
                    || pv.metadata.deletion_timestamp.is_some()
                    || matches!(phase, Some("Released") | Some("Failed"))
                {
                    continue;
                }
                let age = pv
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| now - t.0.as_second());
                if age < grace {
                    continue;
                }
                counts.2 += 1;
                report.pvs_without_lv.push((node.clone(), pv.name_any()));
                if self.first_report(format!("pv {}", pv.name_any())) {
                    ctx.notify
                        .event(
                            &pv.object_ref(&()),
                            Kind::Warning,
                            "VolumeMissing",
                            format!(
                                "PersistentVolume {} refers to carve volume {handle} on node {node}, but \
                                 that node has no such LV: its data is gone. Delete the claim and the \
                                 PersistentVolume (docs/agent.md: orphans).",
                                pv.name_any()
                            ),
                        )
                        .await;
                }
            }
        }
        for (node, (volumes, snapshots, missing)) in per_node {
            metrics.orphans(&node, volumes, snapshots, missing);
        }
        Ok(report)
    }
}
