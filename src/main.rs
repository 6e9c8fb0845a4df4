//! `carve`: the CSI driver binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use carve_core::config::Config;
use carve_core::config::LvmRunnerKind;
use carve_core::lvm::{Lvm, LvmRunner, ShellLvm, SystemLvm};

#[derive(Parser)]
#[command(
    name = "carve",
    version,
    about = "CSI driver that carves LVM logical volumes out of node-local volume groups"
)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `carve=debug`).
    #[arg(long, env = "CARVE_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format: `text` (for people) or `json` (one object per line,
    /// with the RPC's span: method, volume_id, snapshot_id, request_name).
    #[arg(long, env = "CARVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve CSI Identity, Controller and Node on a Unix socket.
    Serve(ServeArgs),
    /// Serve only what csi-resizer asks to pick node-side expansion (its
    /// "trivial" mode): no LVM, no devices, no privileges. For the cluster's
    /// one csi-resizer (deploy/kubernetes/base/resizer).
    ResizerEndpoint {
        /// Socket to serve on, as unix:///absolute/path.
        #[arg(
            long,
            env = "CSI_ENDPOINT",
            default_value = "unix:///run/carve/resizer.sock"
        )]
        endpoint: String,
        /// CSI driver name; must be the node plugins' name.
        #[arg(long, env = "CARVE_DRIVER_NAME", default_value = "carve.dev")]
        driver_name: String,
    },
    /// Validate a configuration file and exit (0 = valid).
    CheckConfig {
        #[arg(long, default_value = "/etc/carve/config.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Socket to serve on, as unix:///absolute/path. A stale socket is replaced;
    /// any other file at the path is refused.
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///run/carve/csi.sock"
    )]
    endpoint: String,
    /// This node's name; becomes the topology.carve.dev/node value of every volume.
    #[arg(long, env = "CARVE_NODE_ID")]
    node_id: String,
    /// CSI driver name, also written into every LV's owner tag.
    #[arg(long, env = "CARVE_DRIVER_NAME", default_value = "carve.dev")]
    driver_name: String,
    /// Node configuration file (TOML): device classes and tuning.
    #[arg(long, env = "CARVE_CONFIG", default_value = "/etc/carve/config.toml")]
    config: PathBuf,
    /// Most volumes this node may hold (NodeGetInfo max_volumes_per_node); 0 = no limit.
    #[arg(long, env = "CARVE_MAX_VOLUMES", default_value_t = 0)]
    max_volumes_per_node: i64,
    /// The lvm binary to run.
    #[arg(long, env = "CARVE_LVM", default_value = "lvm")]
    lvm: String,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDRESS/metrics,
    /// e.g. `0.0.0.0:9842`; off when not set. docs/metrics.md lists them.
    #[arg(long, env = "CARVE_METRICS_ADDRESS")]
    metrics_address: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The current span (the RPC's) on every line; its parents add nothing.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve(args) => serve(args),
        Command::ResizerEndpoint {
            endpoint,
            driver_name,
        } => resizer_endpoint(endpoint, driver_name),
    }
}

fn resizer_endpoint(endpoint: String, driver_name: String) -> ExitCode {
    if driver_name.is_empty() {
        eprintln!("carve: --driver-name must not be empty");
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(carve_csi::resizer_endpoint::serve(&endpoint, driver_name)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carve: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            println!(
                "{}: {} device class(es), default {:?}",
                path.display(),
                c.device_classes.len(),
                c.default_class().name
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Flags and config, checked before anything starts (exit 2 on a bad one).
fn validated(args: &ServeArgs) -> Result<Config, String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    if args.max_volumes_per_node < 0 {
        return Err("--max-volumes-per-node must not be negative".into());
    }
    if !carve_core::names::is_node_name(&args.node_id) {
        return Err(format!(
            "--node-id {:?} must be 1-253 characters of A-Z, a-z, 0-9, '-', '.', '_' (it is part of every volume ID)",
            args.node_id
        ));
    }
    if args.driver_name.is_empty() {
        return Err("--driver-name must not be empty".into());
    }
    if let Some(a) = &args.metrics_address {
        if a.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "--metrics-address {a:?} must be HOST:PORT with an IP address (e.g. 0.0.0.0:9842)"
            ));
        }
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match validated(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carve: {e}");
            return ExitCode::from(2);
        }
    };
    carve_core::host::ffi::limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Mounts, umounts, stat and statvfs calls of node RPCs run here, each
        // on its own, on threads made only as needed (block copies have
        // threads of their own: engine::copiers).
        .max_blocking_threads(carve_core::crash::blocking_threads(32))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args, config))
}

/// The binaries carve runs, checked at start-up rather than at the first
/// request: lvm must run (exit 3 otherwise); missing filesystem tools only
/// limit the filesystems volumes can use, and are reported.
/// The lvm shells when the config asks for them and one answers; else one
/// process per command (an lvm without the lvmdbusd profile, say), said once
/// in the log.
async fn choose_runner(lvm: &str, config: &Config, single: Arc<SystemLvm>) -> Arc<dyn LvmRunner> {
    if config.lvm_runner == LvmRunnerKind::Process {
        tracing::info!("lvm commands run one process each (lvm_runner = \"process\")");
        return single;
    }
    let shells = ShellLvm::new(lvm, config.lvm_timeout(), config.lvm_shells);
    match shells.check().await {
        Ok(version) => {
            tracing::info!(shells = config.lvm_shells, lvm = %version, "lvm commands run through lvm shells");
            Arc::new(shells)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the lvm shell does not answer: lvm commands run one process each");
            single
        }
    }
}

async fn check_tools(lvm: &str, runner: Arc<SystemLvm>) -> Result<(), String> {
    if carve_core::host::exec::find_in_path(lvm).is_none() {
        return Err(format!(
            "required binary {lvm:?} not found on PATH (install lvm2)"
        ));
    }
    let missing: Vec<&str> = [
        "mkfs.ext4",
        "resize2fs",
        "mkfs.xfs",
        "xfs_growfs",
        "mkfs.btrfs",
        "btrfs",
        "cryptsetup",
    ]
    .into_iter()
    .filter(|p| carve_core::host::exec::find_in_path(p).is_none())
    .collect();
    if !missing.is_empty() {
        tracing::warn!(missing = ?missing, "node tools not found: volumes of those filesystems (or LUKS2-encrypted ones, without cryptsetup) cannot be staged or grown");
    }
    let version = Lvm::new(runner)
        .version()
        .await
        .map_err(|e| format!("lvm does not run: {e}"))?;
    tracing::info!(lvm = %version, "lvm found");
    Ok(())
}

async fn run(args: ServeArgs, config: Config) -> ExitCode {
    let single = Arc::new(SystemLvm::new(args.lvm.clone(), config.lvm_timeout()));
    if let Err(e) = check_tools(&args.lvm, single.clone()).await {
        eprintln!("carve: {e}");
        return ExitCode::from(3);
    }
    let runner = choose_runner(&args.lvm, &config, single).await;
    let opts = carve_csi::server::Options {
        endpoint: args.endpoint,
        node_id: args.node_id,
        driver_name: args.driver_name,
        max_volumes: args.max_volumes_per_node,
        metrics_address: args.metrics_address,
        config,
    };
    match carve_csi::server::serve(opts, runner).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carve: {e}");
            ExitCode::from(1)
        }
    }
}
