//! The reconcilers against the in-process API server, scenario by scenario.

use std::time::Duration;

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::Action;
use serde_json::json;

use crate::fixtures::*;
use crate::node_removal::{NodeRemoval, Policy};
use crate::{placement, storage_class, Error};

fn pvc(
    api: &crate::fake_api::FakeApi,
    ns: &str,
    name: &str,
) -> std::sync::Arc<PersistentVolumeClaim> {
    typed(api, CLAIMS, ns, name)
}

/// Snapshot db/NAME, bound to its content, with this handle.
fn put_snapshot(api: &crate::fake_api::FakeApi, name: &str, handle: &str) {
    let (snap, content) = snapshot("db", name, handle);
    api.put(snap);
    api.put(content);
}

/// db/snap with this handle, and the claim db/restore (class thin) from it.
fn restore_from_snapshot_on(api: &crate::fake_api::FakeApi, handle: &str) {
    put_snapshot(api, "snap", handle);
    api.put(restore_of_snapshot("db", "restore", "thin", "snap"));
}

/// A world with nodes a and b, thick and thin carve classes.
fn world() -> (
    crate::fake_api::FakeApi,
    std::sync::Arc<crate::Ctx>,
    tokio::sync::watch::Sender<bool>,
) {
    let (api, ctx, tx) = ctx();
    api.put(node("node-a"));
    api.put(node("node-b"));
    api.put(class("thick", json!({"carve.dev/device-class": "thick"})));
    api.put(class(
        "thin",
        json!({"carve.dev/device-class": "thin", "csi.storage.k8s.io/fstype": "xfs"}),
    ));
    (api, ctx, tx)
}

