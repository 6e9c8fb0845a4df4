//! The fuzz targets of carve-core: the lvm report parser, `lv_attr`, the
//! node config file, StorageClass parameters, volume and snapshot IDs (and
//! the tag encoding they ride on), and the kernel's mountinfo. Each replays
//! its corpus, then runs its properties with the printed seed. (The lvm
//! shell's line encoding and report stream are fuzzed in `lvm::shell`, the
//! HTTP/2 rewriter in carve-csi's `grpc_compat`.)

use std::collections::HashMap;

use proptest::prelude::*;

use super::{config, corpus};
use crate::config::Config;
use crate::host::mountinfo;
use crate::lvm::attr::LvAttr;
use crate::lvm::report::parse_fullreport;
use crate::names::{decode_tag_value, encode_tag_value, VolumeId};
use crate::params::{check_storage_class, Params};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- lvm fullreport ----------------------------------------------------

#[test]
fn report_corpus() {
    for (name, bytes) in corpus("report") {
        let r = parse_fullreport(&text(&bytes));
        // The corpus says what each file must do: ok-* parse, bad-* do not.
        assert_eq!(r.is_ok(), name.starts_with("ok-"), "{name}: {r:?}");
    }
}

fn lv_row() -> impl Strategy<Value = (String, u64, Vec<String>, String)> {
    (
        "[a-zA-Z0-9+_.-]{1,20}",
        any::<u64>(),
        proptest::collection::vec("[A-Za-z0-9_+.=/:&#-]{1,30}", 0..5),
        "[-a-zA-Z]{10}",
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn report_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_fullreport(&text(&bytes));
    }

    /// The real report with a piece replaced by anything: an error or a
    /// state, never a panic.
    #[test]
    fn report_never_panics_on_a_damaged_report(
        at in any::<prop::sample::Index>(),
        len in 0usize..40,
        junk in "[{}\\[\\]\",:0-9a-z\\\\ ]{0,40}",
    ) {
        let fixture = &corpus("report").into_iter().find(|(n, _)| n == "ok-fullreport.json").unwrap().1;
        let s = text(fixture);
        let mut start = at.index(s.len());
        while !s.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(s.len());
        while !s.is_char_boundary(end) { end -= 1; }
        let damaged = format!("{}{}{}", &s[..start], junk, &s[end..]);
        let _ = parse_fullreport(&damaged);
    }

    /// What lvm writes, carve reads back field for field.
    #[test]
    fn report_rows_read_back(rows in proptest::collection::vec(lv_row(), 0..8)) {
        let lvs: Vec<serde_json::Value> = rows.iter().map(|(name, size, tags, attr)| serde_json::json!({
            "lv_name": name, "vg_name": "vg0", "lv_size": size.to_string(), "lv_tags": tags.join(","),
            "lv_attr": attr, "pool_lv": "", "origin": "", "data_percent": "", "metadata_percent": "",
            "lv_health_status": "", "lv_time": "1795428000",
        })).collect();
        let doc = serde_json::json!({"report": [{"vg": [], "pv": [], "lv": lvs}]});
        let state = parse_fullreport(&doc.to_string()).unwrap();
        prop_assert_eq!(state.lvs.len(), rows.len());
        for (lv, (name, size, tags, _)) in state.lvs.iter().zip(&rows) {
            prop_assert_eq!(&lv.name, name);
            prop_assert_eq!(lv.size, *size);
            prop_assert_eq!(&lv.tags, tags);
        }
    }
}

// ---- lv_attr -------------------------------------------------------------

