//! One tracing span and one set of counters per RPC, from a tower layer in
//! front of every carve gRPC service ([`RpcLayer`], installed by
//! `grpc_compat::server_builder`): it sees every request, those tonic answers
//! itself (an unknown method, a body that does not decode) included, and the
//! gRPC code of every answer.
//!
//! The span (`rpc`) carries the method from the start and the request's
//! volume ID, snapshot ID and name (`request_name`) once the handler has decoded them
//! ([`note`]), so every line logged while the RPC runs, its one error line at
//! the boundary included, says which RPC and which volume it is about.
//! Nothing else of a request is put into a span or a log line: secrets
//! (NodeStage's, CreateVolume's) never are.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::field::Empty;
use tracing::Instrument;

use crate::csi;

/// Every method carve's services answer, by service.
const METHODS: [(&str, &[&str]); 3] = [
    (
        "Identity",
        &["GetPluginInfo", "GetPluginCapabilities", "Probe"],
    ),
    (
        "Controller",
        &[
            "CreateVolume",
            "DeleteVolume",
            "ControllerPublishVolume",
            "ControllerUnpublishVolume",
            "ValidateVolumeCapabilities",
            "ListVolumes",
            "GetCapacity",
            "ControllerGetCapabilities",
            "CreateSnapshot",
            "DeleteSnapshot",
            "ListSnapshots",
            "GetSnapshot",
            "ControllerExpandVolume",
            "ControllerGetVolume",
            "ControllerModifyVolume",
        ],
    ),
    (
        "Node",
        &[
            "NodeStageVolume",
            "NodeUnstageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeGetVolumeStats",
            "NodeExpandVolume",
            "NodeGetCapabilities",
            "NodeGetInfo",
        ],
    ),
];

/// RPCs that change something: their completion is logged at info, the
/// rest (probes, capacity polls, stats) at debug.
const CHANGING: [&str; 10] = [
    "CreateVolume",
    "DeleteVolume",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ControllerExpandVolume",
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeExpandVolume",
];

/// `/csi.v1.Node/NodeStageVolume` → (`Node`, `NodeStageVolume`); any path
/// that is not a CSI method carve serves → (`unknown`, `unknown`), so a client
/// cannot grow the label set.
pub fn method_of(path: &str) -> (&'static str, &'static str) {
    let unknown = ("unknown", "unknown");
    let Some((service, method)) = path
        .strip_prefix("/csi.v1.")
        .and_then(|p| p.split_once('/'))
    else {
        return unknown;
    };
    METHODS
        .iter()
        .find(|(s, _)| *s == service)
        .and_then(|(s, ms)| ms.iter().find(|m| **m == method).map(|m| (*s, *m)))
        .unwrap_or(unknown)
}

/// The gRPC code's name, as CSI and gRPC's docs spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

type MethodLabels = [(&'static str, &'static str); 2];
type CodeLabels = [(&'static str, &'static str); 3];

/// Upper bounds (seconds) of RPC latency buckets: a Probe takes well under a
/// millisecond, a thick restore's CreateVolume up to the provisioner's timeout.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

#[derive(Debug, Clone)]
pub struct RpcMetrics {
    requests: Family<CodeLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<MethodLabels, Gauge>,
}

/// The process's RPC counters (every server in it shares them).
pub fn rpc_metrics() -> &'static RpcMetrics {
    static RPC: OnceLock<RpcMetrics> = OnceLock::new();
    RPC.get_or_init(|| RpcMetrics {
        requests: Family::default(),
        seconds: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        in_flight: Family::default(),
    })
}

impl RpcMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "carve_rpc_requests",
            "RPCs answered, by service, method and gRPC code",
            self.requests.clone(),
        );
        r.register(
            "carve_rpc_duration_seconds",
            "time from an RPC's arrival to its answer",
            self.seconds.clone(),
        );
        r.register(
            "carve_rpc_in_flight",
            "RPCs being served now",
            self.in_flight.clone(),
        );
    }

    /// RPCs of `method` answered with `code` so far (tests compare counts).
    pub fn count(&self, service: &'static str, method: &'static str, code: &'static str) -> u64 {
        self.requests
            .get(&[("service", service), ("method", method), ("code", code)])
            .map(|c| c.get())
            .unwrap_or(0)
    }
}

