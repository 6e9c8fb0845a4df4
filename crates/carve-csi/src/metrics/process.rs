//! The process's own figures (the names every Prometheus client library
//! uses, so existing dashboards work) and carve's build, read with `sysinfo`
//! at scrape time.

use std::fmt;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The commit carve was built from (build.rs).
pub const COMMIT: &str = env!("CARVE_COMMIT");

#[derive(Debug)]
pub struct ProcessCollector {
    pid: Pid,
    system: Mutex<System>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            pid: Pid::from_u32(std::process::id()),
            system: Mutex::new(System::new()),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        {
            let family = enc.encode_descriptor(
                "carve_build_info",
                "carve's version and the commit it was built from; always 1",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION")), ("commit", COMMIT)];
            let mut family = family;
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        let mut system = self.system.lock().expect("sysinfo lock");
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .with_tasks(),
        );
        let Some(p) = system.process(self.pid) else {
            return Ok(());
        };
        let mut g = |name: &str, help: &str, v: f64| -> fmt::Result {
            let family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(family)
        };
        g(
            "process_resident_memory_bytes",
            "resident memory size",
            p.memory() as f64,
        )?;
        if let Some(fds) = p.open_files() {
            g("process_open_fds", "open file descriptors", fds as f64)?;
        }
        if let Some(tasks) = p.tasks() {
            g("process_threads", "threads", tasks.len() as f64)?;
        }
        g(
            "process_start_time_seconds",
            "start time, seconds since the Unix epoch",
            p.start_time() as f64,
        )?;
        let family = enc.encode_descriptor(
            "process_cpu_seconds",
            "user and system CPU time",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.accumulated_cpu_time() as f64 / 1000.0).encode(family)
    }
}