#[tokio::test]
async fn restore_from_a_snapshot_is_placed_on_the_snapshot_node_thin_and_thick() {
    let (api, ctx, _tx) = world();
    for (class, vg) in [("thin", "vg-thin"), ("thick", "vg-thick")] {
        let (snap, content) = snapshot(
            "db",
            &format!("snap-{class}"),
            &format!("v1:node-b:{vg}/cs-0123"),
        );
        api.put(snap);
        api.put(content);
        let name = format!("restore-{class}");
        api.put(restore_of_snapshot(
            "db",
            &name,
            class,
            &format!("snap-{class}"),
        ));
        placement::reconcile(pvc(&api, "db", &name), ctx.clone())
            .await
            .unwrap();
        assert_eq!(
            selected_node(&api, "db", &name).as_deref(),
            Some("node-b"),
            "{class}"
        );
        let events = api.events_about(&name);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].1, "Placed");
        assert!(
            events[0].2.contains(&format!(
                "VolumeSnapshot db/snap-{class} lives on node node-b"
            )),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn clone_of_a_claim_is_placed_on_the_source_volume_node() {
    let (api, ctx, _tx) = world();
    let (src, pv) = bound("db", "data", "thick", "pvc-1", "node-a", "vg-thick");
    api.put(src);
    api.put(pv);
    api.put(clone_of_claim("db", "copy", "thick", "data"));
    placement::reconcile(pvc(&api, "db", "copy"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(selected_node(&api, "db", "copy").as_deref(), Some("node-a"));
    assert_eq!(api.events_about("copy")[0].1, "Placed");
}

#[tokio::test]
async fn a_claim_the_scheduler_sent_elsewhere_is_moved_and_a_right_one_left_alone() {
    let (api, ctx, _tx) = world();
    put_snapshot(&api, "snap", "v1:node-b:vg/cs-1");
    let mut c = restore_of_snapshot("db", "restore", "thin", "snap");
    c["metadata"]["annotations"] = json!({"volume.kubernetes.io/selected-node": "node-a"});
    api.put(c);
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-b")
    );
    let events = api.events_about("restore");
    assert_eq!(events[0].1, "Moved");
    assert!(events[0].2.contains("scheduled to node-a"), "{events:?}");
    let patch = api
        .writes()
        .into_iter()
        .find(|w| w.method == Method::PATCH && w.path.ends_with("persistentvolumeclaims/restore"))
        .expect("the claim was patched");
    assert!(
        patch.body["metadata"]["resourceVersion"].is_string(),
        "the patch is preconditioned on what was read: {:?}",
        patch.body
    );

    // Reconciling the corrected claim again writes nothing.
    let writes = api.writes().len();
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(api.writes().len(), writes, "{:?}", api.writes());
}

#[tokio::test]
async fn a_source_on_a_deleted_node_is_explained_and_nothing_is_pinned() {
    let (api, ctx, _tx) = world();
    restore_from_snapshot_on(&api, "v1:node-gone:vg/cs-1");
    let action = placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(selected_node(&api, "db", "restore"), None);
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let events = api.events_about("restore");
    assert_eq!(events[0].0, "Warning");
    assert_eq!(events[0].1, "SourceNodeGone");
    assert!(
        events[0]
            .2
            .contains("node-gone, which is no longer in the cluster"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_hashed_node_in_the_handle_is_matched_against_the_nodes() {
    let (api, ctx, _tx) = world();
    let long = format!("node-{}", "x".repeat(120));
    api.put(node(&long));
    let id = carve_core::names::VolumeId::new(&long, "vg", "cs-1");
    assert!(matches!(id.node, carve_core::names::NodeRef::Hash(_)));
    restore_from_snapshot_on(&api, &id.to_string());
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some(long.as_str())
    );
}

#[tokio::test]
async fn a_source_not_ready_is_waited_for_without_writing() {
    let (api, ctx, _tx) = world();
    let (mut snap, content) = snapshot("db", "snap", "v1:node-b:vg/cs-1");
    snap["status"] = json!({});
    api.put(snap);
    api.put(content);
    api.put(restore_of_snapshot("db", "restore", "thin", "snap"));
    let action = placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(placement::WAIT_FOR_SOURCE));
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn claims_that_are_not_carve_restores_are_left_alone() {
    let (api, ctx, _tx) = world();
    let mut other = class("other", json!({}));
    other["provisioner"] = "ebs.csi.aws.com".into();
    api.put(other);
    let mut immediate = class("immediate", json!({}));
    immediate["volumeBindingMode"] = "Immediate".into();
    api.put(immediate);
    put_snapshot(&api, "snap", "v1:node-b:vg/cs-1");
    api.put(restore_of_snapshot("db", "foreign", "other", "snap"));
    api.put(restore_of_snapshot("db", "immediate", "immediate", "snap"));
    api.put(claim("db", "plain", "thin"));
    let (mut bound_claim, _) = bound("db", "bound", "thin", "pvc-9", "node-a", "vg");
    bound_claim["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"});
    api.put(bound_claim);
    let (mut foreign_snap, mut foreign_content) = snapshot("db", "ebs-snap", "snap-0abc");
    foreign_content["spec"]["driver"] = "ebs.csi.aws.com".into();
    foreign_snap["status"]["boundVolumeSnapshotContentName"] = "snapcontent-ebs-snap".into();
    api.put(foreign_snap);
    api.put(foreign_content);
    api.put(restore_of_snapshot("db", "from-ebs", "thin", "ebs-snap"));
    for name in ["foreign", "immediate", "plain", "bound", "from-ebs"] {
        placement::reconcile(pvc(&api, "db", name), ctx.clone())
            .await
            .unwrap();
        assert_eq!(selected_node(&api, "db", name), None, "{name}");
    }
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn a_cordoned_source_node_is_pinned_and_the_user_told_why_the_pod_waits() {
    let (api, ctx, _tx) = world();
    let mut b = node("node-b");
    b["spec"] = json!({"unschedulable": true});
    api.put(b);
    restore_from_snapshot_on(&api, "v1:node-b:vg/cs-1");
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-b")
    );
    let events = api.events_about("restore");
    let unavailable = events
        .iter()
        .find(|e| e.1 == "SourceNodeUnavailable")
        .expect("warning");
    assert!(unavailable.2.contains("cordoned"), "{events:?}");
}

#[tokio::test]
async fn a_conflicting_write_is_retried_on_a_fresh_read() {
    let (api, ctx, _tx) = world();
    restore_from_snapshot_on(&api, "v1:node-b:vg/cs-1");
    let stale = pvc(&api, "db", "restore");
    // The scheduler writes the claim between the agent's read and its patch.
    api.on_next(Method::PATCH, "persistentvolumeclaims/restore", |s| {
        let mut c = s.get(CLAIMS, "db", "restore").unwrap().clone();
        c["metadata"]["annotations"] = json!({"volume.kubernetes.io/selected-node": "node-a"});
        s.put(c);
    });
    let err = placement::reconcile(stale, ctx.clone()).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-a"),
        "the scheduler's write kept"
    );
    // The controller's retry reads the claim again.
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-b")
    );
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_without_writes_and_the_retry_succeeds() {
    let (api, ctx, _tx) = world();
    restore_from_snapshot_on(&api, "v1:node-b:vg/cs-1");
    api.fail_next(
        Method::GET,
        "volumesnapshotcontents",
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    let err = placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Kube(_)) && !err.is_conflict(), "{err}");
    assert!(api.writes().is_empty());
    api.fail_next(
        Method::PATCH,
        "persistentvolumeclaims/restore",
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(
        placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
            .await
            .is_err()
    );
    assert_eq!(selected_node(&api, "db", "restore"), None);
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-b")
    );
}

#[tokio::test]
async fn a_leader_change_mid_reconcile_stops_the_write() {
    let (api, ctx, tx) = world();
    restore_from_snapshot_on(&api, "v1:node-b:vg/cs-1");
    // The Lease is lost while the agent reads the source's node.
    let tx = std::sync::Arc::new(tx);
    let flip = tx.clone();
    api.on_next(Method::GET, "nodes/node-b", move |_| {
        flip.send_replace(false);
    });
    let err = placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader), "{err}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    // The new leader (here: leadership back) finishes the job.
    tx.send_replace(true);
    placement::reconcile(pvc(&api, "db", "restore"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        selected_node(&api, "db", "restore").as_deref(),
        Some("node-b")
    );
}

#[tokio::test]
async fn an_invalid_storage_class_is_reported_on_itself_and_its_pending_claims() {
    let (api, ctx, _tx) = world();
    api.put(class("typo", json!({"carve.dev/devcie-class": "thin"})));
    api.put(class("badfs", json!({"csi.storage.k8s.io/fstype": "ntfs"})));
    api.put(claim("db", "waiting", "typo"));
    let (b, _) = bound("db", "bound", "typo", "pvc-1", "node-a", "vg");
    api.put(b);
    for name in ["typo", "badfs", "thin", "thick"] {
        storage_class::reconcile(typed::<StorageClass>(&api, CLASSES, "", name), ctx.clone())
            .await
            .unwrap();
    }
    let typo = api.events_about("typo");
    assert_eq!(typo.len(), 1, "{typo:?}");
    assert_eq!(
        (typo[0].0.as_str(), typo[0].1.as_str()),
        ("Warning", "InvalidParameters")
    );
    assert!(typo[0].2.contains("carve.dev/devcie-class"), "{typo:?}");
    assert!(
        typo[0].2.contains("carve.dev/device-class"),
        "allowed keys named: {typo:?}"
    );
    let badfs = api.events_about("badfs");
    assert!(badfs[0].2.contains("ext4, xfs, btrfs"), "{badfs:?}");
    let waiting = api.events_about("waiting");
    assert_eq!(waiting[0].1, "InvalidStorageClass");
    assert!(
        api.events_about("bound").is_empty(),
        "bound claims are not pending"
    );
    assert!(api.events_about("thin").is_empty() && api.events_about("thick").is_empty());
    // A claim created later is told by the claim reconciler.
    api.put(claim("db", "later", "typo"));
    placement::reconcile(pvc(&api, "db", "later"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(api.events_about("later")[0].1, "InvalidStorageClass");
}

/// Node a is deleted; it held two bound claims and published capacity.
fn removed_node_world() -> (
    crate::fake_api::FakeApi,
    std::sync::Arc<crate::Ctx>,
    tokio::sync::watch::Sender<bool>,
) {
    let (api, ctx, tx) = world();
    for (claim_name, pv) in [("data-0", "pvc-0"), ("data-1", "pvc-1")] {
        let (c, v) = bound("db", claim_name, "thin", pv, "node-a", "vg");
        api.put(c);
        api.put(v);
    }
    let (c, v) = bound("db", "data-2", "thin", "pvc-2", "node-b", "vg");
    api.put(c);
    api.put(v);
    api.put(capacity("carve-system", "csisc-a", "node-a", "thin"));
    api.put(capacity("carve-system", "csisc-b", "node-b", "thin"));
    api.with(|s| s.remove("api/v1/nodes", "", "node-a"));
    (api, ctx, tx)
}

fn claim_exists(api: &crate::fake_api::FakeApi, name: &str) -> bool {
    api.with(|s| s.get(CLAIMS, "db", name).is_some())
}

fn capacity_exists(api: &crate::fake_api::FakeApi, name: &str) -> bool {
    api.with(|s| {
        s.get(
            "apis/storage.k8s.io/v1/csistoragecapacities",
            "carve-system",
            name,
        )
        .is_some()
    })
}

#[tokio::test]
async fn a_removed_node_waits_out_the_grace_period_with_nothing_written() {
    let (api, ctx, _tx) = removed_node_world();
    let removal = NodeRemoval::new(Policy::DeleteClaims, Duration::from_secs(3600));
    let sweep = removal.sweep(&ctx).await.unwrap();
    assert_eq!(sweep.waiting, ["node-a"]);
    assert!(sweep.handled.is_empty());
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn node_removal_policy_ignore_touches_nothing() {
    let (api, ctx, _tx) = removed_node_world();
    let sweep = NodeRemoval::new(Policy::Ignore, Duration::ZERO)
        .sweep(&ctx)
        .await
        .unwrap();
    assert_eq!(sweep.handled, ["node-a"]);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn node_removal_policy_event_warns_and_removes_capacity_only() {
    let (api, ctx, _tx) = removed_node_world();
    let removal = NodeRemoval::new(Policy::Event, Duration::ZERO);
    let sweep = removal.sweep(&ctx).await.unwrap();
    assert_eq!(sweep.capacities_deleted, ["carve-system/csisc-a"]);
    assert!(sweep.claims_deleted.is_empty());
    assert!(!capacity_exists(&api, "csisc-a") && capacity_exists(&api, "csisc-b"));
    for name in ["data-0", "data-1", "pvc-0", "pvc-1"] {
        let ev = api.events_about(name);
        assert_eq!(ev.len(), 1, "{name}: {ev:?}");
        assert_eq!(
            (ev[0].0.as_str(), ev[0].1.as_str()),
            ("Warning", "NodeRemoved")
        );
        assert!(ev[0].2.contains("node-a, which was removed"), "{ev:?}");
    }
    assert!(api.events_about("data-2").is_empty());
    assert!(claim_exists(&api, "data-0") && claim_exists(&api, "data-1"));
    // A second sweep repeats no Event.
    let events = api.with(|s| s.list("apis/events.k8s.io/v1/events").len());
    removal.sweep(&ctx).await.unwrap();
    assert_eq!(
        api.with(|s| s.list("apis/events.k8s.io/v1/events").len()),
        events
    );
}

#[tokio::test]
async fn node_removal_policy_delete_claims_deletes_exactly_that_nodes_claims() {
    let (api, ctx, _tx) = removed_node_world();
    // data-1 was already recreated by its StatefulSet elsewhere (new uid).
    api.with(|s| {
        let mut c = s.get(CLAIMS, "db", "data-1").unwrap().clone();
        c["metadata"]["uid"] = "uid-recreated".into();
        c["spec"]["volumeName"] = serde_json::Value::Null;
        s.put(c);
    });
    let sweep = NodeRemoval::new(Policy::DeleteClaims, Duration::ZERO)
        .sweep(&ctx)
        .await
        .unwrap();
    assert_eq!(sweep.claims_deleted, ["db/data-0"]);
    assert!(!claim_exists(&api, "data-0"));
    assert!(
        claim_exists(&api, "data-1"),
        "a recreated claim is not the PV's claim"
    );
    assert!(claim_exists(&api, "data-2"), "node-b's claim stays");
    assert!(
        api.with(|s| s.get("api/v1/persistentvolumes", "", "pvc-0").is_some()),
        "PVs stay"
    );
    assert!(!capacity_exists(&api, "csisc-a"));
}

#[tokio::test]
async fn a_node_back_within_grace_resets_the_clock() {
    let (api, ctx, _tx) = removed_node_world();
    let removal = NodeRemoval::new(Policy::DeleteClaims, Duration::from_millis(200));
    assert_eq!(removal.sweep(&ctx).await.unwrap().waiting, ["node-a"]);
    api.put(node("node-a"));
    assert_eq!(removal.sweep(&ctx).await.unwrap(), Default::default());
    api.with(|s| s.remove("api/v1/nodes", "", "node-a"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        removal.sweep(&ctx).await.unwrap().waiting,
        ["node-a"],
        "the clock started again"
    );
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn node_removal_survives_conflicts_errors_and_a_lost_lease() {
    let (api, ctx, tx) = removed_node_world();
    let removal = NodeRemoval::new(Policy::DeleteClaims, Duration::ZERO);
    // The Node list fails: nothing is treated as removed.
    api.fail_next(
        Method::GET,
        "/api/v1/nodes",
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    assert!(removal.sweep(&ctx).await.is_err());
    assert!(api.writes().is_empty());
    // The API lists no Node at all: refuse to act.
    let nodes = api.with(|s| {
        let all = s.list("api/v1/nodes");
        for n in &all {
            s.remove("api/v1/nodes", "", n["metadata"]["name"].as_str().unwrap());
        }
        all
    });
    assert_eq!(removal.sweep(&ctx).await.unwrap(), Default::default());
    assert!(api.writes().is_empty());
    for n in nodes {
        api.put(n);
    }
    // Losing the Lease stops the sweep before its first write.
    tx.send_replace(false);
    assert!(matches!(removal.sweep(&ctx).await, Err(Error::NotLeader)));
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    tx.send_replace(true);
    // A delete that meets a 409 (changed since read) is left for next sweep.
    api.fail_next(
        Method::DELETE,
        "persistentvolumeclaims/data-0",
        StatusCode::CONFLICT,
    );
    let sweep = removal.sweep(&ctx).await.unwrap();
    assert_eq!(sweep.claims_deleted, ["db/data-1"]);
    let sweep = removal.sweep(&ctx).await.unwrap();
    assert_eq!(sweep.claims_deleted, ["db/data-0"]);
}

mod orphans {
    use super::*;
    use crate::metrics::AgentMetrics;
    use crate::orphans::{HttpInventories, Inventories, Orphans};
    use carve_core::inventory::{Inventory, Kind};
    use std::collections::HashMap;

    const OLD: i64 = 1_700_000_000;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// Node a (reachable) and b (not); on a: a PV with its LV, a PV whose LV
    /// is gone, a young PV whose LV is gone, an LV without a PV, a young one,
    /// an incomplete copy, a snapshot with its content and one without.
    fn orphan_world(
        complete: bool,
    ) -> (
        crate::fake_api::FakeApi,
        std::sync::Arc<crate::Ctx>,
        Orphans,
    ) {
        let (api, ctx, _tx) = world();
        std::mem::forget(_tx);
        api.put(node_pod("node-a", "10.0.0.1"));
        api.put(node_pod("node-b", "10.0.0.2"));
        // A failed pod of node a from before (same node, stale IP): skipped.
        let mut old = node_pod("node-a", "10.0.0.9");
        old["metadata"]["name"] = "carve-node-old".into();
        old["status"]["phase"] = "Failed".into();
        api.put(old);
        // A released PV on node a whose LV its provisioner already removed.
        let (_, mut released) = bound("db", "gone", "thin", "pvc-released", "node-a", "vg");
        released["status"]["phase"] = "Released".into();
        api.put(released);
        for (claim_name, pv) in [
            ("data-0", "pvc-0"),
            ("data-1", "pvc-1"),
            ("data-2", "pvc-young"),
        ] {
            let (c, v) = bound("db", claim_name, "thin", pv, "node-a", "vg");
            api.put(c);
            api.put(v);
        }
        api.with(|s| {
            let mut pv = s
                .get("api/v1/persistentvolumes", "", "pvc-young")
                .unwrap()
                .clone();
            pv["metadata"]["creationTimestamp"] =
                k8s_openapi::jiff::Timestamp::now().to_string().into();
            s.put(pv);
        });
        let (snap, content) = snapshot("db", "snap", "v1:node-a:vg/cs-kept");
        api.put(snap);
        api.put(content);
        let mut incomplete = lv("v1:node-a:vg/cv-copying", Kind::Volume, OLD);
        incomplete.incomplete = true;
        let inventory = Inventory {
            node: "node-a".into(),
            complete,
            volumes: vec![
                lv("v1:node-a:vg/cv-pvc-0", Kind::Volume, OLD),
                lv("v1:node-a:vg/cv-orphan", Kind::Volume, OLD),
                lv("v1:node-a:vg/cv-young", Kind::Volume, now()),
                incomplete,
                lv("v1:node-a:vg/cs-kept", Kind::Snapshot, OLD),
                lv("v1:node-a:vg/cs-orphan", Kind::Snapshot, OLD),
            ],
        };
        let table = Table(HashMap::from([("10.0.0.1".to_string(), inventory)]));
        let orphans = Orphans::new(
            Duration::from_secs(3600),
            "app.kubernetes.io/name=carve-node",
            Box::new(table),
        );
        (api, ctx, orphans)
    }

    #[tokio::test]
    async fn lvs_without_pvs_and_pvs_without_lvs_are_reported_once_past_grace() {
        let (api, ctx, orphans) = orphan_world(true);
        let metrics = AgentMetrics::default();
        let report = orphans.sweep(&ctx, &metrics).await.unwrap();
        assert_eq!(
            report.lvs_without_pv,
            [
                ("node-a".to_string(), "v1:node-a:vg/cv-orphan".to_string()),
                ("node-a".to_string(), "v1:node-a:vg/cs-orphan".to_string())
            ]
        );
        assert_eq!(
            report.pvs_without_lv,
            [("node-a".to_string(), "pvc-1".to_string())]
        );
        assert_eq!(report.unreachable.len(), 1);
        assert_eq!(report.unreachable[0].0, "node-b");
        let on_node = api.events_about("node-a");
        assert_eq!(on_node.len(), 2, "{on_node:?}");
        assert!(on_node
            .iter()
            .all(|e| e.0 == "Warning" && e.1 == "OrphanVolume"));
        assert!(
            on_node[0].2.contains("cv-orphan") && on_node[0].2.contains("no PersistentVolume"),
            "{on_node:?}"
        );
        assert!(
            on_node[1].2.contains("no VolumeSnapshotContent"),
            "{on_node:?}"
        );
        let missing = api.events_about("pvc-1");
        assert_eq!(missing[0].1, "VolumeMissing");
        assert!(api.events_about("pvc-young").is_empty() && api.events_about("pvc-0").is_empty());
        assert!(
            api.events_about("pvc-released").is_empty(),
            "a Released PV is not missing its LV"
        );
        let text = {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &metrics.registry()).unwrap();
            s
        };
        assert!(
            text.contains(r#"carve_agent_orphan_lvs{node="node-a",kind="volume"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"carve_agent_orphan_lvs{node="node-a",kind="snapshot"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"carve_agent_missing_lvs{node="node-a"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"carve_agent_inventory_up{node="node-b"} 0"#),
            "{text}"
        );
        // Nothing is removed or changed, and a second sweep repeats no Event.
        let writes = api.writes();
        assert!(
            writes.iter().all(|w| w.path.contains("/events")),
            "{writes:?}"
        );
        orphans.sweep(&ctx, &metrics).await.unwrap();
        assert_eq!(api.writes().len(), writes.len());
    }

    #[tokio::test]
    async fn an_incomplete_inventory_never_calls_a_pv_missing() {
        let (api, ctx, orphans) = orphan_world(false);
        let report = orphans.sweep(&ctx, &AgentMetrics::default()).await.unwrap();
        assert!(report.pvs_without_lv.is_empty(), "{report:?}");
        assert!(api.events_about("pvc-1").is_empty());
        assert_eq!(report.lvs_without_pv.len(), 2);
    }

    /// The agent's HTTP reader against carve-core's endpoint serving a node's
    /// inventory, as carve does.
    #[tokio::test]
    async fn the_inventory_is_read_over_http() {
        struct Node(String);
        impl carve_core::endpoint::Handler for Node {
            fn get(&self, path: &str) -> Option<carve_core::endpoint::Answer> {
                (path == "/volumes").then(|| Ok(("application/json", self.0.clone())))
            }
            fn paths(&self) -> &'static str {
                "/volumes is"
            }
        }
        let inventory = Inventory {
            node: "node-a".into(),
            complete: true,
            volumes: (0..3000)
                .map(|i| lv(&format!("v1:node-a:vg/cv-{i:04}"), Kind::Volume, OLD))
                .collect(),
        };
        let listener = carve_core::endpoint::bind("--test", "127.0.0.1:0")
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(carve_core::endpoint::serve(
            listener,
            std::sync::Arc::new(Node(serde_json::to_string(&inventory).unwrap())),
        ));
        let http = HttpInventories {
            port,
            timeout: Duration::from_secs(5),
        };
        assert_eq!(http.fetch("127.0.0.1").await.unwrap(), inventory);
        let closed = HttpInventories {
            port: 1,
            timeout: Duration::from_secs(5),
        };
        assert!(closed
            .fetch("127.0.0.1")
            .await
            .unwrap_err()
            .contains("connect"));
    }
}

#[tokio::test]
async fn a_claim_recreated_between_read_and_delete_is_not_deleted() {
    let (api, ctx, _tx) = removed_node_world();
    // The StatefulSet recreates data-0 (new uid) just as the agent deletes it.
    api.on_next(Method::DELETE, "persistentvolumeclaims/data-0", |s| {
        let mut c = s.get(CLAIMS, "db", "data-0").unwrap().clone();
        c["metadata"]["uid"] = "uid-recreated".into();
        s.put(c);
    });
    let sweep = NodeRemoval::new(Policy::DeleteClaims, Duration::ZERO)
        .sweep(&ctx)
        .await
        .unwrap();
    assert_eq!(
        sweep.claims_deleted,
        ["db/data-1"],
        "the uid precondition failed for data-0 (409)"
    );
    assert!(claim_exists(&api, "data-0"));
    let delete = api
        .writes()
        .into_iter()
        .find(|w| w.method == Method::DELETE && w.path.ends_with("persistentvolumeclaims/data-0"))
        .unwrap();
    assert_eq!(delete.body["preconditions"]["uid"], "uid-claim-db-data-0");
}

#[tokio::test]
async fn only_the_claim_bound_to_the_pv_is_deleted_never_one_with_its_name() {
    let (api, ctx, _tx) = removed_node_world();
    // A PV pre-bound by name only (no uid), while the claim of that name is
    // bound to another volume.
    api.with(|s| {
        let mut pv = s
            .get("api/v1/persistentvolumes", "", "pvc-0")
            .unwrap()
            .clone();
        pv["spec"]["claimRef"]["uid"] = serde_json::Value::Null;
        s.put(pv);
        let mut c = s.get(CLAIMS, "db", "data-0").unwrap().clone();
        c["spec"]["volumeName"] = "pvc-elsewhere".into();
        s.put(c);
    });
    let sweep = NodeRemoval::new(Policy::DeleteClaims, Duration::ZERO)
        .sweep(&ctx)
        .await
        .unwrap();
    assert_eq!(sweep.claims_deleted, ["db/data-1"]);
    assert!(claim_exists(&api, "data-0"));
}

#[tokio::test]
async fn a_node_is_present_under_its_topology_label_and_all_gone_at_once_is_refused() {
    let (api, ctx, _tx) = removed_node_world();
    // carve's node ID "node-a" is the topology label of a Node named otherwise.
    let mut renamed = node("ip-10-0-0-1.internal");
    renamed["metadata"]["labels"] = json!({"topology.carve.dev/node": "node-a"});
    api.put(renamed);
    let removal = NodeRemoval::new(Policy::DeleteClaims, Duration::ZERO);
    assert_eq!(removal.sweep(&ctx).await.unwrap(), Default::default());
    // Now no Node matches either of carve's two nodes: a naming mismatch,
    // not two removals.
    api.with(|s| {
        s.remove("api/v1/nodes", "", "ip-10-0-0-1.internal");
        s.remove("api/v1/nodes", "", "node-b");
    });
    assert_eq!(removal.sweep(&ctx).await.unwrap(), Default::default());
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn a_claim_before_its_class_and_a_cross_namespace_source_are_handled() {
    let (api, ctx, _tx) = world();
    put_snapshot(&api, "snap", "v1:node-b:vg/cs-1");
    api.put(restore_of_snapshot("db", "early", "not-yet", "snap"));
    let action = placement::reconcile(pvc(&api, "db", "early"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "looked at again"
    );
    // A dataSourceRef into another namespace is not followed (ReferenceGrant
    // is not the agent's call, and the Event would say where the data is).
    let mut cross = restore_of_snapshot("web", "cross", "thin", "snap");
    cross["spec"]["dataSourceRef"]["namespace"] = "db".into();
    cross["spec"]["dataSource"] = serde_json::Value::Null;
    api.put(cross);
    placement::reconcile(pvc(&api, "web", "cross"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(selected_node(&api, "web", "cross"), None);
    assert!(api.events_about("cross").is_empty());
}
