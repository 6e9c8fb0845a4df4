//! carve's benchmark client (run by bench/run.sh inside the UML guest). Every
//! number is a ratio or latency measured in one guest boot: carve's RPCs are
//! interleaved with the bare lvm commands they wrap, on the same VG, so drift
//! in the guest's speed hits both sides alike.
//!   bench SOCKET CARVE_PID ROUNDS CAPACITY_CALLS CONFIG
//!   bench scale LVS CONFIG ROUNDS CAPACITY_CALLS   (one row of the scale table)
//!   bench scale-header

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use carve_csi::csi::controller_client::ControllerClient;
use carve_csi::csi::{self};
use tonic::transport::Channel;

mod parallel;
mod scale;

const VG: &str = "carve-thick";
const SIZE: u64 = 8 << 20;

/// The PVs of every VG on the guest, as `--devices` takes them.
fn pvs_by_vg() -> &'static HashMap<String, String> {
    static PVS: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
    PVS.get_or_init(|| {
        let out = Command::new("lvm")
            .args(["pvs", "--noheadings", "-o", "vg_name,pv_name"])
            .env("DM_DISABLE_UDEV", "1")
            .output()
            .expect("run lvm pvs");
        let mut m: HashMap<String, String> = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.split_whitespace();
            if let (Some(vg), Some(pv)) = (f.next(), f.next()) {
                let e = m.entry(vg.to_string()).or_default();
                if !e.is_empty() {
                    e.push(',');
                }
                e.push_str(pv);
            }
        }
        m
    })
}

