//! The node's state as metrics, computed at scrape time from what the RPCs
//! answer from: the state cache's current view (GetCapacity's capacities,
//! ListVolumes' volumes and conditions), Probe's readiness, the copy jobs.
//! Nothing here runs an lvm command: a scrape costs what a ListVolumes does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::controller::ControllerService;
use carve_core::config::Provisioning;
use carve_core::engine::pools::{self, Level};
use carve_core::names::{self, LvKind};

type Labels = Vec<(&'static str, String)>;

/// One gauge family: its name, help and samples.
fn gauges<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One gauge without labels.
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    let family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(family)
}

fn l1(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

pub struct NodeCollector {
    pub controller: Arc<ControllerService>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = &self.controller;
        let config = &c.config;
        let ready = crate::identity::readiness(&c.state, config).is_ok();
        gauge(
            &mut enc,
            "carve_ready",
            "1 when Probe answers ready, else 0",
            ready as i64,
        )?;
        let (last_ok, _) = c.state.last_refresh();
        if let Some(t) = last_ok {
            gauge(
                &mut enc,
                "carve_lvm_report_age_seconds",
                "seconds since the last LVM report succeeded",
                t.elapsed().as_secs_f64(),
            )?;
        }
        self.copies(&mut enc)?;
        let Some(view) = c.state.get() else {
            return Ok(());
        };
        let state = &view.lvm;

        let mut vgs: Vec<&str> = config
            .device_classes
            .iter()
            .map(|d| d.volume_group.as_str())
            .collect();
        vgs.sort();
        vgs.dedup();
        gauges(
            &mut enc,
            "carve_vg_present",
            "1 when a configured volume group is on the node, else 0",
            vgs.iter()
                .map(|vg| (l1("vg", vg), state.vgs.contains_key(*vg) as i64)),
        )?;
        let present = || vgs.iter().filter_map(|vg| state.vgs.get(*vg));
        gauges(
            &mut enc,
            "carve_vg_size_bytes",
            "size of a configured volume group",
            present().map(|v| (l1("vg", &v.name), v.size)),
        )?;
        gauges(
            &mut enc,
            "carve_vg_free_bytes",
            "unallocated bytes of a configured volume group",
            present().map(|v| (l1("vg", &v.name), v.free)),
        )?;

        // Per class: what GetCapacity answers, and what the class holds.
        let classes = &config.device_classes;
        let cap = |name: &str| view.capacity.get(name).and_then(|r| r.as_ref().ok());
        gauges(
            &mut enc,
            "carve_class_usable",
            "1 when the class's volume group (and thin pool) exist, else 0",
            classes
                .iter()
                .map(|d| (l1("class", &d.name), cap(&d.name).is_some() as i64)),
        )?;
        gauges(
            &mut enc,
            "carve_class_capacity_bytes",
            "capacity reported to the scheduler (GetCapacity)",
            classes
                .iter()
                .filter_map(|d| cap(&d.name).map(|k| (l1("class", &d.name), k.available))),
        )?;
        gauges(
            &mut enc,
            "carve_class_maximum_volume_size_bytes",
            "the largest single volume of the class that fits now",
            classes.iter().filter_map(|d| {
                cap(&d.name).map(|k| (l1("class", &d.name), k.maximum_volume_size))
            }),
        )?;
        // Volumes and snapshots per class, and what the volumes commit.
        let mut per_class: BTreeMap<&str, (u64, u64, u64)> = classes
            .iter()
            .map(|d| (d.name.as_str(), (0, 0, 0)))
            .collect();
        for lv in &state.lvs {
            let kind = if c.is_carve(lv, LvKind::Volume) {
                LvKind::Volume
            } else if c.is_carve(lv, LvKind::Snapshot) {
                LvKind::Snapshot
            } else {
                continue;
            };
            let Some(d) = c.class_of(lv) else { continue };
            let e = per_class.entry(d.name.as_str()).or_default();
            match kind {
                LvKind::Volume => {
                    e.0 += 1;
                    e.2 += lv.size;
                }
                _ => e.1 += 1,
            }
        }
        gauges(
            &mut enc,
            "carve_class_volumes",
            "carve volumes of the class",
            per_class.iter().map(|(k, v)| (l1("class", k), v.0)),
        )?;
        gauges(
            &mut enc,
            "carve_class_snapshots",
            "carve snapshots of the class",
            per_class.iter().map(|(k, v)| (l1("class", k), v.1)),
        )?;
        gauges(
            &mut enc,
            "carve_class_committed_bytes",
            "sum of the sizes of the class's carve volumes",
            per_class.iter().map(|(k, v)| (l1("class", k), v.2)),
        )?;
        gauges(
            &mut enc,
            "carve_class_over_provision_ratio",
            "a thin class's configured over_provision_ratio",
            classes
                .iter()
                .filter(|d| d.provisioning == Provisioning::Thin)
                .map(|d| (l1("class", &d.name), d.over_provision_ratio)),
        )?;

        self.pools(&mut enc, &pools::configured(config, state))?;
        self.volumes(&mut enc, &view)
    }
}

