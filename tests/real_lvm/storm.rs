//! A bounded storm: 16 clients at once, for CARVE_STORM_SECONDS (120 by
//! default), each making, snapshotting, restoring, growing and deleting its
//! own volumes on the thin and the thick class at random (seeded; the seed is
//! printed, CARVE_STORM_SEED replays it). What must hold: every answer is a
//! success or a code the call may give under load (Aborted while a name is
//! in progress, ResourceExhausted when a class is full), no call takes longer
//! than STORM_BOUND, and at the end every LV carve owns is one the clients
//! hold (no leak, no duplicate); after they delete everything, nothing of
//! carve's is left and both classes' capacity is exactly what it was.

use std::sync::{Arc, Mutex};

use super::*;

/// The slowest answer any call may give while the storm runs (lvm commands
/// under this load take up to a few seconds in the UML guest; a thick
/// restore answers Aborted with progress after copy_wait_seconds).
const STORM_BOUND: Duration = Duration::from_secs(30);
const CLIENTS: usize = 16;

/// xorshift64*: enough randomness for a storm, and reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    calls: usize,
    by_code: HashMap<String, usize>,
    slowest: (Duration, String),
}

impl Tally {
    fn record(&mut self, what: &str, took: Duration, code: Code) {
        self.calls += 1;
        *self.by_code.entry(format!("{what} {code:?}")).or_default() += 1;
        if took > self.slowest.0 {
            self.slowest = (took, what.to_string());
        }
    }
}

