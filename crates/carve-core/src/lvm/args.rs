//! Pure argument builders for every lvm command carve runs. Nothing here runs
//! anything, so each builder is checked by table tests; the argv is always a
//! vector, never a shell string.

use crate::config::{DeviceClass, Provisioning};

use super::report::{LV_FIELDS, PV_FIELDS, TIME_FORMAT, VG_FIELDS};

/// What a new LV should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateLv<'a> {
    pub class: &'a DeviceClass,
    pub name: &'a str,
    pub size_bytes: u64,
    pub tags: Vec<String>,
}

fn s(v: &str) -> String {
    v.to_string()
}

/// One call that reads every VG, PV and (visible) LV on the host. fullreport
/// cannot omit a section, so pvseg and seg get an empty column list.
pub fn fullreport() -> Vec<String> {
    [
        "fullreport",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "--config",
        TIME_FORMAT,
        "--configreport",
        "vg",
        "-o",
        VG_FIELDS,
        "--configreport",
        "pv",
        "-o",
        PV_FIELDS,
        "--configreport",
        "lv",
        "-o",
        LV_FIELDS,
        "--configreport",
        "pvseg",
        "-o,",
        "--configreport",
        "seg",
        "-o,",
    ]
    .iter()
    .map(|x| s(x))
    .collect()
}

/// lvcreate for a device class. Thick LVs are zeroed at the start and old
/// signatures wiped (`-Zy -Wy`), so a new volume never shows a previous
/// tenant's filesystem to the node's "format only if blank" check. Thin LVs read
/// as zeroes already.
pub fn lvcreate(spec: &CreateLv<'_>) -> Vec<String> {
    let c = spec.class;
    let mut a = vec![s("lvcreate"), s("--yes"), s("--quiet")];
    a.push(s("--name"));
    a.push(s(spec.name));
    match c.provisioning {
        Provisioning::Thin => {
            a.push(s("--virtualsize"));
            a.push(format!("{}b", spec.size_bytes));
            a.push(s("--thin"));
        }
        Provisioning::Thick => {
            a.push(s("--size"));
            a.push(format!("{}b", spec.size_bytes));
            a.extend([s("--zero"), s("y"), s("--wipesignatures"), s("y")]);
            a.extend(c.layout.lvcreate_args());
        }
    }
    for t in &spec.tags {
        a.push(s("--addtag"));
        a.push(t.clone());
    }
    match c.provisioning {
        Provisioning::Thin => a.push(format!(
            "{}/{}",
            c.volume_group,
            c.thin_pool.as_deref().unwrap_or_default()
        )),
        Provisioning::Thick => a.push(c.volume_group.clone()),
    }
    a
}

/// lvremove restricted by selection to LVs carrying the owner tag that are not
/// the origin of classic snapshots: LVM itself refuses to remove an LV that is
/// not carve's, and never cascades into snapshots (an origin's removal would
/// take its snapshots along under `--yes`). Not `--quiet`: the "successfully
/// removed" line is how carve learns that the selection matched.
pub fn lvremove(vg: &str, lv: &str, owner_tag: &str) -> Vec<String> {
    vec![
        s("lvremove"),
        s("--yes"),
        s("--select"),
        format!("lv_tags={owner_tag} && lv_attr!~^o"),
        format!("{vg}/{lv}"),
    ]
}

/// A snapshot of `vg/origin`: thin (no size: shares the pool) when
/// `cow_bytes` is None, else a classic copy-on-write snapshot with that much
/// space. Thin snapshots keep LVM's activation-skip flag: they are never
/// mounted, only restored from.
pub fn lvcreate_snapshot(
    vg: &str,
    origin: &str,
    name: &str,
    cow_bytes: Option<u64>,
    tags: &[String],
) -> Vec<String> {
    let mut a = vec![
        s("lvcreate"),
        s("--yes"),
        s("--quiet"),
        s("--snapshot"),
        s("--name"),
        s(name),
    ];
    if let Some(b) = cow_bytes {
        a.push(s("--size"));
        a.push(format!("{b}b"));
    }
    for t in tags {
        a.push(s("--addtag"));
        a.push(t.clone());
    }
    a.push(format!("{vg}/{origin}"));
    a
}

/// A writable, active thin volume made from a thin snapshot or thin volume:
/// how thin restores and clones are made (instant, sharing the pool).
pub fn lvcreate_thin_copy(vg: &str, source: &str, name: &str, tags: &[String]) -> Vec<String> {
    let mut a = vec![
        s("lvcreate"),
        s("--yes"),
        s("--quiet"),
        s("--snapshot"),
        s("--setactivationskip"),
        s("n"),
        s("--activate"),
        s("y"),
        s("--name"),
        s(name),
    ];
    for t in tags {
        a.push(s("--addtag"));
        a.push(t.clone());
    }
    a.push(format!("{vg}/{source}"));
    a
}

pub fn lvchange_deltag(vg: &str, lv: &str, tag: &str) -> Vec<String> {
    vec![
        s("lvchange"),
        s("--quiet"),
        s("--deltag"),
        s(tag),
        format!("{vg}/{lv}"),
    ]
}

