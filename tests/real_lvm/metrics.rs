//! Issue 15: what `/metrics` says after real operations equals what LVM and
//! the RPCs say; thin pool thresholds reach health, capacity and the log;
//! JSON logs carry the RPC and its IDs, and no secret. Every scrape is kept
//! in $CARVE_METRICS_SCRAPES (hack/test.sh checks each against the strict
//! OpenMetrics parser, and the dashboard and alert queries against them).

use std::io::{Read, Write};

use carve_csi::csi::node_client::NodeClient;

use super::node::{attach, detach, paths, s, volume_stats};
use super::*;

/// `GET path` on 127.0.0.1:`port`: the head (asserted 200) and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the metrics port {port}: {e}"));
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: carve\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_string(), body.to_string())
}

/// The body of `GET /metrics` on 127.0.0.1:`port`, kept for hack/test.sh.
pub(super) fn scrape(port: u16, keep_as: &str) -> String {
    let (head, body) = http_get(port, "/metrics");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    if let Ok(dir) = std::env::var("CARVE_METRICS_SCRAPES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{keep_as}.txt"), &body).unwrap();
    }
    body
}

/// Every sample of `name`: its labels and value.
fn samples(text: &str, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (n, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((labels, value.parse().unwrap()));
    }
    out
}

/// The value of `name` with (at least) `labels`, if exported.
pub(super) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
}

/// A number from a one-field lvm report (`vgs`/`lvs -o <field>`).
fn lvm_field(cmd: &str, field: &str, what: &str) -> f64 {
    let args = [
        cmd,
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        field,
        what,
    ];
    let out = lvm(&args);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("lvm {args:?}: {out:?}: {e}"))
}

/// Polls (carve's view follows LVM within capacity_refresh_seconds) until
/// `check` holds for a fresh scrape; panics with the last scrape otherwise.
async fn eventually(port: u16, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let text = scrape(port, &format!("{}-{n}", what.replace(' ', "-")));
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never true; last scrape:\n{text}"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes `mib` MiB of random bytes at the start of a block device.
fn fill(dev: &str, mib: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i * 131 + j * 7 + j / 251) as u8;
        }
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

/// VGs of this test's own: exact figures from `vgs`/`lvs` that no other
/// test's volumes (or leftovers of a test that failed before) can move, and
/// nothing of this test's left behind when it fails (LoopVg removes them).
const OWN_VGS: &str = r#"
capacity_refresh_seconds = 5
node_path_roots = ["/tmp"]
lvm_timeout_seconds = 60

[[device_class]]
name = "thick"
volume_group = "carve-metrics-thick"
type = "thick"
default = true

[[device_class]]
name = "thin"
volume_group = "carve-metrics-thin"
type = "thin"
thin_pool = "pool0"
over_provision_ratio = 4.0
"#;