#[test]
fn attr_corpus() {
    for (name, bytes) in corpus("lv_attr") {
        for line in text(&bytes).lines() {
            let a = LvAttr::parse(line);
            assert_eq!(a, LvAttr::parse(line), "{name}: {line:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// Any string decodes (missing characters count as `-`), and only the
    /// first ten characters matter to what carve decides.
    #[test]
    fn attr_is_total(s in ".{0,14}") {
        let a = LvAttr::parse(&s);
        let ten: String = s.chars().take(10).collect();
        let b = LvAttr::parse(&ten);
        prop_assert_eq!(a.lv_type, b.lv_type);
        prop_assert_eq!(a.state, b.state);
        prop_assert_eq!(a.open, b.open);
        prop_assert_eq!(a.health, b.health);
        prop_assert_eq!(a.skip_activation, b.skip_activation);
    }
}

// ---- the node config file -----------------------------------------------

#[test]
fn config_corpus() {
    for (name, bytes) in corpus("config") {
        let r = Config::parse(&text(&bytes), &name);
        assert_eq!(r.is_ok(), name.starts_with("ok-"), "{name}: {r:?}");
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn config_never_panics(s in "(\\[\\[device_class\\]\\]\n|[a-z_]{1,20} = (\"[a-z0-9 .-]{0,10}\"|[0-9.-]{1,6}|true)\n|[^\\x00]{0,20}){0,12}") {
        let _ = Config::parse(&s, "fuzz");
    }

    /// A valid file keeps its values; a number out of range names its field.
    #[test]
    fn config_values_survive_or_the_field_is_named(
        refresh in 0u64..100_000,
        timeout in 0u64..100_000,
        shells in 0usize..40,
        name in "[a-z0-9][a-z0-9-]{0,20}[a-z0-9]",
        vg in "[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,30}",
        thin in any::<bool>(),
    ) {
        let kind = if thin { "type = 'thin'\nthin_pool = 'pool0'" } else { "type = 'thick'" };
        let text = format!(
            "capacity_refresh_seconds = {refresh}\nlvm_timeout_seconds = {timeout}\nlvm_shells = {shells}\n\n[[device_class]]\nname = '{name}'\nvolume_group = '{vg}'\n{kind}\n"
        );
        match Config::parse(&text, "fuzz") {
            Ok(c) => {
                prop_assert_eq!(c.capacity_refresh_seconds, refresh);
                prop_assert_eq!(c.lvm_timeout_seconds, timeout);
                prop_assert_eq!(c.lvm_shells, shells);
                prop_assert_eq!(&c.device_classes[0].name, &name);
                prop_assert_eq!(&c.device_classes[0].volume_group, &vg);
            }
            Err(e) => {
                let m = e.to_string();
                prop_assert!(
                    (refresh == 0 && m.contains("capacity_refresh_seconds"))
                        || (timeout == 0 && m.contains("lvm_timeout_seconds"))
                        || (!(1..=16).contains(&shells) && m.contains("lvm_shells"))
                        || m.contains("volume_group") || m.contains("name"),
                    "{}", m
                );
            }
        }
    }
}

// ---- StorageClass parameters ------------------------------------------------

fn param_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("carve.dev/device-class".to_string()),
        Just("csi.storage.k8s.io/fstype".to_string()),
        Just("fsType".to_string()),
        Just("csi.storage.k8s.io/pvc/name".to_string()),
        Just("csi.storage.k8s.io/pvc/namespace".to_string()),
        Just("csi.storage.k8s.io/pv/name".to_string()),
        Just("csi.storage.k8s.io/provisioner-secret-name".to_string()),
        proptest::sample::select(crate::encryption::KEYS.to_vec()).prop_map(String::from),
        "[a-z./-]{0,30}",
        ".{0,20}",
    ]
}

#[test]
fn params_corpus() {
    for (name, bytes) in corpus("params") {
        let map: HashMap<String, String> = text(&bytes)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = check_storage_class(&map);
        assert_eq!(r.is_ok(), name.starts_with("ok-"), "{name}: {r:?}");
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any map is accepted or refused naming one of its own keys.
    #[test]
    fn params_refusals_name_a_key_of_the_map(
        map in proptest::collection::hash_map(param_key(), ".{0,20}", 0..6)
    ) {
        for r in [Params::parse(&map).map(drop), check_storage_class(&map).map(drop)] {
            if let Err(e) = r {
                prop_assert!(map.contains_key(&e.key), "{:?} not in {:?}", e.key, map);
            }
        }
    }
}

// ---- volume and snapshot IDs, tag values ----------------------------------

#[test]
fn id_corpus() {
    for (name, bytes) in corpus("ids") {
        for line in text(&bytes).lines() {
            let parsed = VolumeId::parse(line).or_else(|| VolumeId::parse_snapshot(line));
            assert_eq!(
                parsed.is_some(),
                name.starts_with("ok-"),
                "{name}: {line:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn id_parse_never_panics_and_is_canonical(s in ".{0,140}|v1:[#a-zA-Z0-9.-]{0,70}:[a-z/.-]{0,70}") {
        for parsed in [VolumeId::parse(&s), VolumeId::parse_snapshot(&s)].into_iter().flatten() {
            let again = parsed.to_string();
            prop_assert!(again.len() <= 128);
            prop_assert_eq!(VolumeId::parse(&again).or_else(|| VolumeId::parse_snapshot(&again)), Some(parsed));
        }
    }

    /// Any node, VG and LV name carve makes an ID of fits CSI's 128 bytes
    /// and reads back.
    #[test]
    fn ids_made_read_back(
        node in "[a-z0-9]([a-z0-9.-]{0,250}[a-z0-9])?",
        vg in "[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,37}",
        req in ".{1,100}",
        snapshot in any::<bool>(),
    ) {
        let lv = if snapshot { crate::names::snapshot_lv_name(&req) } else { crate::names::lv_name(&req) };
        let id = VolumeId::new(&node, &vg, &lv);
        let s = id.to_string();
        prop_assert!(s.len() <= 128, "{} bytes: {}", s.len(), s);
        let back = if snapshot { VolumeId::parse_snapshot(&s) } else { VolumeId::parse(&s) };
        prop_assert_eq!(back, Some(id));
    }

    #[test]
    fn tag_values_round_trip_in_lvms_alphabet(v in ".{0,60}") {
        let e = encode_tag_value(&v);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+.-/=!:&#".contains(&b)), "{}", e);
        prop_assert_eq!(decode_tag_value(&e), v);
    }
}

// ---- mountinfo -------------------------------------------------------------

#[test]
fn mountinfo_corpus() {
    for (name, bytes) in corpus("mountinfo") {
        let mounts = mountinfo::parse(&text(&bytes));
        let lines = text(&bytes).lines().filter(|l| !l.is_empty()).count();
        if name.starts_with("ok-") {
            assert_eq!(mounts.len(), lines, "{name}: every line is a mount");
        }
    }
}

/// How the kernel writes a path into mountinfo: space, tab, newline and
/// backslash as `\ooo`.
fn kernel_escape(p: &str) -> String {
    let mut out = String::new();
    for c in p.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn mountinfo_never_panics(s in "([0-9 :/a-z\\\\-]{0,60}\n){0,6}|.{0,200}") {
        let _ = mountinfo::parse(&s);
    }

    /// Mount points with the characters the kernel escapes read back as
    /// they are.
    #[test]
    fn escaped_mount_points_read_back(
        path in "/[a-z \\t\\n\\\\é-]{1,30}",
        source in "/dev/[a-z \\\\]{1,10}",
        ro in any::<bool>(),
    ) {
        let line = format!(
            "36 35 253:3 / {} {},nosuid shared:1 - ext4 {} rw\n",
            kernel_escape(&path),
            if ro { "ro" } else { "rw" },
            kernel_escape(&source),
        );
        let m = mountinfo::parse(&line);
        prop_assert_eq!(m.len(), 1);
        prop_assert_eq!(m[0].mount_point.to_str().unwrap(), path.as_str());
        prop_assert_eq!(&m[0].source, &source);
        prop_assert_eq!(m[0].read_only(), ro);
        prop_assert_eq!((m[0].major, m[0].minor), (253, 3));
    }
}