/// Activates an LV (a node restart or an operator may have left it inactive).
pub fn lvchange_activate(vg: &str, lv: &str) -> Vec<String> {
    vec![
        s("lvchange"),
        s("--quiet"),
        s("--activate"),
        s("y"),
        format!("{vg}/{lv}"),
    ]
}

/// (Re)creates the /dev nodes of an LV. Needed where nothing else makes them:
/// an lvcreate or activation interrupted (a crash, a timeout) can leave the
/// device-mapper device in place but its node missing, and without udev a
/// second activation of an active LV does not make it.
pub fn vgmknodes(vg: &str, lv: &str) -> Vec<String> {
    vec![s("vgmknodes"), s("--quiet"), format!("{vg}/{lv}")]
}

/// Grows an LV to exactly `size_bytes`; the filesystem is grown by the node.
pub fn lvextend(vg: &str, lv: &str, size_bytes: u64) -> Vec<String> {
    vec![
        s("lvextend"),
        s("--quiet"),
        s("--size"),
        format!("{size_bytes}b"),
        format!("{vg}/{lv}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceClass, Layout};

    fn class(p: Provisioning) -> DeviceClass {
        DeviceClass {
            name: "c".into(),
            volume_group: "vg0".into(),
            provisioning: p,
            default: false,
            spare: 0,
            thin_pool: (p == Provisioning::Thin).then(|| "pool0".to_string()),
            over_provision_ratio: 1.0,
            layout: Layout::Linear,
            snapshot_reserve_percent: 25,
        }
    }

    fn join(v: Vec<String>) -> String {
        v.join(" ")
    }

    #[test]
    fn lvcreate_table() {
        let thick = class(Provisioning::Thick);
        let thin = class(Provisioning::Thin);
        let mut raid1 = class(Provisioning::Thick);
        raid1.layout = Layout::Raid1 { mirrors: 2 };
        let mut striped = class(Provisioning::Thick);
        striped.layout = Layout::Striped {
            stripes: 2,
            stripe_size: Some(64 * 1024),
        };
        let mut raid5 = class(Provisioning::Thick);
        raid5.layout = Layout::Raid5 {
            stripes: 3,
            stripe_size: None,
        };
        let tags = vec!["carve.dev/owner=carve.dev".to_string()];
        let table: Vec<(&DeviceClass, &str)> = vec![
            (&thick, "lvcreate --yes --quiet --name lv1 --size 4194304b --zero y --wipesignatures y --addtag carve.dev/owner=carve.dev vg0"),
            (&thin, "lvcreate --yes --quiet --name lv1 --virtualsize 4194304b --thin --addtag carve.dev/owner=carve.dev vg0/pool0"),
            (&raid1, "lvcreate --yes --quiet --name lv1 --size 4194304b --zero y --wipesignatures y --type raid1 --mirrors 2 --nosync --addtag carve.dev/owner=carve.dev vg0"),
            (&striped, "lvcreate --yes --quiet --name lv1 --size 4194304b --zero y --wipesignatures y --stripes 2 --stripesize 64k --addtag carve.dev/owner=carve.dev vg0"),
            (&raid5, "lvcreate --yes --quiet --name lv1 --size 4194304b --zero y --wipesignatures y --type raid5 --stripes 3 --addtag carve.dev/owner=carve.dev vg0"),
        ];
        for (c, want) in table {
            let got = join(lvcreate(&CreateLv {
                class: c,
                name: "lv1",
                size_bytes: 4 << 20,
                tags: tags.clone(),
            }));
            assert_eq!(got, want);
        }
    }

    #[test]
    fn snapshot_builders() {
        let t = vec!["carve.dev/owner=carve.dev".to_string()];
        assert_eq!(
            join(lvcreate_snapshot("vg", "cv-a", "cs-b", None, &t)),
            "lvcreate --yes --quiet --snapshot --name cs-b --addtag carve.dev/owner=carve.dev vg/cv-a"
        );
        assert_eq!(
            join(lvcreate_snapshot("vg", "cv-a", "cs-b", Some(8 << 20), &t)),
            "lvcreate --yes --quiet --snapshot --name cs-b --size 8388608b --addtag carve.dev/owner=carve.dev vg/cv-a"
        );
        assert_eq!(
            join(lvcreate_thin_copy("vg", "cs-b", "cv-c", &t)),
            "lvcreate --yes --quiet --snapshot --setactivationskip n --activate y --name cv-c --addtag carve.dev/owner=carve.dev vg/cs-b"
        );
    }

    #[test]
    fn simple_builders() {
        assert_eq!(
            join(lvremove("vg", "lv", "carve.dev/owner=carve.dev")),
            "lvremove --yes --select lv_tags=carve.dev/owner=carve.dev && lv_attr!~^o vg/lv"
        );
        assert_eq!(
            join(lvextend("vg", "lv", 8 << 20)),
            "lvextend --quiet --size 8388608b vg/lv"
        );
        let r = fullreport();
        assert_eq!(r[0], "fullreport");
        assert!(r.windows(2).any(|w| w[0] == "--units" && w[1] == "b"));
        assert!(r.contains(&"--nosuffix".to_string()));
    }
}
