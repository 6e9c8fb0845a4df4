//! LUKS2 volumes on the controller side, over the scripted runner: the
//! class's choice recorded in the LV tag and the volume context, carried by
//! snapshots into restores, and a restore that would mix plain and encrypted
//! data refused before any lvm command runs.

use carve_core::names;

use super::*;

fn luks_params() -> HashMap<String, String> {
    HashMap::from([
        ("carve.dev/encryption".to_string(), "luks2".to_string()),
        ("carve.dev/luks-pbkdf".to_string(), "pbkdf2".to_string()),
    ])
}

fn tag_of(c: &ControllerService, lv: &str) -> Option<String> {
    let view = c.view().unwrap();
    let lv = view.lvm.lvs.iter().find(|l| l.name == lv)?;
    lv.tag(names::TAG_ENCRYPTION).map(names::decode_tag_value)
}

async fn snapshot(c: &ControllerService, name: &str, source: &str) -> csi::Snapshot {
    Controller::create_snapshot(
        c,
        Request::new(csi::CreateSnapshotRequest {
            name: name.into(),
            source_volume_id: source.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .snapshot
    .unwrap()
}

fn from_snapshot(
    name: &str,
    snapshot_id: &str,
    params: HashMap<String, String>,
) -> csi::CreateVolumeRequest {
    let mut req = create_req(name, 8 * MI, 0);
    req.parameters = params;
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snapshot_id.into(),
            },
        )),
    });
    req
}

#[tokio::test]
async fn the_choice_is_recorded_and_inherited_by_snapshots_and_restores() {
    let (c, runner) = setup().await;
    let mut req = create_req("secret-db", 8 * MI, 0);
    req.parameters = luks_params();
    let vol = c
        .create_volume(Request::new(req.clone()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        vol.volume_context
            .get("carve.dev/encryption")
            .map(String::as_str),
        Some("luks2")
    );
    let lv = names::lv_name("secret-db");
    assert_eq!(
        tag_of(&c, &lv).as_deref(),
        Some("luks2:aes-xts-plain64:512:pbkdf2:0:2000:0")
    );
    // The retry converges; the same name as a plain volume is another volume.
    c.create_volume(Request::new(req)).await.unwrap();
    assert_eq!(
        create_code(&c, create_req("secret-db", 8 * MI, 0)).await,
        Code::AlreadyExists
    );
    let snap = snapshot(&c, "secret-snap", &vol.volume_id).await;
    assert_eq!(
        tag_of(&c, &names::snapshot_lv_name("secret-snap")),
        tag_of(&c, &lv),
        "the snapshot records its origin's encryption"
    );
    // A plain class cannot take it: nothing runs.
    runner.clear();
    let plain = from_snapshot("plain-restore", &snap.snapshot_id, HashMap::new());
    let e = c.create_volume(Request::new(plain)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("LUKS2-encrypted"), "{}", e.message());
    assert!(runner.writes().is_empty(), "{:?}", runner.writes());
    // An encrypted class with other options: the source's header settings.
    let mut other = luks_params();
    other.insert("carve.dev/luks-cipher".into(), "serpent-xts-plain64".into());
    let restored = c
        .create_volume(Request::new(from_snapshot(
            "enc-restore",
            &snap.snapshot_id,
            other,
        )))
        .await;
    // A thick restore copies (Aborted while it runs); the LV exists either way.
    if let Err(s) = &restored {
        assert_eq!(s.code(), Code::Aborted, "{s:?}");
    }
    assert_eq!(tag_of(&c, &names::lv_name("enc-restore")), tag_of(&c, &lv));
}

#[tokio::test]
async fn a_plain_snapshot_cannot_become_an_encrypted_volume() {
    let (c, runner) = setup().await;
    let vol = c
        .create_volume(Request::new(create_req("plain-db", 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(!vol.volume_context.contains_key("carve.dev/encryption"));
    let snap = snapshot(&c, "plain-snap", &vol.volume_id).await;
    runner.clear();
    let e = c
        .create_volume(Request::new(from_snapshot(
            "enc-from-plain",
            &snap.snapshot_id,
            luks_params(),
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("not encrypted"), "{}", e.message());
    assert!(runner.writes().is_empty(), "{:?}", runner.writes());
}

#[tokio::test]
async fn bad_encryption_parameters_run_nothing() {
    let (c, runner) = setup().await;
    for (k, v) in [
        ("carve.dev/encryption", "luks1"),
        ("carve.dev/luks-cipher", "aes-xts-plain64"),
        ("carve.dev/luks-key-size", "100"),
    ] {
        let mut req = create_req("bad-luks", 8 * MI, 0);
        if k != "carve.dev/encryption" {
            req.parameters = luks_params();
            if k == "carve.dev/luks-cipher" {
                req.parameters.remove("carve.dev/encryption");
            }
        }
        req.parameters.insert(k.into(), v.into());
        let e = c.create_volume(Request::new(req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{k}={v}: {e:?}");
        assert!(e.message().contains(k), "{}", e.message());
    }
    assert!(runner.commands().is_empty(), "{:?}", runner.commands());
}