#[tokio::test]
async fn metrics_equal_what_lvm_and_get_capacity_say() {
    const PORT: u16 = 19701;
    let _thick_vg = LoopVg::new("carve-metrics-thick", "256M");
    let _thin_vg = LoopVg::new("carve-metrics-thin", "320M");
    lvm(&[
        "lvcreate",
        "-q",
        "-y",
        "-T",
        "-L",
        "256M",
        "carve-metrics-thin/pool0",
    ]);
    let cfg = config_file(OWN_VGS);
    let carve = Carve::start_with(cfg.path(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    let thick = create_ok(&mut c, create_req("metrics-thick", Some("thick"), 64 * MI)).await;
    let thin = create_ok(&mut c, create_req("metrics-thin", Some("thin"), 256 * MI)).await;
    // Data in the thin volume, so the pool's data use is not zero.
    fill(&format!("/dev/{}", lvm_path(&thin.volume_id)), 32);

    // VG free and size: what `vgs` says.
    let vg_free = lvm_field("vgs", "vg_free", "carve-metrics-thick");
    let vg_size = lvm_field("vgs", "vg_size", "carve-metrics-thick");
    let text = eventually(PORT, "vg free", |t| {
        value(t, "carve_vg_free_bytes", &[("vg", "carve-metrics-thick")]) == Some(vg_free)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "carve_vg_size_bytes",
            &[("vg", "carve-metrics-thick")]
        ),
        Some(vg_size)
    );
    assert_eq!(
        value(&text, "carve_vg_present", &[("vg", "carve-metrics-thick")]),
        Some(1.0)
    );
    assert_eq!(value(&text, "carve_ready", &[]), Some(1.0));

    // Thin pool data and metadata use: what `lvs` says, as a ratio. The
    // kernel commits the pool's metadata in the background for a while after
    // the writes, so `lvs` is read again at each scrape until carve's next
    // report catches up with it.
    let pool = [("vg", "carve-metrics-thin"), ("pool", "pool0")];
    let percent = |field| lvm_field("lvs", field, "carve-metrics-thin/pool0");
    assert!(
        percent("data_percent") > 0.0,
        "the pool holds the written data"
    );
    let text = eventually(PORT, "pool data and metadata", |t| {
        let same = |metric, field| {
            value(t, metric, &pool).is_some_and(|v| (v - percent(field) / 100.0).abs() < 1e-9)
        };
        same("carve_thin_pool_data_used_ratio", "data_percent")
            && same("carve_thin_pool_metadata_used_ratio", "metadata_percent")
    })
    .await;
    assert_eq!(
        value(&text, "carve_thin_pool_size_bytes", &pool),
        Some(lvm_field("lvs", "lv_size", "carve-metrics-thin/pool0"))
    );
    assert_eq!(value(&text, "carve_thin_pool_warning", &pool), Some(0.0));

    // Capacity: the GetCapacity answer, from the same view.
    for class in ["thick", "thin"] {
        let mut agreed = false;
        for _ in 0..10 {
            let before = capacity(&mut c, class).await.available_capacity as f64;
            let text = scrape(PORT, &format!("capacity-{class}"));
            let after = capacity(&mut c, class).await.available_capacity as f64;
            let got = value(&text, "carve_class_capacity_bytes", &[("class", class)]);
            if before == after {
                assert_eq!(got, Some(before), "class {class}");
                agreed = true;
                break;
            }
        }
        assert!(agreed, "the capacity of {class} never held still");
    }

    // The volumes, per class and each on its own.
    let text = scrape(PORT, "volumes");
    for (v, class) in [(&thick, "thick"), (&thin, "thin")] {
        assert_eq!(
            value(
                &text,
                "carve_volume_size_bytes",
                &[("volume", &v.volume_id), ("class", class)]
            ),
            Some(v.capacity_bytes as f64)
        );
        assert_eq!(
            value(&text, "carve_volume_abnormal", &[("volume", &v.volume_id)]),
            Some(0.0)
        );
        assert!(value(&text, "carve_class_volumes", &[("class", class)]).unwrap() >= 1.0);
    }
    // Staging the thick volume formats it: mkfs is counted and timed, and
    // its failure series is there at 0.
    let mut n = NodeClient::new(carve.channel().await);
    let cap = super::node::mount_cap_fs("ext4", &[]);
    let p = paths("metrics-thick");
    attach(&mut n, &thick.volume_id, &p, &cap).await;
    detach(&mut n, &thick.volume_id, &p).await;
    let text = scrape(PORT, "tools");
    let mkfs = [("program", "mkfs.ext4")];
    assert_eq!(value(&text, "carve_tool_commands_total", &mkfs), Some(1.0));
    assert_eq!(
        value(&text, "carve_tool_command_failures_total", &mkfs),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "carve_tool_command_duration_seconds_count", &mkfs),
        Some(1.0)
    );
    // Commands: lvcreate ran (twice at least) and was timed; nothing failed.
    assert!(
        value(
            &text,
            "carve_lvm_commands_total",
            &[("command", "lvcreate")]
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        value(
            &text,
            "carve_lvm_command_duration_seconds_count",
            &[("command", "lvcreate")]
        )
        .unwrap()
            >= 2.0
    );
    let lvcreate = [("command", "lvcreate")];
    assert_eq!(
        value(&text, "carve_lvm_command_failures_total", &lvcreate),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "carve_lvm_command_timeouts_total", &lvcreate),
        Some(0.0)
    );
    assert!(value(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&text, "process_open_fds", &[]).unwrap() >= 3.0);
    assert_eq!(samples(&text, "carve_build_info").len(), 1);

    delete(&mut c, thick.volume_id).await;
    delete(&mut c, thin.volume_id).await;
}

#[tokio::test]
async fn rpc_error_counters_move_by_code() {
    const PORT: u16 = 19702;
    let carve = Carve::start_with(&testbed_config(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    let count = |t: &str, method: &str, code: &str| {
        value(
            t,
            "carve_rpc_requests_total",
            &[("method", method), ("code", code)],
        )
        .unwrap_or(0.0)
    };
    let before = scrape(PORT, "rpc-before");
    let e = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: id_here("carve-thick", "cv-nosuchvolume"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .create_volume(create_req("metrics-bad-class", Some("nope"), MI))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .create_volume(create_req("metrics-too-big", Some("thick"), 1 << 40))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    capacity(&mut c, "thick").await;
    let after = scrape(PORT, "rpc-after");
    for (method, code, n) in [
        ("ControllerGetVolume", "NotFound", 1.0),
        ("CreateVolume", "InvalidArgument", 1.0),
        ("CreateVolume", "ResourceExhausted", 1.0),
        ("CreateVolume", "OK", 0.0),
        ("GetCapacity", "OK", 1.0),
    ] {
        assert_eq!(
            count(&after, method, code) - count(&before, method, code),
            n,
            "{method} {code}"
        );
    }
    assert!(
        value(
            &after,
            "carve_rpc_duration_seconds_count",
            &[("method", "CreateVolume")]
        )
        .unwrap()
            >= 2.0
    );
}

#[tokio::test]
async fn copy_progress_moves_during_a_slow_copy() {
    const PORT: u16 = 19703;
    let carve = Carve::start_with(
        &testbed_config(),
        Opts::slow_copies(100).and_arg(&format!("--metrics-address=127.0.0.1:{PORT}")),
    )
    .await;
    let mut c = carve.controller().await;
    let src = create_ok(
        &mut c,
        create_req("metrics-copy-src", Some("thick"), 128 * MI),
    )
    .await;
    let snap = snapshot_ok(&mut c, "metrics-copy-snap", &src.volume_id).await;
    let before = scrape(PORT, "copy-before");
    let done_before = value(&before, "carve_copy_jobs_total", &[("outcome", "done")]).unwrap();
    let mut req = create_req("metrics-copy-restored", Some("thick"), 128 * MI);
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    let mut c2 = carve.controller().await;
    let r2 = req.clone();
    let create = tokio::spawn(async move { super::crash::create_until_done(&mut c2, &r2).await });

    // 32 chunks of 4 MiB at 100 ms each: the copy is seen moving.
    let mut seen: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 || seen[0] == *seen.last().unwrap() {
        assert!(
            Instant::now() < deadline,
            "copy progress never moved: {seen:?}"
        );
        let text = scrape(PORT, &format!("copy-{}", seen.len()));
        let copied = samples(&text, "carve_copy_copied_bytes");
        if let [(labels, v)] = copied.as_slice() {
            assert!(labels["volume"].starts_with(&format!("v1:{NODE}:carve-thick/")));
            assert_eq!(
                value(
                    &text,
                    "carve_copy_size_bytes",
                    &[("volume", &labels["volume"])]
                ),
                Some((128 * MI) as f64)
            );
            assert_eq!(value(&text, "carve_copy_jobs_running", &[]), Some(1.0));
            seen.push(*v);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {seen:?}"
    );
    let restored = create.await.unwrap();
    let after = scrape(PORT, "copy-after");
    assert_eq!(
        value(&after, "carve_copy_jobs_total", &[("outcome", "done")]).unwrap() - done_before,
        1.0
    );
    assert!(value(&after, "carve_copy_bytes_total", &[]).unwrap() >= (128 * MI) as f64);
    assert!(
        samples(&after, "carve_copy_copied_bytes").is_empty(),
        "no copy in flight"
    );
    delete(&mut c, restored.volume_id).await;
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, src.volume_id).await;
}

/// The test ground's config with thin pool thresholds in front.
fn config_with(top: &str) -> tempfile::NamedTempFile {
    let base = std::fs::read_to_string(testbed_config()).unwrap();
    config_file(&format!("{top}\n{base}"))
}

#[tokio::test]
async fn a_thin_pool_past_its_thresholds_warns_then_refuses() {
    const PORT: u16 = 19704;
    let cfg = config_with("thin_pool_warning_percent = 1.0\nthin_pool_full_percent = 99.0");
    let carve = Carve::start_with(cfg.path(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = block_cap();
    let mut req = create_req("metrics-pool-vol", Some("thin"), 256 * MI);
    req.volume_capabilities = vec![cap.clone()];
    let vol = create_ok(&mut c, req).await;
    let id = vol.volume_id.clone();
    // 128 MiB of a 2 GiB pool: past 1 %.
    fill(&format!("/dev/{}", lvm_path(&id)), 128);
    let data = lvm_field("lvs", "data_percent", "carve-thin/pool0");
    assert!(data > 1.0, "{data}");

    // ListVolumes: abnormal, naming the pool and the figure.
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let entry = list_entries(&mut c)
            .await
            .into_iter()
            .find(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == id))
            .expect("listed");
        let cond = entry.status.unwrap().volume_condition.unwrap();
        if cond.abnormal {
            break cond.message;
        }
        assert!(
            Instant::now() < deadline,
            "never abnormal: {}",
            cond.message
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        message.contains("thin pool carve-thin/pool0 ")
            && message.contains("% used (warning at 1%)"),
        "{message}"
    );
    // NodeGetVolumeStats says the same.
    let p = paths("metrics-pool");
    attach(&mut n, &id, &p, &cap).await;
    let stats = volume_stats(&mut n, &id, &p).await;
    let cond = stats.volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("carve-thin/pool0"),
        "{}",
        cond.message
    );
    // The metrics too; and the crossing is logged once, not at every refresh.
    let pool = [("vg", "carve-thin"), ("pool", "pool0")];
    let text = scrape(PORT, "pool-warning");
    assert_eq!(value(&text, "carve_thin_pool_warning", &pool), Some(1.0));
    assert_eq!(value(&text, "carve_thin_pool_full", &pool), Some(0.0));
    assert_eq!(
        value(&text, "carve_volume_abnormal", &[("volume", &id)]),
        Some(1.0)
    );
    assert!(value(&text, "carve_volumes_abnormal", &[("class", "thin")]).unwrap() >= 1.0);
    assert_eq!(
        value(&text, "carve_thin_pool_warning_threshold_ratio", &[]),
        Some(0.01)
    );
    tokio::time::sleep(Duration::from_secs(11)).await; // two more refreshes
    let crossings = carve
        .log_text()
        .lines()
        .filter(|l| l.contains("thin pool is filling up"))
        .count();
    assert_eq!(crossings, 1, "{}", carve.log_text());
    detach(&mut n, &id, &p).await;
    drop(carve);

    // Past the hard threshold: no capacity and no new volume, in words.
    let full = config_with("thin_pool_warning_percent = 0.5\nthin_pool_full_percent = 1.0");
    let carve = Carve::start_with(full.path(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    assert_eq!(capacity(&mut c, "thin").await.available_capacity, 0);
    let e = c
        .create_volume(create_req("metrics-pool-refused", Some("thin"), 16 * MI))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("thin pool carve-thin/pool0 ")
            && e.message().contains("% used (full at 1%)"),
        "{}",
        e.message()
    );
    let text = scrape(PORT, "pool-full");
    assert_eq!(value(&text, "carve_thin_pool_full", &pool), Some(1.0));
    assert_eq!(
        value(&text, "carve_class_capacity_bytes", &[("class", "thin")]),
        Some(0.0)
    );
    assert!(carve.log_text().contains("thin pool is full"));
    // The thick class is unaffected.
    assert!(capacity(&mut c, "thick").await.available_capacity > 0);
    delete(&mut c, id).await;
}

#[tokio::test]
async fn json_logs_name_the_rpc_and_its_ids_and_never_a_secret() {
    const SECRET: &str = "s3cr3t-passphrase-do-not-log-7f3a";
    let carve = Carve::start_with(
        &testbed_config(),
        Opts::default().and_arg("--log-format=json"),
    )
    .await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = block_cap();
    let secrets = HashMap::from([("passphrase".to_string(), SECRET.to_string())]);
    let mut req = create_req("json-logs-vol", Some("thick"), 16 * MI);
    req.volume_capabilities = vec![cap.clone()];
    req.secrets = secrets.clone();
    let id = create_ok(&mut c, req).await.volume_id;
    let p = paths("json-logs");
    n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: s(&p.stage),
        volume_capability: Some(cap.clone()),
        secrets: secrets.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: s(&p.stage),
    })
    .await
    .unwrap();
    let e = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: id_here("carve-thick", "cv-json-nosuch"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    delete(&mut c, id.clone()).await;

    let log = carve.log_text();
    assert!(!log.contains(SECRET), "a secret reached the log");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(SECRET),
                "a secret is in the argv of {:?}",
                entry.path()
            );
        }
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let span = |l: &serde_json::Value, k: &str| l["span"][k].as_str().map(str::to_string);
    let done = |method: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "rpc done" && span(l, "method").as_deref() == Some(method)
            })
            .unwrap_or_else(|| panic!("no 'rpc done' line for {method}:\n{log}"))
            .clone()
    };
    let create = done("CreateVolume");
    assert_eq!(
        span(&create, "request_name").as_deref(),
        Some("json-logs-vol")
    );
    assert_eq!(create["fields"]["code"], "OK");
    for method in ["NodeStageVolume", "NodeUnstageVolume", "DeleteVolume"] {
        assert_eq!(
            span(&done(method), "volume_id").as_deref(),
            Some(id.as_str()),
            "{method}"
        );
    }
    // The refusal is logged once, at the boundary, inside its RPC's span.
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request refused")
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(
        span(refused[0], "method").as_deref(),
        Some("ControllerGetVolume")
    );
    assert!(span(refused[0], "volume_id")
        .unwrap()
        .ends_with("cv-json-nosuch"));
    // lvm commands are logged at debug with their argv and duration, in the span.
    assert!(lines.iter().any(|l| {
        l["level"] == "DEBUG"
            && l["fields"]["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("lvm lvcreate"))
            && l["fields"]["elapsed_ms"].is_number()
            && span(l, "method").as_deref() == Some("CreateVolume")
    }));
}