struct Client {
    c: ControllerClient<Channel>,
    rng: Rng,
    me: usize,
    made: usize,
    volumes: Vec<(String, &'static str, i64)>,
    snapshots: Vec<(String, &'static str, i64)>,
    tally: Arc<Mutex<Tally>>,
}

impl Client {
    /// One call, timed and checked: Ok, or an allowed code.
    async fn call<T>(
        &mut self,
        what: &str,
        allowed: &[Code],
        f: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Option<T> {
        let t = Instant::now();
        let r = f.await;
        let took = t.elapsed();
        let code = r.as_ref().err().map_or(Code::Ok, |s| s.code());
        self.tally.lock().unwrap().record(what, took, code);
        assert!(took <= STORM_BOUND, "{what} took {took:?}");
        match r {
            Ok(v) => Some(v),
            Err(s) => {
                assert!(
                    allowed.contains(&s.code()),
                    "{what}: {:?} {}",
                    s.code(),
                    s.message()
                );
                None
            }
        }
    }

    async fn step(&mut self) {
        let class: &'static str = if self.rng.below(2) == 0 {
            "thin"
        } else {
            "thick"
        };
        match self.rng.below(10) {
            0..=2 if self.volumes.len() < 4 => {
                self.made += 1;
                let name = format!("storm-{}-{}", self.me, self.made);
                let size = (8 + 8 * self.rng.below(4) as i64) * MI;
                let mut c = self.c.clone();
                let req = create_req(&name, Some(class), size);
                if let Some(r) = self
                    .call(
                        "CreateVolume",
                        &[Code::ResourceExhausted],
                        c.create_volume(req),
                    )
                    .await
                {
                    self.volumes
                        .push((r.into_inner().volume.unwrap().volume_id, class, size));
                }
            }
            3 if !self.volumes.is_empty() && self.snapshots.len() < 2 => {
                let (vol, class, size) = self.volumes[self.rng.below(self.volumes.len())].clone();
                self.made += 1;
                let mut c = self.c.clone();
                let req = csi::CreateSnapshotRequest {
                    name: format!("storm-snap-{}-{}", self.me, self.made),
                    source_volume_id: vol,
                    ..Default::default()
                };
                if let Some(r) = self
                    .call(
                        "CreateSnapshot",
                        &[Code::ResourceExhausted],
                        c.create_snapshot(req),
                    )
                    .await
                {
                    self.snapshots.push((
                        r.into_inner().snapshot.unwrap().snapshot_id,
                        class,
                        size,
                    ));
                }
            }
            4 if !self.snapshots.is_empty() && self.volumes.len() < 4 => {
                let (snap, class, size) =
                    self.snapshots[self.rng.below(self.snapshots.len())].clone();
                self.made += 1;
                let mut req = create_req(
                    &format!("storm-restore-{}-{}", self.me, self.made),
                    Some(class),
                    size,
                );
                req.volume_content_source = Some(crate::crash::content(Some(&snap), None));
                // A thick restore copies: Aborted with progress until done.
                loop {
                    let mut c = self.c.clone();
                    let t = Instant::now();
                    let r = c.create_volume(req.clone()).await;
                    let code = r.as_ref().err().map_or(Code::Ok, |s| s.code());
                    self.tally.lock().unwrap().record(
                        "CreateVolume from snapshot",
                        t.elapsed(),
                        code,
                    );
                    assert!(t.elapsed() <= STORM_BOUND, "restore took {:?}", t.elapsed());
                    match r {
                        Ok(r) => {
                            self.volumes.push((
                                r.into_inner().volume.unwrap().volume_id,
                                class,
                                size,
                            ));
                            break;
                        }
                        Err(s) if s.code() == Code::Aborted => {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(s) if s.code() == Code::ResourceExhausted => break,
                        Err(s) => panic!("restore: {:?} {}", s.code(), s.message()),
                    }
                }
            }
            5 if !self.volumes.is_empty() => {
                let i = self.rng.below(self.volumes.len());
                let (vol, _, size) = self.volumes[i].clone();
                let mut c = self.c.clone();
                let req = csi::ControllerExpandVolumeRequest {
                    volume_id: vol,
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: size + 8 * MI,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                };
                if self
                    .call(
                        "ControllerExpandVolume",
                        &[Code::ResourceExhausted, Code::FailedPrecondition],
                        c.controller_expand_volume(req),
                    )
                    .await
                    .is_some()
                {
                    self.volumes[i].2 = size + 8 * MI;
                }
            }
            6 if !self.snapshots.is_empty() => {
                let (snap, _, _) = self.snapshots.remove(self.rng.below(self.snapshots.len()));
                self.delete_snapshot(snap).await;
            }
            7..=9 if !self.volumes.is_empty() => {
                let vol = self.volumes.remove(self.rng.below(self.volumes.len()));
                self.delete_volume(vol).await;
            }
            _ => {
                let mut c = self.c.clone();
                let req = csi::GetCapacityRequest {
                    parameters: HashMap::from([(
                        "carve.dev/device-class".to_string(),
                        class.to_string(),
                    )]),
                    ..Default::default()
                };
                self.call("GetCapacity", &[], c.get_capacity(req)).await;
            }
        }
    }

    /// Deletes a volume; one the CO may not delete yet is kept whole: its
    /// class and size, since a later snapshot's restore asks for that size.
    async fn delete_volume(&mut self, vol: (String, &'static str, i64)) {
        let mut c = self.c.clone();
        let req = csi::DeleteVolumeRequest {
            volume_id: vol.0.clone(),
            ..Default::default()
        };
        // A volume with a classic snapshot is its origin: FailedPrecondition
        // until the snapshot goes; the client keeps it then.
        if self
            .call(
                "DeleteVolume",
                &[Code::FailedPrecondition],
                c.delete_volume(req),
            )
            .await
            .is_none()
        {
            self.volumes.push(vol);
        }
    }

    async fn delete_snapshot(&mut self, id: String) {
        let mut c = self.c.clone();
        let req = csi::DeleteSnapshotRequest {
            snapshot_id: id,
            ..Default::default()
        };
        self.call("DeleteSnapshot", &[], c.delete_snapshot(req))
            .await;
    }
}

/// Every carve-owned LV in the test ground's two storm VGs, by VG/name.
fn carve_lvs() -> Vec<String> {
    let mut v: Vec<String> = ["carve-thick", "carve-thin"]
        .iter()
        .flat_map(|vg| lvs(vg).into_iter().map(move |l| (vg.to_string(), l)))
        .filter(|(_, l)| l.lv_tags.contains("carve.dev/owner"))
        .map(|(vg, l)| format!("{vg}/{}", l.lv_name))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_storm_of_mixed_calls_leaks_nothing_and_keeps_capacity_exact() {
    let secs: u64 = std::env::var("CARVE_STORM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("CARVE_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!(
        "storm seed: {seed} (replay with CARVE_STORM_SEED={seed}), {secs} s, {CLIENTS} clients"
    );
    assert!(
        carve_lvs().is_empty(),
        "the storm starts on VGs without carve LVs: {:?}",
        carve_lvs()
    );
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let before = (
        capacity(&mut c, "thick").await.available_capacity,
        capacity(&mut c, "thin").await.available_capacity,
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for me in 0..CLIENTS {
        let mut client = Client {
            c: c.clone(),
            rng: Rng(seed.wrapping_add((me as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
            me,
            made: 0,
            volumes: Vec::new(),
            snapshots: Vec::new(),
            tally: tally.clone(),
        };
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                client.step().await;
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // What the clients hold is exactly what LVM holds of carve's.
    let mut held: Vec<String> = clients
        .iter()
        .flat_map(|c| {
            c.volumes
                .iter()
                .map(|v| v.0.clone())
                .chain(c.snapshots.iter().map(|s| s.0.clone()))
        })
        .map(|id| lvm_path(&id))
        .collect();
    held.sort();
    let mut unique = held.clone();
    unique.dedup();
    assert_eq!(unique.len(), held.len(), "a volume held twice");
    assert_eq!(
        carve_lvs(),
        held,
        "LVM's carve LVs are the ones the clients hold"
    );
    // Everything deleted: snapshots first (classic ones pin their origin).
    for client in &mut clients {
        for (snap, _, _) in std::mem::take(&mut client.snapshots) {
            client.delete_snapshot(snap).await;
        }
        for vol in std::mem::take(&mut client.volumes) {
            client.delete_volume(vol).await;
        }
        assert!(client.volumes.is_empty(), "a volume could not be deleted");
    }
    assert!(carve_lvs().is_empty(), "left behind: {:?}", carve_lvs());
    let after = (
        capacity(&mut c, "thick").await.available_capacity,
        capacity(&mut c, "thin").await.available_capacity,
    );
    assert_eq!(after, before, "capacity (thick, thin) back to the byte");
    let t = tally.lock().unwrap();
    let mut codes: Vec<_> = t.by_code.iter().collect();
    codes.sort();
    println!(
        "storm: {} calls, slowest {:?} ({}); by call and code: {codes:?}",
        t.calls, t.slowest.0, t.slowest.1
    );
    foreign_intact();
}
