//! The LVM tags carve writes onto every LV it makes: the keys, and the
//! encoding that lets any value (a request name, a PVC name) round-trip
//! through LVM's tag character set.

pub const TAG_OWNER: &str = "carve.dev/owner";
pub const TAG_NAME: &str = "carve.dev/name";
pub const TAG_CLASS: &str = "carve.dev/class";
pub const TAG_PVC: &str = "carve.dev/pvc";
pub const TAG_PVC_NAMESPACE: &str = "carve.dev/pvc-namespace";
pub const TAG_PV: &str = "carve.dev/pv";
/// Snapshots and restored volumes: the volume or snapshot ID they came from.
pub const TAG_SOURCE: &str = "carve.dev/source";
/// Snapshots: the origin's size when the snapshot was taken.
pub const TAG_SIZE: &str = "carve.dev/size";
/// Snapshots: creation time (Unix seconds) as carve recorded it.
pub const TAG_CREATED: &str = "carve.dev/created";
/// A thick restore or clone whose block copy has not finished: never ready.
pub const TAG_INCOMPLETE: &str = "carve.dev/incomplete";
/// The StorageClass fsType, so the node formats as asked even when a CO leaves
/// the capability's fs_type empty.
pub const TAG_FS_TYPE: &str = "carve.dev/fs-type";
/// LUKS2-encrypted volumes and their snapshots: how the header is (or is to
/// be) made (`encryption::Luks::tag_value`). Restores and clones inherit it.
pub const TAG_ENCRYPTION: &str = "carve.dev/encryption";

/// LVM tags allow `[A-Za-z0-9_+.-/=!:&#]`; any other byte of a value (and `#`
/// itself) is written as `#xx` so arbitrary request names round-trip.
pub fn encode_tag_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"_+.-/=!:&".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("#{b:02x}"));
        }
    }
    out
}

pub fn decode_tag_value(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` with the value encoded; LVM caps a tag at 1024 bytes, so values
/// are truncated at a character boundary well below that (the LV name, not the
/// tag, is what identifies a volume).
pub fn tag(key: &str, value: &str) -> String {
    format!("{key}={}", tag_value(value))
}

/// A value as [`tag`] stores it: encoded, then cut to 900 bytes.
fn tag_value(value: &str) -> String {
    let mut v = encode_tag_value(value);
    if v.len() > 900 {
        let mut cut = 900;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    v
}

/// Whether a stored tag value (`LvInfo::tag`) is what [`tag`] stores for
/// `value`. Compared in the stored form, so a value cut to fit the tag still
/// matches the whole value it was made from (a 1024-byte request name of
/// bytes that encode to three); the LV name's hash of the whole name tells
/// such names apart.
pub fn tag_holds(stored: Option<&str>, value: &str) -> bool {
    stored == Some(tag_value(value).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_round_trip() {
        for v in ["pvc-1", "ns/name", "with space", "a#b", "ünï", "semi;colon"] {
            let t = encode_tag_value(v);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+.-/=!:&#".contains(&b)));
            assert_eq!(decode_tag_value(&t), v);
        }
        assert_eq!(tag(TAG_NAME, "a b"), "carve.dev/name=a#20b");
    }

    #[test]
    fn cut_values_still_match_the_whole_value() {
        let long = "~".repeat(1024);
        let stored = tag(TAG_NAME, &long);
        assert!(stored.len() < 1024, "fits LVM's tag limit");
        let value = stored.strip_prefix("carve.dev/name=");
        assert!(tag_holds(value, &long));
        assert!(!tag_holds(value, &"~".repeat(299)));
        assert!(tag_holds(Some("a#20b"), "a b"));
        assert!(!tag_holds(None, "a b"));
    }
}
