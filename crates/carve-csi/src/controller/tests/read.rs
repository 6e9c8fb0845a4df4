//! IDs, listing, capacity, expansion and Probe over the scripted runner.

use super::*;

#[tokio::test]
async fn bad_ids_get_not_found_without_lvm() {
    let (c, runner) = setup().await;
    for id in [
        "some-id",
        "vgthick/cv-one-1a2b3c4d00112233",
        "v1:node-a:vgthick/foreign",
        "v1:node-a:othervg/cv-x-0011",
        "v1:node-a:../cv-x",
        "v1:node-a:vgthick/cv-a b",
        "v2:node-a:vgthick/cv-one-1a2b3c4d00112233",
    ] {
        let e = c
            .controller_expand_volume(Request::new(csi::ControllerExpandVolumeRequest {
                volume_id: id.into(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: MI,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
        // Deleting something that cannot be a carve volume succeeds: it is gone.
        c.delete_volume(Request::new(csi::DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    assert!(runner.commands().is_empty(), "{:?}", runner.commands());
    // A carve ID of another node: not here (NotFound), and not deletable here
    // (answering OK would let the CO forget a volume that holds data).
    let elsewhere = "v1:node-b:othervg/cv-x-0011223344556677";
    let e = c
        .controller_get_volume(Request::new(csi::ControllerGetVolumeRequest {
            volume_id: elsewhere.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("node-b"), "{}", e.message());
    let e = c
        .delete_volume(Request::new(csi::DeleteVolumeRequest {
            volume_id: elsewhere.into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(runner.commands().is_empty());
}

#[tokio::test]
async fn incomplete_requests_are_invalid_without_lvm() {
    let (c, runner) = setup().await;
    let e = c
        .delete_volume(Request::new(csi::DeleteVolumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .controller_expand_volume(Request::new(csi::ControllerExpandVolumeRequest {
            volume_id: "v1:node-a:vgthick/cv-x-00".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "missing capacity_range");
    let e = c
        .validate_volume_capabilities(Request::new(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "v1:node-a:vgthick/cv-x-00".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no capabilities");
    let e = c
        .list_volumes(Request::new(csi::ListVolumesRequest {
            starting_token: "bogus".into(),
            max_entries: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let e = c
        .list_volumes(Request::new(csi::ListVolumesRequest {
            starting_token: String::new(),
            max_entries: -1,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(runner.commands().is_empty());
}

#[tokio::test]
async fn foreign_lvs_are_never_listed_or_removed() {
    let (c, runner) = setup().await;
    // An LV named like carve's but without its owner tag, in a managed VG.
    runner.add_lv("vgthick", "cv-foreign-0011223344556677", "");
    c.state.refresh().await.unwrap();
    runner.clear();
    let list = c
        .list_volumes(Request::new(csi::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut lvs: Vec<String> = list
        .entries
        .iter()
        .map(|e| {
            let id = &e.volume.as_ref().unwrap().volume_id;
            id.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    lvs.sort();
    // Exactly the fixture's two carve volumes: not the pool, the foreign
    // origin, its snapshot, the untagged look-alike, nor the RAID LV that has
    // the owner tag but no carve name.
    assert_eq!(lvs, ["cv-one-1a2b3c4d00112233", "cv-thin-00aa11bb22334455"]);
    let id = list.entries[0].volume.as_ref().unwrap().volume_id.clone();
    let foreign_id = id.replace(&lvs[0], "cv-foreign-0011223344556677");
    c.delete_volume(Request::new(csi::DeleteVolumeRequest {
        volume_id: foreign_id,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(runner.writes().is_empty(), "{:?}", runner.writes());
    assert!(runner.has_lv("vgthick", "cv-foreign-0011223344556677"));
}

#[tokio::test]
async fn pagination_is_stable() {
    let (c, _runner) = setup().await;
    for i in 0..5 {
        c.create_volume(Request::new(create_req(&format!("p{i}"), MI, 0)))
            .await
            .unwrap();
    }
    let all = c
        .list_volumes(Request::new(csi::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_volumes(Request::new(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let want: Vec<String> = all
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(seen, want);
    assert!(want.len() >= 5);
}

#[tokio::test]
async fn capacity_honours_topology_class_and_capabilities() {
    let (c, runner) = setup().await;
    let get = |req: csi::GetCapacityRequest| {
        let c = &c;
        async move { c.get_capacity(Request::new(req)).await }
    };
    let other = get(csi::GetCapacityRequest {
        accessible_topology: Some(csi::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.into(), "node-b".into())]),
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(other.available_capacity, 0);
    let thin = get(csi::GetCapacityRequest {
        parameters: HashMap::from([(crate::params::DEVICE_CLASS.into(), "thin".into())]),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(thin.available_capacity, 2 << 30);
    assert_eq!(thin.minimum_volume_size, Some(4 * MI));
    let multi = get(csi::GetCapacityRequest {
        volume_capabilities: vec![csi::VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::MultiNodeMultiWriter as i32,
            }),
        }],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(multi.available_capacity, 0);
    let e = get(csi::GetCapacityRequest {
        parameters: HashMap::from([("nope".into(), "x".into())]),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        runner.commands().is_empty(),
        "GetCapacity is served from the cache"
    );
}

#[tokio::test]
async fn concurrent_calls_on_one_volume_are_aborted() {
    let (c, _runner) = setup().await;
    let key = names::lv_name("busy");
    let _held = c.inflight.try_acquire(&key).unwrap();
    assert_eq!(
        create_code(&c, create_req("busy", MI, 0)).await,
        Code::Aborted
    );
}

#[tokio::test]
async fn expand_of_block_volume_needs_no_node_step() {
    let (c, runner) = setup().await;
    let v = c
        .create_volume(Request::new(create_req("grow", 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let block = csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let expand = |cap: csi::VolumeCapability, bytes: i64| csi::ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capability: Some(cap),
        ..Default::default()
    };
    let r = c
        .controller_expand_volume(Request::new(expand(block, 16 * MI)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 16 * MI);
    assert!(
        !r.node_expansion_required,
        "a raw block volume has no filesystem to grow"
    );
    let r = c
        .controller_expand_volume(Request::new(expand(mount_cap(), 24 * MI)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 24 * MI);
    assert!(r.node_expansion_required, "the node grows the filesystem");
    let grows: Vec<String> = runner
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("lvextend"))
        .collect();
    assert_eq!(grows.len(), 2, "{grows:?}");
    assert!(
        grows[1].contains(&format!("--size {}b", 24 * MI)),
        "{grows:?}"
    );
}

/// Issue 8, finding 10: livenessprobe calls Probe every few seconds on every
/// node; it must not run an LVM report each time.
#[tokio::test]
async fn probe_runs_no_lvm_command() {
    let (s, runner) = setup_services().await;
    use crate::csi::identity_server::Identity;
    for _ in 0..5 {
        let r = s
            .identity
            .probe(Request::new(csi::ProbeRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.ready, Some(true));
    }
    assert_eq!(runner.commands(), Vec::<String>::new());
}