/// Runs a bare lvm command, timed. It gets the `--devices` carve would pass
/// (the PVs of the VG it acts on: lvm/devices.rs), so a ratio measures how
/// carve runs the command, not which devices it reads.
fn lvm(args: &[&str]) -> Duration {
    let mut argv: Vec<&str> = args.to_vec();
    let devices = args
        .iter()
        .find_map(|a| pvs_by_vg().get(a.split('/').next().unwrap_or_default()));
    if let Some(d) = devices {
        argv.splice(1..1, ["--devices", d.as_str()]);
    }
    let t = Instant::now();
    let out = Command::new("lvm")
        .args(&argv)
        .env("DM_DISABLE_UDEV", "1")
        .env("LC_ALL", "C")
        .output()
        .expect("run lvm");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "lvm {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `run` with `input` on the program's stdin (a passphrase, as carve gives it).
fn run_fed(program: &str, args: &[&str], input: &[u8]) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `<vg>/<lv>` of a carve ID (`v1:<node>:<vg>/<lv>`): how lvm and /dev name it.
fn lvm_path(id: &str) -> &str {
    id.rsplit(':').next().unwrap()
}

/// A field of /proc/meminfo, in KiB.
fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Samples carve's RSS and the block devices' page cache (meminfo's Buffers:
/// the loop images live on tmpfs, whose pages are Cached, so Buffers is what
/// buffered IO on the LVs adds) until stopped; returns their peaks in KiB.
struct MemorySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl MemorySampler {
    fn start(pid: &str) -> MemorySampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, pid) = (stop.clone(), pid.to_string());
        let thread = std::thread::spawn(move || {
            let (mut rss, mut buffers) = (0, 0);
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                rss = rss.max(rss_kib(&pid));
                buffers = buffers.max(meminfo_kib("Buffers"));
                std::thread::sleep(Duration::from_millis(20));
            }
            (rss, buffers)
        });
        MemorySampler { stop, thread }
    }

    fn peaks(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn rss_kib(pid: &str) -> u64 {
    vmrss_kib(pid).unwrap()
}

/// VmRSS of process `pid` in KiB, if it is there to read.
fn vmrss_kib(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The summed RSS of carve's `lvm shell` children, in KiB: memory carve's
/// way of running lvm costs besides carve itself.
fn shells_rss_kib(pid: &str) -> u64 {
    let mut kib = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let child = e.file_name().to_string_lossy().into_owned();
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        if ppid.as_deref() == Some(pid) && cmdline == b"lvm\0" {
            kib += vmrss_kib(&child).unwrap_or(0);
        }
    }
    kib
}

/// What every section measures with: the client, the socket (for more
/// clients), a mount capability, and the round counts.
struct Bench {
    c: ControllerClient<Channel>,
    /// carve's process ID.
    pid: String,
    socket: String,
    cap: csi::VolumeCapability,
    rounds: usize,
    cap_calls: usize,
    /// carve's config file.
    config: std::path::PathBuf,
}

impl Bench {
    /// CreateVolume of `size` bytes, asserting success.
    async fn create(
        &mut self,
        name: &str,
        size: i64,
        parameters: HashMap<String, String>,
    ) -> csi::Volume {
        self.c
            .create_volume(csi::CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: size,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![self.cap.clone()],
                parameters,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
    }

    async fn delete(&mut self, id: String) {
        self.c
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn channel(&self) -> Channel {
        carve_csi::client::connect(&self.socket).await.unwrap()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a[1].as_str() {
        "scale-header" => return scale::header(),
        "scale" => {
            let n = |i: usize| a[i].parse::<usize>().unwrap();
            return scale::row(n(2), &a[3], n(4), n(5)).await;
        }
        _ => {}
    }
    let pid = &a[2];
    let c = ControllerClient::new(carve_csi::client::connect(&a[1]).await.unwrap());
    let idle_rss = rss_kib(pid);
    let mut b = Bench {
        c,
        pid: pid.clone(),
        socket: a[1].clone(),
        cap: carve_csi::client::mount_capability("ext4", &[]),
        rounds: a[3].parse().unwrap(),
        cap_calls: a[4].parse().unwrap(),
        config: a[5].clone().into(),
    };
    // BENCH_PARTS=p2 runs P2 alone, BENCH_PARTS=luks the encrypted stage
    // alone (quick loops while working on them).
    if a.get(6).is_some_and(|p| p == "p2") {
        parallel::p2(&mut b, "thick").await;
        parallel::p2(&mut b, "thin").await;
        return;
    }
    if a.get(6).is_some_and(|p| p == "luks") {
        node_stage_encrypted(&mut b).await;
        return;
    }
    create_and_delete(&mut b).await;
    parallel::p2(&mut b, "thick").await;
    parallel::p2(&mut b, "thin").await;
    node_stage(&mut b).await;
    node_stage_encrypted(&mut b).await;
    thin_snapshots(&mut b).await;
    provisioner_style_restore(&mut b).await;
    capacity(&mut b, std::path::Path::new(&a[5])).await;
    println!(
        "idle RSS      {:.1} MiB at start, {:.1} MiB after the run (target <= 15 MiB); its lvm shells {:.1} MiB",
        idle_rss as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0,
        shells_rss_kib(pid) as f64 / 1024.0
    );
    metrics_overhead(&mut b, &a[5]).await;
}

/// One `GET /metrics`: how long it took and how many bytes came back.
fn scrape(port: u16) -> (Duration, usize) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    conn.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    (t.elapsed(), body.len())
}

/// The same carve with and without `--metrics-address`, in one boot: the
/// metrics one is scraped every second while it serves (Prometheus scrapes
/// every 15-60 s), and CreateVolume and GetCapacity alternate between the
/// two round by round. The second carve starts here, after the other
/// sections, so its own LVM reports never run beside them.
async fn metrics_overhead(b: &mut Bench, config: &str) {
    const PORT: u16 = 19900;
    let socket = "/tmp/bench/csi-metrics.sock";
    let mut second = Command::new("target/release/carve")
        .args([
            "serve",
            "--node-id",
            "bench",
            "--log",
            "warn",
            "--config",
            config,
        ])
        .arg(format!("--endpoint=unix://{socket}"))
        .arg(format!("--metrics-address=127.0.0.1:{PORT}"))
        .stderr(std::fs::File::create("/tmp/bench/carve-metrics.log").unwrap())
        .spawn()
        .expect("start the carve with metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(socket).exists() {
        assert!(
            Instant::now() < deadline,
            "the carve with metrics never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = second.id().to_string();
    let mut on = ControllerClient::new(carve_csi::client::connect(socket).await.unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            let mut bytes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (t, n) = scrape(PORT);
                took.push(t);
                bytes = n;
                std::thread::sleep(Duration::from_secs(1));
            }
            (took, bytes)
        })
    };
    let (mut c_off, mut c_on) = (Vec::new(), Vec::new());
    for i in 0..b.rounds {
        let one = |c: &mut ControllerClient<Channel>, name: String| {
            let req = csi::CreateVolumeRequest {
                name,
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: SIZE as i64,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![b.cap.clone()],
                ..Default::default()
            };
            let mut c = c.clone();
            async move {
                let t = Instant::now();
                let v = c
                    .create_volume(req)
                    .await
                    .unwrap()
                    .into_inner()
                    .volume
                    .unwrap();
                let took = t.elapsed();
                c.delete_volume(csi::DeleteVolumeRequest {
                    volume_id: v.volume_id,
                    ..Default::default()
                })
                .await
                .unwrap();
                took
            }
        };
        // Alternate which goes first, so neither always meets a warm cache.
        if i % 2 == 0 {
            c_off.push(one(&mut b.c, format!("moff-{i}")).await);
            c_on.push(one(&mut on, format!("mon-{i}")).await);
        } else {
            c_on.push(one(&mut on, format!("mon-{i}")).await);
            c_off.push(one(&mut b.c, format!("moff-{i}")).await);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let req = csi::GetCapacityRequest {
        parameters: HashMap::from([("carve.dev/device-class".to_string(), "bench".to_string())]),
        ..Default::default()
    };
    let (mut g_off, mut g_on) = (Vec::new(), Vec::new());
    for _ in 0..b.cap_calls / 100 {
        for (c, lat) in [(&mut b.c, &mut g_off), (&mut on, &mut g_on)] {
            for _ in 0..100 {
                let t = Instant::now();
                c.get_capacity(req.clone()).await.unwrap();
                lat.push(t.elapsed());
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut scrapes, bytes) = scraper.join().unwrap();
    let (off50, on50) = (pct(&mut c_off, 0.5), pct(&mut c_on, 0.5));
    println!(
        "metrics on/off: CreateVolume p50 {:8.1} / {:8.1} ms   ratio {:.3}  (goal <= 1.02; {} rounds each, scraped every 1 s)",
        ms(on50),
        ms(off50),
        on50.as_secs_f64() / off50.as_secs_f64(),
        b.rounds
    );
    let (goff50, gon50, goff99, gon99) = (
        pct(&mut g_off, 0.5),
        pct(&mut g_on, 0.5),
        pct(&mut g_off, 0.99),
        pct(&mut g_on, 0.99),
    );
    println!(
        "metrics on/off: GetCapacity p50 {:8.3} / {:8.3} ms   ratio {:.3}; p99 {:8.3} / {:8.3} ms   ratio {:.3}  (goal <= 1.02)",
        ms(gon50),
        ms(goff50),
        gon50.as_secs_f64() / goff50.as_secs_f64(),
        ms(gon99),
        ms(goff99),
        gon99.as_secs_f64() / goff99.as_secs_f64()
    );
    let n = scrapes.len();
    println!(
        "metrics scrape p50 {:8.1} ms   p99 {:8.1} ms over {n} scrapes, {bytes} bytes each (1,000+ carve LVs; per-volume series capped at metrics_volume_limit)",
        ms(pct(&mut scrapes, 0.5)),
        ms(pct(&mut scrapes, 0.99)),
    );
    println!(
        "idle RSS with metrics on {:.1} MiB, off {:.1} MiB, after the run (target <= 15 MiB)",
        rss_kib(&pid) as f64 / 1024.0,
        rss_kib(&b.pid) as f64 / 1024.0
    );
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = second.wait();
}

/// CreateVolume and DeleteVolume vs the bare lvcreate and lvremove they wrap,
/// interleaved round by round.
async fn create_and_delete(b: &mut Bench) {
    let (mut bare_c, mut carve_c, mut bare_d, mut carve_d) = (vec![], vec![], vec![], vec![]);
    let size = format!("{SIZE}b");
    for i in 0..b.rounds {
        // The same argv carve builds for a thick class (zeroing, signature wipe).
        let name = format!("bare-{i}");
        bare_c.push(lvm(&[
            "lvcreate",
            "--yes",
            "--quiet",
            "--name",
            &name,
            "--size",
            &size,
            "--zero",
            "y",
            "--wipesignatures",
            "y",
            "--addtag",
            "bench",
            VG,
        ]));
        let t = Instant::now();
        let v = b
            .create(&format!("bench-{i}"), SIZE as i64, HashMap::new())
            .await;
        carve_c.push(t.elapsed());
        bare_d.push(lvm(&[
            "lvremove",
            "--yes",
            "--quiet",
            &format!("{VG}/{name}"),
        ]));
        let t = Instant::now();
        b.delete(v.volume_id).await;
        carve_d.push(t.elapsed());
    }
    let (bc, cc, bd, cd) = (
        pct(&mut bare_c, 0.5),
        pct(&mut carve_c, 0.5),
        pct(&mut bare_d, 0.5),
        pct(&mut carve_d, 0.5),
    );
    println!(
        "CreateVolume  p50 {:8.1} ms   bare lvcreate p50 {:8.1} ms   ratio {:.3}  (target <= 0.80 through lvm shells)",
        ms(cc),
        ms(bc),
        cc.as_secs_f64() / bc.as_secs_f64()
    );
    println!(
        "DeleteVolume  p50 {:8.1} ms   bare lvremove p50 {:8.1} ms   ratio {:.3}",
        ms(cd),
        ms(bd),
        cd.as_secs_f64() / bd.as_secs_f64()
    );
}

/// What NodeStage of an ext4 volume does, by hand: the same mkfs flags
/// carve uses, then a mount.
fn bare_mkfs_and_mount(dev: &str, dir: &str) {
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            dev,
        ],
    );
    run("mount", &["-t", "ext4", "-o", "defaults", dev, dir]);
}

/// NodeStage vs a bare mkfs + mount of the same LV: each round formats and
/// mounts the LV by hand, unmounts and wipes it, then lets carve stage it
/// (blkid probe, the same mkfs, mount, mount-table check).
async fn node_stage(b: &mut Bench) {
    let mut node = carve_csi::csi::node_client::NodeClient::new(b.channel().await);
    let (mut bare_s, mut carve_s) = (vec![], vec![]);
    let stage_rounds = b.rounds.min(10);
    for i in 0..stage_rounds {
        let v = b
            .create(&format!("stage-{i}"), 256 << 20, HashMap::new())
            .await;
        let dev = format!("/dev/{}", lvm_path(&v.volume_id));
        let dir = format!("/tmp/bench/stage-{i}");
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        bare_mkfs_and_mount(&dev, &dir);
        bare_s.push(t.elapsed());
        run("umount", &[&dir]);
        run("wipefs", &["-q", "-a", &dev]);
        let t = Instant::now();
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: dir.clone(),
            volume_capability: Some(b.cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        carve_s.push(t.elapsed());
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: dir,
        })
        .await
        .unwrap();
        b.delete(v.volume_id).await;
    }
    let (bs, cs) = (pct(&mut bare_s, 0.5), pct(&mut carve_s, 0.5));
    println!("NodeStage     p50 {:8.1} ms   bare mkfs.ext4+mount p50 {:8.1} ms   ratio {:.3}  (target <= 1.10; {stage_rounds} rounds, 256 MiB ext4)", ms(cs), ms(bs), cs.as_secs_f64() / bs.as_secs_f64());
}

/// NodeStage of a LUKS2 volume vs a bare `cryptsetup luksFormat` + `open` +
/// mkfs + mount of the same LV with the same settings, and vs NodeStage of
/// a plain volume of the same size, interleaved round by round. The PBKDF is
/// pbkdf2 with forced iterations in all three, so the ratio measures what
/// carve adds, not the key derivation (which a StorageClass chooses).
async fn node_stage_encrypted(b: &mut Bench) {
    const KEY: &[u8] = b"bench passphrase";
    let mut node = carve_csi::csi::node_client::NodeClient::new(b.channel().await);
    let (mut bare_s, mut enc_s, mut plain_s) = (vec![], vec![], vec![]);
    let rounds = b.rounds.min(10);
    let luks_params = HashMap::from([
        ("carve.dev/encryption".to_string(), "luks2".to_string()),
        ("carve.dev/luks-pbkdf".to_string(), "pbkdf2".to_string()),
        (
            "carve.dev/luks-pbkdf-force-iterations".to_string(),
            "1000".to_string(),
        ),
    ]);
    let secrets = HashMap::from([(
        "passphrase".to_string(),
        String::from_utf8(KEY.to_vec()).unwrap(),
    )]);
    for i in 0..rounds {
        let v = b
            .create(&format!("luks-stage-{i}"), 256 << 20, luks_params.clone())
            .await;
        let p = b
            .create(&format!("plain-stage-{i}"), 256 << 20, HashMap::new())
            .await;
        let dev = format!("/dev/{}", lvm_path(&v.volume_id));
        let dir = format!("/tmp/bench/luks-stage-{i}");
        let plain_dir = format!("/tmp/bench/plain-stage-{i}");
        std::fs::create_dir_all(&dir).unwrap();
        let mapper = format!("bench-luks-{i}");
        let mapped = format!("/dev/mapper/{mapper}");
        let t = Instant::now();
        run_fed(
            "cryptsetup",
            &[
                "luksFormat",
                "--batch-mode",
                "--type",
                "luks2",
                "--cipher",
                "aes-xts-plain64",
                "--key-size",
                "512",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                "-",
                &dev,
            ],
            KEY,
        );
        run_fed(
            "cryptsetup",
            &[
                "open",
                "--type",
                "luks2",
                "--disable-keyring",
                "--key-file",
                "-",
                &dev,
                &mapper,
            ],
            KEY,
        );
        bare_mkfs_and_mount(&mapped, &dir);
        bare_s.push(t.elapsed());
        run("umount", &[&dir]);
        run("cryptsetup", &["close", &mapper]);
        run("wipefs", &["-q", "-a", &dev]);
        let t = Instant::now();
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: dir.clone(),
            volume_capability: Some(b.cap.clone()),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        enc_s.push(t.elapsed());
        let t = Instant::now();
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: p.volume_id.clone(),
            staging_target_path: plain_dir.clone(),
            volume_capability: Some(b.cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        plain_s.push(t.elapsed());
        for (id, d) in [(&v.volume_id, dir), (&p.volume_id, plain_dir)] {
            node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: d,
            })
            .await
            .unwrap();
        }
        b.delete(v.volume_id).await;
        b.delete(p.volume_id).await;
    }
    let (bs, es, ps) = (
        pct(&mut bare_s, 0.5),
        pct(&mut enc_s, 0.5),
        pct(&mut plain_s, 0.5),
    );
    println!("NodeStage LUKS2 p50 {:8.1} ms   bare luksFormat+open+mkfs.ext4+mount p50 {:8.1} ms   ratio {:.3}  (target <= 1.05; {rounds} rounds, 256 MiB ext4, pbkdf2 1000 iterations)", ms(es), ms(bs), es.as_secs_f64() / bs.as_secs_f64());
    println!("NodeStage LUKS2 p50 {:8.1} ms   plain NodeStage p50 {:8.1} ms   ratio {:.3}  (what encryption costs a stage)", ms(es), ms(ps), es.as_secs_f64() / ps.as_secs_f64());
}

/// Thin CreateSnapshot vs bare `lvcreate -s` of the same origin, interleaved.
async fn thin_snapshots(b: &mut Bench) {
    let thin_params = HashMap::from([("carve.dev/device-class".to_string(), "thin".to_string())]);
    let origin = b.create("snap-origin", 64 << 20, thin_params).await;
    let (mut bare_snap, mut carve_snap) = (vec![], vec![]);
    let snap_rounds = b.rounds.min(15);
    for i in 0..snap_rounds {
        bare_snap.push(lvm(&[
            "lvcreate",
            "--yes",
            "--quiet",
            "--snapshot",
            "--name",
            &format!("bare-snap-{i}"),
            lvm_path(&origin.volume_id),
        ]));
        let t = Instant::now();
        b.c.create_snapshot(csi::CreateSnapshotRequest {
            name: format!("bench-snap-{i}"),
            source_volume_id: origin.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        carve_snap.push(t.elapsed());
    }
    let (bsn, csn) = (pct(&mut bare_snap, 0.5), pct(&mut carve_snap, 0.5));
    println!("CreateSnapshot (thin) p50 {:8.1} ms   bare lvcreate -s p50 {:8.1} ms   ratio {:.3}  (target <= 1.10)", ms(csn), ms(bsn), csn.as_secs_f64() / bsn.as_secs_f64());
}

/// dd of `bytes` from `from` to `to`, 4 MiB blocks, flushed.
fn dd(from: &str, to: &str, bytes: i64) {
    run(
        "dd",
        &[
            &format!("if={from}"),
            &format!("of={to}"),
            "bs=4M",
            &format!("count={}", bytes >> 22),
            "conv=fsync",
            "status=none",
        ],
    );
}

/// A thick restore of 1 GiB driven the way external-provisioner drives it:
/// CreateVolume with a 10 s deadline, called again at once on Aborted or
/// DeadlineExceeded, until it succeeds. Compared with one dd of the same size
/// from the same snapshot device into a plain LV.
async fn provisioner_style_restore(b: &mut Bench) {
    let copy_size: i64 = 1 << 30;
    let src = b.create("copy-src", copy_size, HashMap::new()).await;
    // Data in every block, so neither side reads holes of the loop file.
    dd(
        "/dev/urandom",
        &format!("/dev/{}", lvm_path(&src.volume_id)),
        copy_size,
    );
    let snap =
        b.c.create_snapshot(csi::CreateSnapshotRequest {
            name: "copy-snap".into(),
            source_volume_id: src.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let dd_target = format!("{VG}/bare-copy");
    lvm(&[
        "lvcreate",
        "--yes",
        "--quiet",
        "--name",
        "bare-copy",
        "--size",
        &format!("{copy_size}b"),
        VG,
    ]);
    let t = Instant::now();
    dd(
        &format!("/dev/{}", lvm_path(&snap.snapshot_id)),
        &format!("/dev/{dd_target}"),
        copy_size,
    );
    let dd_time = t.elapsed();
    let req = csi::CreateVolumeRequest {
        name: "copy-restore".into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: copy_size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![b.cap.clone()],
        volume_content_source: Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: snap.snapshot_id.clone(),
                },
            )),
        }),
        ..Default::default()
    };
    // dd filled the page cache: start the copy's measurement from none.
    run("sync", &[]);
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let buffers_before = meminfo_kib("Buffers");
    let sampler = MemorySampler::start(&b.pid);
    let t = Instant::now();
    let mut calls = 0;
    loop {
        calls += 1;
        let mut r = tonic::Request::new(req.clone());
        r.set_timeout(Duration::from_secs(10));
        match b.c.create_volume(r).await {
            Ok(_) => break,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Aborted | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) => {}
            Err(s) => panic!("restore: {s:?}"),
        }
    }
    let restore_time = t.elapsed();
    let (rss_peak, buffers_peak) = sampler.peaks();
    let log = std::fs::read_to_string("/tmp/bench/carve.log").unwrap_or_default();
    let copies = log.matches("block copy started").count();
    println!(
        "thick restore 1 GiB, provisioner-style {:8.2} s ({calls} call(s), {copies} copy)   dd {:8.2} s   ratio {:.3}  (target <= 1.25)",
        restore_time.as_secs_f64(),
        dd_time.as_secs_f64(),
        restore_time.as_secs_f64() / dd_time.as_secs_f64(),
    );
    let cache = buffers_peak.saturating_sub(buffers_before);
    println!(
        "thick restore 1 GiB memory: carve RSS peak {:.1} MiB + block-device page cache peak +{:.1} MiB = {:.1} MiB  (target <= 64 MiB)",
        rss_peak as f64 / 1024.0,
        cache as f64 / 1024.0,
        (rss_peak + cache) as f64 / 1024.0,
    );
    // Room for the rest of the run: the copies go.
    lvm(&["lvremove", "--yes", "--quiet", &dd_target]);
}

