//! LUKS2 encryption of a volume: what a StorageClass may choose, decoded
//! once, and the form carve records the choice in (one LV tag), so the node
//! formats and opens an encrypted volume from LVM's tags alone and a
//! snapshot, restore or clone carries its source's choice with it.
//!
//! The passphrase is never here: it comes in NodeStageVolume's secrets and
//! goes to cryptsetup on stdin (`host::luks`).

use std::collections::HashMap;

use crate::lvm::LvInfo;
use crate::names;
use crate::params::BadParams;

/// `luks2` encrypts the volume; absent, empty or `none` leaves it plain.
pub const ENCRYPTION: &str = "carve.dev/encryption";
/// `cryptsetup --cipher`.
pub const CIPHER: &str = "carve.dev/luks-cipher";
/// `cryptsetup --key-size`, in bits.
pub const KEY_SIZE: &str = "carve.dev/luks-key-size";
/// `cryptsetup --pbkdf`: argon2id, argon2i or pbkdf2.
pub const PBKDF: &str = "carve.dev/luks-pbkdf";
/// `cryptsetup --pbkdf-memory`, in KiB (argon2 only).
pub const PBKDF_MEMORY: &str = "carve.dev/luks-pbkdf-memory";
/// `cryptsetup --iter-time`, in milliseconds.
pub const ITER_TIME: &str = "carve.dev/luks-iter-time";
/// `cryptsetup --pbkdf-force-iterations`: skips the PBKDF benchmark. Weakens
/// the passphrase against guessing; for tests and slow machines.
pub const FORCE_ITERATIONS: &str = "carve.dev/luks-pbkdf-force-iterations";

/// Every encryption key a StorageClass may set.
pub const KEYS: [&str; 7] = [
    ENCRYPTION,
    CIPHER,
    KEY_SIZE,
    PBKDF,
    PBKDF_MEMORY,
    ITER_TIME,
    FORCE_ITERATIONS,
];

/// The key of NodeStageVolume's secrets that holds the passphrase.
pub const SECRET_KEY: &str = "passphrase";

/// Defaults: cryptsetup's own, but for the argon2 memory cost, capped at
/// 256 MiB so a stage fits a node plugin's memory limit (cryptsetup's default
/// is up to 1 GiB).
pub const DEFAULT_CIPHER: &str = "aes-xts-plain64";
pub const DEFAULT_KEY_SIZE: u32 = 512;
pub const DEFAULT_PBKDF_MEMORY_KIB: u32 = 262_144;
pub const DEFAULT_ITER_TIME_MS: u32 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf {
    Argon2id,
    Argon2i,
    Pbkdf2,
}

impl Pbkdf {
    pub fn as_str(self) -> &'static str {
        match self {
            Pbkdf::Argon2id => "argon2id",
            Pbkdf::Argon2i => "argon2i",
            Pbkdf::Pbkdf2 => "pbkdf2",
        }
    }

    fn parse(s: &str) -> Option<Pbkdf> {
        [Pbkdf::Argon2id, Pbkdf::Argon2i, Pbkdf::Pbkdf2]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// How a new encrypted volume's LUKS2 header is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks {
    pub cipher: String,
    pub key_size: u32,
    pub pbkdf: Pbkdf,
    /// KiB; 0 for pbkdf2.
    pub pbkdf_memory_kib: u32,
    pub iter_time_ms: u32,
    /// 0: cryptsetup benchmarks the PBKDF for `iter_time_ms`.
    pub force_iterations: u32,
}

impl Default for Luks {
    fn default() -> Self {
        Luks {
            cipher: DEFAULT_CIPHER.into(),
            key_size: DEFAULT_KEY_SIZE,
            pbkdf: Pbkdf::Argon2id,
            pbkdf_memory_kib: DEFAULT_PBKDF_MEMORY_KIB,
            iter_time_ms: DEFAULT_ITER_TIME_MS,
            force_iterations: 0,
        }
    }
}

fn bad(key: &str, reason: impl Into<String>) -> BadParams {
    BadParams {
        key: key.into(),
        reason: reason.into(),
    }
}

fn number(
    map: &HashMap<String, String>,
    key: &str,
    lo: u32,
    hi: u32,
) -> Result<Option<u32>, BadParams> {
    let Some(v) = map.get(key) else {
        return Ok(None);
    };
    match v.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(bad(
            key,
            format!("{v:?} is not a whole number from {lo} to {hi}"),
        )),
    }
}

