//! How carve runs lvm: through long-lived `lvm shell` processes by default,
//! one process per command with `lvm_runner = "process"`. The whole suite
//! runs on the shells; these tests pin what is particular to them: the
//! switch, shells that belong to carve and leave with it, and a shell killed
//! under carve costing no request.

use super::*;

/// carve's `lvm shell` children: processes whose command line is `lvm` alone
/// and whose parent is carve.
fn shells_of(carve_pid: u32) -> Vec<i32> {
    lvm_processes()
        .into_iter()
        .filter(|(_, ppid, _, cmdline)| *ppid == carve_pid && cmdline == b"lvm\0")
        .map(|(pid, ..)| pid)
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// One thick and one thin volume made and deleted, capacity back to the byte.
async fn round_trip(c: &mut ControllerClient<Channel>, name: &str) {
    for class in ["thick", "thin"] {
        let before = capacity(c, class).await.available_capacity;
        let v = create_ok(
            c,
            create_req(&format!("{name}-{class}"), Some(class), 64 * MI),
        )
        .await;
        assert!(lv(split(&v.volume_id).0, split(&v.volume_id).1).is_some());
        delete(c, v.volume_id.clone()).await;
        assert!(lv(split(&v.volume_id).0, split(&v.volume_id).1).is_none());
        assert_eq!(
            capacity(c, class).await.available_capacity,
            before,
            "{class}"
        );
    }
}

#[tokio::test]
async fn shells_run_the_commands_and_end_with_carve() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    round_trip(&mut c, "shells").await;
    let log = carve.log_text();
    assert!(log.contains("lvm commands run through lvm shells"), "{log}");
    let shells = shells_of(carve.child.id());
    assert!(
        (1..=2).contains(&shells.len()),
        "lvm_shells = 2 (default): {shells:?}"
    );
    // carve gone by SIGKILL: its shells read the end of their input and
    // leave by themselves; nothing of carve's stays behind.
    let mut carve = carve;
    carve.child.kill().unwrap();
    carve.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while shells.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "lvm shells {shells:?} outlived carve"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_shell_killed_under_carve_costs_no_request() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    round_trip(&mut c, "killed-a").await;
    let shells = shells_of(carve.child.id());
    assert!(!shells.is_empty());
    for p in &shells {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every call answers as if nothing happened: the dead shells are found
    // before a command is sent to them, and replaced.
    round_trip(&mut c, "killed-b").await;
    let now = shells_of(carve.child.id());
    assert!(
        !now.is_empty() && now.iter().all(|p| !shells.contains(p)),
        "{shells:?} -> {now:?}"
    );
    assert!(carve.log_text().contains("an idle lvm shell had ended"));
}

#[tokio::test]
async fn process_runner_is_the_switch_back_to_one_lvm_per_command() {
    let text = std::fs::read_to_string(testbed_config()).unwrap();
    let cfg = config_file(&format!("lvm_runner = \"process\"\n{text}"));
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    round_trip(&mut c, "process").await;
    let log = carve.log_text();
    assert!(log.contains("lvm commands run one process each"), "{log}");
    assert!(
        shells_of(carve.child.id()).is_empty(),
        "no shell with lvm_runner = process"
    );
}