/// GetCapacity over the socket with many LVs, against the cheapest RPC carve
/// has (the gRPC floor in this guest) and against its handler called in
/// process (carve's own cost).
async fn capacity(b: &mut Bench, config: &std::path::Path) {
    // Let the refresh that the last mutations triggered finish first: the guest
    // has one CPU, and a report of 1,000 LVs would otherwise sit in the window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let params = HashMap::from([("carve.dev/device-class".to_string(), "bench".to_string())]);
    let req = csi::GetCapacityRequest {
        parameters: params,
        ..Default::default()
    };
    let mut avail = 0;
    let mut lat = Vec::with_capacity(b.cap_calls);
    for _ in 0..b.cap_calls {
        let t = Instant::now();
        avail =
            b.c.get_capacity(req.clone())
                .await
                .unwrap()
                .into_inner()
                .available_capacity;
        lat.push(t.elapsed());
    }
    let mut id = carve_csi::csi::identity_client::IdentityClient::new(b.channel().await);
    // The floor: the cheapest RPC carve has, over the same socket in the same
    // guest, so GetCapacity's own cost can be told from gRPC and UML syscalls.
    let mut floor = Vec::with_capacity(b.cap_calls);
    for _ in 0..b.cap_calls {
        let t = Instant::now();
        id.get_plugin_info(csi::GetPluginInfoRequest {})
            .await
            .unwrap();
        floor.push(t.elapsed());
    }
    let (f50, f99) = (pct(&mut floor, 0.5), pct(&mut floor, 0.99));
    let lvs =
        b.c.list_volumes(csi::ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries
            .len();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let cap_calls = b.cap_calls;
    println!("GetCapacity   p50 {:8.3} ms   p99 {:8.3} ms over {cap_calls} calls with {lvs} carve LVs listed (target p99 < 1 ms); available {avail}", ms(p50), ms(p99));
    let mut inproc = in_process_capacity(config, &req, cap_calls).await;
    let (i50, i99) = (pct(&mut inproc, 0.5), pct(&mut inproc, 0.99));
    println!("GetCapacity handler in-process p50 {:8.4} ms   p99 {:8.4} ms (no socket; target p99 < 1 ms)", ms(i50), ms(i99));
    println!("GetPluginInfo p50 {:8.3} ms   p99 {:8.3} ms (the gRPC round-trip floor in this guest); GetCapacity p99 / floor p99 = {:.2}", ms(f50), ms(f99), p99.as_secs_f64() / f99.as_secs_f64());
}

/// The handler alone, in this process, over the same LVM state: what carve
/// itself adds to a GetCapacity, without the socket and gRPC framing.
async fn in_process_capacity(
    config: &std::path::Path,
    req: &csi::GetCapacityRequest,
    calls: usize,
) -> Vec<Duration> {
    use carve_csi::csi::controller_server::Controller;
    let svc = fresh_services(config).await;
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        svc.controller
            .get_capacity(tonic::Request::new(req.clone()))
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    lat
}

/// carve's services in this process, on `config`, with a view read from LVM
/// just now: what a carve started this instant would answer.
async fn fresh_services(config: &std::path::Path) -> carve_csi::server::Services {
    let cfg = carve_core::config::Config::load(config).unwrap();
    let runner = std::sync::Arc::new(carve_core::lvm::SystemLvm::new(
        "lvm",
        Duration::from_secs(60),
    ));
    let svc = carve_csi::server::services(
        &carve_csi::server::Options {
            endpoint: String::new(),
            node_id: "bench".into(),
            driver_name: "carve.dev".into(),
            max_volumes: 0,
            metrics_address: None,
            config: cfg,
        },
        runner,
    );
    svc.state.refresh().await.unwrap();
    svc
}