impl NodeCollector {
    fn pools(&self, enc: &mut DescriptorEncoder, pools: &[pools::PoolFill]) -> fmt::Result {
        let limits = &self.controller.config.pool_limits;
        let id = |p: &pools::PoolFill| vec![("vg", p.vg.clone()), ("pool", p.pool.clone())];
        gauges(
            enc,
            "carve_thin_pool_size_bytes",
            "data size of a thin pool a class uses",
            pools.iter().map(|p| (id(p), p.size)),
        )?;
        gauges(
            enc,
            "carve_thin_pool_data_used_ratio",
            "fraction of a thin pool's data space used (lvs data_percent / 100)",
            pools.iter().map(|p| (id(p), p.data_percent / 100.0)),
        )?;
        gauges(
            enc,
            "carve_thin_pool_metadata_used_ratio",
            "fraction of a thin pool's metadata space used (lvs metadata_percent / 100)",
            pools.iter().map(|p| (id(p), p.metadata_percent / 100.0)),
        )?;
        gauges(
            enc,
            "carve_thin_pool_committed_bytes",
            "virtual size of every thin LV in the pool",
            pools.iter().map(|p| (id(p), p.committed)),
        )?;
        gauges(
            enc,
            "carve_thin_pool_warning",
            "1 when data or metadata is at or above thin_pool_warning_percent",
            pools
                .iter()
                .map(|p| (id(p), (p.level >= Level::Warning) as i64)),
        )?;
        gauges(
            enc,
            "carve_thin_pool_full",
            "1 when data or metadata is at or above thin_pool_full_percent: no new volumes",
            pools
                .iter()
                .map(|p| (id(p), (p.level == Level::Full) as i64)),
        )?;
        gauge(
            enc,
            "carve_thin_pool_warning_threshold_ratio",
            "thin_pool_warning_percent / 100",
            limits.warning_percent / 100.0,
        )?;
        gauge(
            enc,
            "carve_thin_pool_full_threshold_ratio",
            "thin_pool_full_percent / 100",
            limits.full_percent / 100.0,
        )
    }