/// The tower layer: a span and counters around every RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;
    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
}

/// Takes an RPC off the in-flight gauge when it ends, however it ends.
struct InFlight(MethodLabels);

impl Drop for InFlight {
    fn drop(&mut self) {
        rpc_metrics().in_flight.get_or_create(&self.0).dec();
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Rpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = method_of(req.uri().path());
        let span = tracing::info_span!(
            "rpc",
            method,
            volume_id = Empty,
            snapshot_id = Empty,
            request_name = Empty
        );
        let labels = [("service", service), ("method", method)];
        rpc_metrics().in_flight.get_or_create(&labels).inc();
        let guard = InFlight(labels);
        let started = Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let r = fut.await;
                let took = started.elapsed();
                drop(guard);
                // tonic puts a failure's status in the response headers (a
                // trailers-only answer); a success's OK comes in the trailers.
                let code = match &r {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                    Err(_) => tonic::Code::Unknown,
                };
                let m = rpc_metrics();
                m.requests
                    .get_or_create(&[
                        ("service", service),
                        ("method", method),
                        ("code", code_name(code)),
                    ])
                    .inc();
                m.seconds.get_or_create(&labels).observe(took.as_secs_f64());
                let ms = took.as_secs_f64() * 1000.0;
                let code = code_name(code);
                if CHANGING.contains(&method) {
                    tracing::info!(code, elapsed_ms = ms, "rpc done");
                } else {
                    tracing::debug!(code, elapsed_ms = ms, "rpc done");
                }
                r
            }
            .instrument(span),
        )
    }
}

/// What identifies a request in logs: its volume ID, snapshot ID or name.
pub trait RequestIds {
    fn record(&self, span: &tracing::Span);
}

/// Records the IDs of `request` on the current RPC's span. Called by each
/// handler before its body runs.
pub fn note<T: RequestIds>(request: &tonic::Request<T>) {
    request.get_ref().record(&tracing::Span::current());
}

macro_rules! request_ids {
    ($($t:ident { $($field:ident => $slot:literal),* })*) => {$(
        impl RequestIds for csi::$t {
            #[allow(unused_variables)]
            fn record(&self, span: &tracing::Span) {
                $(if !self.$field.is_empty() {
                    span.record($slot, self.$field.as_str());
                })*
            }
        }
    )*};
}

request_ids! {
    CreateVolumeRequest { name => "request_name" }
    DeleteVolumeRequest { volume_id => "volume_id" }
    ValidateVolumeCapabilitiesRequest { volume_id => "volume_id" }
    ControllerGetVolumeRequest { volume_id => "volume_id" }
    ControllerExpandVolumeRequest { volume_id => "volume_id" }
    CreateSnapshotRequest { name => "request_name", source_volume_id => "volume_id" }
    DeleteSnapshotRequest { snapshot_id => "snapshot_id" }
    ListSnapshotsRequest { snapshot_id => "snapshot_id", source_volume_id => "volume_id" }
    GetSnapshotRequest { snapshot_id => "snapshot_id" }
    NodeStageVolumeRequest { volume_id => "volume_id" }
    NodeUnstageVolumeRequest { volume_id => "volume_id" }
    NodePublishVolumeRequest { volume_id => "volume_id" }
    NodeUnpublishVolumeRequest { volume_id => "volume_id" }
    NodeGetVolumeStatsRequest { volume_id => "volume_id" }
    NodeExpandVolumeRequest { volume_id => "volume_id" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_csi_methods_become_labels() {
        assert_eq!(
            method_of("/csi.v1.Node/NodeStageVolume"),
            ("Node", "NodeStageVolume")
        );
        assert_eq!(
            method_of("/csi.v1.Controller/CreateVolume"),
            ("Controller", "CreateVolume")
        );
        for junk in [
            "/csi.v1.Node/Whatever",
            "/csi.v1.Nope/Probe",
            "/other.v1.Identity/Probe",
            "/",
            "",
            "/csi.v1.Identity/Probe/extra",
        ] {
            assert_eq!(method_of(junk), ("unknown", "unknown"), "{junk}");
        }
    }

    #[test]
    fn every_code_has_its_name() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        for i in 1..=16 {
            let c = tonic::Code::from_i32(i);
            assert_eq!(format!("{c:?}"), code_name(c));
        }
    }
}
