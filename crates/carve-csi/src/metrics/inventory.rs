//! `GET /volumes`: the node's carve LVs as JSON, for carve-agent's orphan
//! report (LVs no PV references, PVs whose LV is gone). It is how the agent
//! learns a node's LVs without a Kubernetes client in the node plugin and
//! without CRDs: the agent reads it over the pod network like a scrape.
//! Read-only, from the same cached LVM view the metrics come from (no lvm
//! command per request), bounded by [`MAX_ENTRIES`]; `complete` only when
//! every configured VG is in the report and nothing was cut. It holds what
//! `carve_volume_size_bytes` already labels (IDs, claim names, sizes), so it
//! is served on the metrics address and nowhere else.

use carve_core::engine::state::View;
use carve_core::inventory::{Entry, Inventory, Kind, MAX_ENTRIES};
use carve_core::lvm::LvInfo;
use carve_core::names::{self, LvKind, VolumeId};

use crate::controller::ControllerService;

fn entry(c: &ControllerService, lv: &LvInfo, kind: LvKind) -> Entry {
    let tag = |t| lv.tag(t).map(names::decode_tag_value).unwrap_or_default();
    Entry {
        id: VolumeId::new(&c.node_id, &lv.vg, &lv.name).to_string(),
        kind: if kind == LvKind::Snapshot {
            Kind::Snapshot
        } else {
            Kind::Volume
        },
        size_bytes: lv.size,
        created: lv.created,
        name: tag(names::TAG_NAME),
        pv: tag(names::TAG_PV),
        pvc: tag(names::TAG_PVC),
        pvc_namespace: tag(names::TAG_PVC_NAMESPACE),
        incomplete: lv.tag(names::TAG_INCOMPLETE).is_some(),
    }
}

pub fn inventory(c: &ControllerService, view: Option<&View>) -> Inventory {
    let Some(view) = view else {
        return Inventory {
            node: c.node_id.clone(),
            complete: false,
            volumes: Vec::new(),
        };
    };
    let mut volumes: Vec<Entry> = [LvKind::Volume, LvKind::Snapshot]
        .into_iter()
        .flat_map(|kind| c.carve_lvs(&view.lvm, kind).map(move |lv| (lv, kind)))
        .map(|(lv, kind)| entry(c, lv, kind))
        .collect();
    volumes.sort_by(|a, b| a.id.cmp(&b.id));
    // A configured VG missing from the report (a disk not attached, a VG not
    // activated) hides its LVs: the agent must not take their absence for
    // PVs whose LVs are gone.
    let every_vg = c
        .config
        .device_classes
        .iter()
        .all(|d| view.lvm.vgs.contains_key(&d.volume_group));
    let complete = every_vg && volumes.len() <= MAX_ENTRIES;
    volumes.truncate(MAX_ENTRIES);
    Inventory {
        node: c.node_id.clone(),
        complete,
        volumes,
    }
}