impl Luks {
    /// The encryption a StorageClass's parameters ask for: `None` for a plain
    /// volume. Options without `carve.dev/encryption: luks2` are refused, so
    /// a class that meant to encrypt never silently gives plain volumes.
    pub fn from_params(map: &HashMap<String, String>) -> Result<Option<Luks>, BadParams> {
        let on = match map.get(ENCRYPTION).map(String::as_str) {
            None | Some("") | Some("none") => false,
            Some("luks2") => true,
            Some(v) => {
                return Err(bad(
                    ENCRYPTION,
                    format!("{v:?}: carve knows luks2 and none"),
                ))
            }
        };
        let mut options: Vec<&str> = KEYS[1..]
            .iter()
            .copied()
            .filter(|k| map.contains_key(*k))
            .collect();
        options.sort();
        if !on {
            return match options.first() {
                Some(k) => Err(bad(
                    k,
                    format!("a LUKS option, but {ENCRYPTION} is not luks2"),
                )),
                None => Ok(None),
            };
        }
        let mut luks = Luks::default();
        if let Some(c) = map.get(CIPHER) {
            // cryptsetup's cipher spec: cipher-chainmode-ivmode[:ivopts].
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-:_".contains(&b));
            if !ok {
                return Err(bad(
                    CIPHER,
                    format!("{c:?} is not a cipher specification (like {DEFAULT_CIPHER})"),
                ));
            }
            luks.cipher = c.clone();
        }
        if let Some(n) = number(map, KEY_SIZE, 128, 1024)? {
            if n % 8 != 0 {
                return Err(bad(
                    KEY_SIZE,
                    format!("{n} bits is not a whole number of bytes"),
                ));
            }
            luks.key_size = n;
        }
        // XTS splits its key in two AES keys: only 256 and 512 bits exist.
        // Caught here, a claim fails at provisioning (and carve-agent flags
        // the StorageClass), not at its first stage.
        if luks.cipher.contains("-xts-") && ![256, 512].contains(&luks.key_size) {
            return Err(bad(
                KEY_SIZE,
                format!(
                    "{} bits: an XTS cipher ({}) takes 256 or 512",
                    luks.key_size, luks.cipher
                ),
            ));
        }
        if let Some(p) = map.get(PBKDF) {
            luks.pbkdf = Pbkdf::parse(p).ok_or_else(|| {
                bad(
                    PBKDF,
                    format!("{p:?}: carve knows argon2id, argon2i and pbkdf2"),
                )
            })?;
        }
        if let Some(m) = number(map, PBKDF_MEMORY, 32, 4_194_304)? {
            if luks.pbkdf == Pbkdf::Pbkdf2 {
                return Err(bad(
                    PBKDF_MEMORY,
                    "pbkdf2 has no memory cost; it applies to argon2id and argon2i",
                ));
            }
            luks.pbkdf_memory_kib = m;
        }
        if luks.pbkdf == Pbkdf::Pbkdf2 {
            luks.pbkdf_memory_kib = 0;
        }
        if let Some(t) = number(map, ITER_TIME, 1, 60_000)? {
            luks.iter_time_ms = t;
        }
        if let Some(i) = number(map, FORCE_ITERATIONS, 4, u32::MAX)? {
            if luks.pbkdf == Pbkdf::Pbkdf2 && i < 1000 {
                return Err(bad(
                    FORCE_ITERATIONS,
                    "pbkdf2 needs at least 1000 iterations",
                ));
            }
            luks.force_iterations = i;
        }
        Ok(Some(luks))
    }

    /// The LV tag's value: `luks2:CIPHER:KEYBITS:PBKDF:MEMKIB:ITERMS:FORCED`.
    pub fn tag_value(&self) -> String {
        format!(
            "luks2:{}:{}:{}:{}:{}:{}",
            self.cipher,
            self.key_size,
            self.pbkdf.as_str(),
            self.pbkdf_memory_kib,
            self.iter_time_ms,
            self.force_iterations
        )
    }

    /// Reads [`Luks::tag_value`] back; `None` when it is not one.
    pub fn from_tag_value(v: &str) -> Option<Luks> {
        let parts: Vec<&str> = v.split(':').collect();
        // The cipher may hold ':' (an IV option): it is everything between
        // the scheme and the last five fields.
        if parts.len() < 7 || parts[0] != "luks2" {
            return None;
        }
        let n = parts.len();
        Some(Luks {
            cipher: parts[1..n - 5].join(":"),
            key_size: parts[n - 5].parse().ok()?,
            pbkdf: Pbkdf::parse(parts[n - 4])?,
            pbkdf_memory_kib: parts[n - 3].parse().ok()?,
            iter_time_ms: parts[n - 2].parse().ok()?,
            force_iterations: parts[n - 1].parse().ok()?,
        })
    }

    /// `cryptsetup luksFormat` for `device`, reading the passphrase from
    /// stdin: argv never holds the key.
    pub fn format_args(&self, device: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--cipher",
            &self.cipher,
            "--key-size",
            &self.key_size.to_string(),
            "--pbkdf",
            self.pbkdf.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.force_iterations > 0 {
            a.extend([
                "--pbkdf-force-iterations".into(),
                self.force_iterations.to_string(),
            ]);
        } else {
            a.extend(["--iter-time".into(), self.iter_time_ms.to_string()]);
        }
        if self.pbkdf != Pbkdf::Pbkdf2 {
            a.extend(["--pbkdf-memory".into(), self.pbkdf_memory_kib.to_string()]);
        }
        a.extend(["--key-file".into(), "-".into(), device.into()]);
        a
    }
}