    /// Per-volume series for the first `metrics_volume_limit` volumes (by
    /// ID), aggregates for all.
    fn volumes(
        &self,
        enc: &mut DescriptorEncoder,
        view: &carve_core::engine::state::View,
    ) -> fmt::Result {
        let c = &self.controller;
        let mut vols: Vec<(String, &carve_core::lvm::LvInfo)> =
            c.volumes(&view.lvm).map(|lv| (c.id_of(lv), lv)).collect();
        vols.sort_by(|a, b| a.0.cmp(&b.0));
        let mut abnormal: BTreeMap<&str, u64> = c
            .config
            .device_classes
            .iter()
            .map(|d| (d.name.as_str(), 0))
            .collect();
        let mut rows = Vec::with_capacity(vols.len().min(c.config.metrics_volume_limit));
        for (i, (id, lv)) in vols.iter().enumerate() {
            let class = c.class_of(lv).map(|d| d.name.as_str()).unwrap_or("");
            let bad = c.condition(lv, &view.lvm).abnormal;
            if bad {
                *abnormal.entry(class).or_default() += 1;
            }
            if i < c.config.metrics_volume_limit {
                rows.push((id, *lv, class, bad));
            }
        }
        let tag = |lv: &carve_core::lvm::LvInfo, t| {
            lv.tag(t).map(names::decode_tag_value).unwrap_or_default()
        };
        gauges(
            enc,
            "carve_volume_size_bytes",
            "size of a carve volume",
            rows.iter().map(|(id, lv, class, _)| {
                (
                    vec![
                        ("volume", id.to_string()),
                        ("class", class.to_string()),
                        ("pvc_namespace", tag(lv, names::TAG_PVC_NAMESPACE)),
                        ("pvc", tag(lv, names::TAG_PVC)),
                    ],
                    lv.size,
                )
            }),
        )?;
        gauges(
            enc,
            "carve_volume_abnormal",
            "1 when the volume's condition (VolumeCondition) is abnormal",
            rows.iter().map(|(id, _, class, bad)| {
                (
                    vec![("volume", id.to_string()), ("class", class.to_string())],
                    *bad as i64,
                )
            }),
        )?;
        gauges(
            enc,
            "carve_volume_encrypted_open",
            "encrypted (LUKS2) volumes only: 1 when the volume's dm-crypt mapping is open on this node",
            rows.iter().filter_map(|(id, lv, class, _)| {
                ControllerService::encrypted_open(lv).map(|open| {
                    (
                        vec![("volume", id.to_string()), ("class", class.to_string())],
                        open as i64,
                    )
                })
            }),
        )?;
        gauges(
            enc,
            "carve_volumes_abnormal",
            "volumes of the class whose condition is abnormal",
            abnormal.iter().map(|(k, v)| (l1("class", k), *v)),
        )?;
        gauge(
            enc,
            "carve_volume_series_omitted",
            "volumes past metrics_volume_limit, without series of their own",
            vols.len().saturating_sub(rows.len()) as u64,
        )
    }

    fn copies(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let c = &self.controller;
        let stats = c.jobs.stats();
        gauge(
            enc,
            "carve_copy_jobs_running",
            "copy jobs (thick restores and clones) copying now",
            stats.running.len().saturating_sub(c.copiers.queued()) as u64,
        )?;
        gauge(
            enc,
            "carve_copy_jobs_queued",
            "copy jobs waiting for a copier thread (copy_workers)",
            c.copiers.queued() as u64,
        )?;
        {
            let mut family = enc.encode_descriptor(
                "carve_copy_jobs",
                "copy jobs ended, by outcome",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in [
                ("done", stats.done),
                ("failed", stats.failed),
                ("cancelled", stats.cancelled),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&l1("outcome", outcome))?)?;
            }
        }
        {
            let family = enc.encode_descriptor(
                "carve_copy_bytes",
                "bytes copied by all copy jobs",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stats.copied_bytes).encode(family)?;
        }
        // Jobs are keyed vg/lv; the label is the volume ID users know.
        let volume = |key: &str| {
            let (vg, lv) = key.split_once('/').unwrap_or(("", key));
            names::VolumeId::new(&c.node_id, vg, lv).to_string()
        };
        gauges(
            enc,
            "carve_copy_copied_bytes",
            "bytes a copy in flight has copied so far",
            stats
                .running
                .iter()
                .map(|(k, p)| (l1("volume", &volume(k)), p.done)),
        )?;
        gauges(
            enc,
            "carve_copy_size_bytes",
            "bytes a copy in flight copies in all",
            stats
                .running
                .iter()
                .map(|(k, p)| (l1("volume", &volume(k)), p.total)),
        )?;
        gauges(
            enc,
            "carve_copy_rate_bytes_per_second",
            "average rate of a copy in flight since it started",
            stats.running.iter().map(|(k, p)| {
                let secs = p.elapsed.as_secs_f64();
                let rate = if secs > 0.0 {
                    p.done as f64 / secs
                } else {
                    0.0
                };
                (l1("volume", &volume(k)), rate)
            }),
        )
    }
}