/// The body of `GET /volumes` on 127.0.0.1:`port`, parsed.
fn inventory(port: u16) -> serde_json::Value {
    let (head, body) = http_get(port, "/volumes");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/volumes is JSON: {e}: {body}"))
}

/// Issue 16: the LV inventory carve-agent reads for its orphan report lists
/// exactly carve's volumes and snapshots on the node (IDs equal to ListVolumes
/// and CreateSnapshot's, claim names from the provisioner's metadata, LVM's
/// creation time), never a foreign LV, and follows deletes.
#[tokio::test]
async fn the_volume_inventory_lists_carves_lvs_for_the_agent() {
    const PORT: u16 = 19705;
    let carve = Carve::start_with(&testbed_config(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    let mut req = create_req("pvc-inventory-1", Some("thin"), 8 * MI);
    req.parameters.extend([
        (
            "csi.storage.k8s.io/pv/name".to_string(),
            "pvc-inventory-1".to_string(),
        ),
        (
            "csi.storage.k8s.io/pvc/name".to_string(),
            "data-db-0".to_string(),
        ),
        (
            "csi.storage.k8s.io/pvc/namespace".to_string(),
            "db".to_string(),
        ),
    ]);
    let vol = create_ok(&mut c, req).await;
    let snap = snapshot_ok(&mut c, "snapshot-inventory-1", &vol.volume_id).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let inv = inventory(PORT);
    assert_eq!(inv["node"], NODE);
    assert_eq!(inv["complete"], true);
    let entries = inv["volumes"].as_array().unwrap();
    let find = |id: &str| entries.iter().find(|e| e["id"] == id).cloned();
    let v = find(&vol.volume_id).unwrap_or_else(|| panic!("{} in {inv}", vol.volume_id));
    assert_eq!(v["kind"], "volume");
    assert_eq!(v["pv"], "pvc-inventory-1");
    assert_eq!(
        (v["pvc"].as_str(), v["pvc_namespace"].as_str()),
        (Some("data-db-0"), Some("db"))
    );
    assert_eq!(v["name"], "pvc-inventory-1");
    assert_eq!(v["incomplete"], false);
    assert!((now - v["created"].as_i64().unwrap()).abs() < 600, "{v}");
    let s = find(&snap.snapshot_id).unwrap_or_else(|| panic!("{} in {inv}", snap.snapshot_id));
    assert_eq!(s["kind"], "snapshot");
    // Exactly the volumes ListVolumes gives, plus carve's snapshots; no
    // foreign LV, no pool.
    let mut listed: Vec<String> = list_entries(&mut c)
        .await
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    listed.sort();
    let mut volumes: Vec<String> = entries
        .iter()
        .filter(|e| e["kind"] == "volume")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    volumes.sort();
    assert_eq!(volumes, listed);
    for e in entries {
        let id = e["id"].as_str().unwrap();
        assert!(
            id.contains("/cv-") || id.contains("/cs-"),
            "only carve LVs: {id}"
        );
    }
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, vol.volume_id.clone()).await;
    let inv = inventory(PORT);
    let ids: Vec<&str> = inv["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&vol.volume_id.as_str()) && !ids.contains(&snap.snapshot_id.as_str()),
        "{ids:?}"
    );
    drop(c);
    drop(carve);

    // A configured VG missing from the node (a disk not attached) hides its
    // LVs: the inventory says it is not complete, so the agent calls no PV
    // on it missing.
    let base = std::fs::read_to_string(testbed_config()).unwrap();
    let cfg = config_file(&format!(
        "{base}\n[[device_class]]\nname = \"absent\"\nvolume_group = \"carve-not-attached\"\ntype = \"thick\"\n"
    ));
    let carve = Carve::start_with(cfg.path(), Opts::metrics(PORT)).await;
    let inv = inventory(PORT);
    assert_eq!(inv["complete"], false, "{inv}");
    drop(carve);
    foreign_intact();
}