/// A volume's (or snapshot's) recorded encryption: `Ok(None)` when plain;
/// an error names a tag carve cannot read (never taken for plain).
pub fn of(lv: &LvInfo) -> Result<Option<Luks>, String> {
    match lv.tag(names::TAG_ENCRYPTION) {
        None => Ok(None),
        Some(raw) => {
            let v = names::decode_tag_value(raw);
            Luks::from_tag_value(&v).map(Some).ok_or_else(|| {
                format!(
                    "LV {}/{} has an encryption tag carve cannot read: {v:?}",
                    lv.vg, lv.name
                )
            })
        }
    }
}

/// The device-mapper name of an encrypted volume's open mapping:
/// `carve-luks-VG-LV` with `-` in the VG and LV names doubled (as LVM does),
/// so no two volumes share one.
pub fn mapper_name(vg: &str, lv: &str) -> String {
    format!(
        "carve-luks-{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_unless_luks2_is_asked() {
        assert_eq!(Luks::from_params(&m(&[])).unwrap(), None);
        assert_eq!(
            Luks::from_params(&m(&[(ENCRYPTION, "none")])).unwrap(),
            None
        );
        assert_eq!(
            Luks::from_params(&m(&[(ENCRYPTION, "luks2")])).unwrap(),
            Some(Luks::default())
        );
        let e = Luks::from_params(&m(&[(ENCRYPTION, "luks1")])).unwrap_err();
        assert_eq!(e.key, ENCRYPTION);
        let e = Luks::from_params(&m(&[(CIPHER, "aes-xts-plain64")])).unwrap_err();
        assert_eq!(e.key, CIPHER, "an option without luks2 is refused");
    }

    #[test]
    fn options_are_checked() {
        let l = Luks::from_params(&m(&[
            (ENCRYPTION, "luks2"),
            (CIPHER, "serpent-xts-plain64"),
            (KEY_SIZE, "256"),
            (PBKDF, "pbkdf2"),
            (FORCE_ITERATIONS, "1000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(l.cipher, "serpent-xts-plain64");
        assert_eq!(
            (l.key_size, l.pbkdf, l.pbkdf_memory_kib),
            (256, Pbkdf::Pbkdf2, 0)
        );
        let args = l.format_args("/dev/vg/lv");
        assert!(args
            .windows(2)
            .any(|w| w == ["--pbkdf-force-iterations", "1000"]));
        assert!(!args.iter().any(|a| a == "--pbkdf-memory"));
        assert_eq!(&args[args.len() - 3..], ["--key-file", "-", "/dev/vg/lv"]);
        for (k, v) in [
            (KEY_SIZE, "1024"),
            (KEY_SIZE, "250"),
            (KEY_SIZE, "x"),
            (PBKDF, "scrypt"),
            (CIPHER, "aes xts"),
            (ITER_TIME, "0"),
        ] {
            let e = Luks::from_params(&m(&[(ENCRYPTION, "luks2"), (k, v)])).unwrap_err();
            assert_eq!(e.key, k, "{e}");
        }
        let e = Luks::from_params(&m(&[
            (ENCRYPTION, "luks2"),
            (PBKDF, "pbkdf2"),
            (PBKDF_MEMORY, "65536"),
        ]))
        .unwrap_err();
        assert_eq!(e.key, PBKDF_MEMORY);
        let d = Luks::default().format_args("/dev/x");
        assert!(d.windows(2).any(|w| w == ["--pbkdf-memory", "262144"]));
        assert!(d.windows(2).any(|w| w == ["--iter-time", "2000"]));
    }

    #[test]
    fn mapper_names_do_not_collide() {
        assert_ne!(mapper_name("a-b", "c"), mapper_name("a", "b-c"));
        assert_eq!(
            mapper_name("carve-thick", "cv-1"),
            "carve-luks-carve--thick-cv--1"
        );
    }

    proptest! {
        #[test]
        fn tag_value_round_trips(
            cipher in "[a-z0-9][a-z0-9:_-]{0,40}",
            key_size in 16u32..128,
            pbkdf in 0usize..3,
            mem in 0u32..5_000_000,
            iter in 1u32..60_000,
            forced in 0u32..100_000,
        ) {
            let l = Luks {
                cipher,
                key_size: key_size * 8,
                pbkdf: [Pbkdf::Argon2id, Pbkdf::Argon2i, Pbkdf::Pbkdf2][pbkdf],
                pbkdf_memory_kib: mem,
                iter_time_ms: iter,
                force_iterations: forced,
            };
            prop_assert_eq!(Luks::from_tag_value(&l.tag_value()), Some(l));
        }

        #[test]
        fn tag_reader_never_panics(s in ".{0,80}") {
            let _ = Luks::from_tag_value(&s);
        }
    }
}
