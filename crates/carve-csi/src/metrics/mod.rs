//! Prometheus metrics (docs/metrics.md lists every one): what carve's RPCs
//! and commands did ([`rpc`], and carve-core's command counters), the node's
//! state at scrape time ([`node`]), the process ([`process`]), served over
//! HTTP when `--metrics-address` is set (carve-core's endpoint, through
//! [`Endpoints`]), beside the node's LV inventory for carve-agent
//! ([`inventory`]).

pub mod inventory;
pub mod node;
pub mod process;
pub mod rpc;

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::controller::ControllerService;

/// Every metric carve exports, for one node service.
pub fn registry(controller: Arc<ControllerService>) -> Registry {
    let mut r = Registry::default();
    rpc::rpc_metrics().register(&mut r);
    carve_core::telemetry::commands().register(&mut r);
    r.register_collector(Box::new(node::NodeCollector { controller }));
    r.register_collector(Box::new(process::ProcessCollector::default()));
    r
}

/// What the HTTP endpoint serves: the metrics and the LV inventory.
pub struct Endpoints {
    pub registry: Registry,
    pub controller: Arc<ControllerService>,
}

impl Endpoints {
    pub fn new(controller: Arc<ControllerService>) -> Endpoints {
        Endpoints {
            registry: registry(controller.clone()),
            controller,
        }
    }

    /// The `/volumes` JSON.
    pub fn inventory(&self) -> String {
        let view = self.controller.state.get();
        serde_json::to_string(&inventory::inventory(&self.controller, view.as_deref()))
            .expect("plain data serializes")
    }
}

impl carve_core::endpoint::Handler for Endpoints {
    fn get(&self, path: &str) -> Option<carve_core::endpoint::Answer> {
        match path {
            "/metrics" => Some(
                render(&self.registry)
                    .map(|body| (carve_core::endpoint::OPENMETRICS, body))
                    .map_err(|e| e.to_string()),
            ),
            "/volumes" => Some(Ok(("application/json", self.inventory()))),
            _ => None,
        }
    }

    fn paths(&self) -> &'static str {
        "/metrics and /volumes are"
    }
}

/// The OpenMetrics text of `registry`, `# EOF` included.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut s = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut s, registry)?;
    Ok(s)
}
