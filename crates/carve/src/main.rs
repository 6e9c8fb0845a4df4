//! `carve`: the CSI driver binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use carve_core::config::Config;
use carve_core::lvm::{Lvm, SystemLvm};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve CSI Identity and Controller on a Unix socket.
    Serve {
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
    },
    /// Validate a configuration file and exit (0 = valid).
    CheckConfig {
        #[arg(long, default_value = "/etc/carve/config.toml")]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: {} device class(es), default {:?}",
                    config.display(),
                    c.device_classes.len(),
                    c.default_class().name
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve {
            endpoint,
            node_id,
            driver_name,
            config,
            max_volumes_per_node,
            lvm,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("carve: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            if max_volumes_per_node < 0 {
                eprintln!("carve: --max-volumes-per-node must not be negative");
                return std::process::ExitCode::from(2);
            }
            if !carve_core::names::is_node_name(&node_id) {
                eprintln!("carve: --node-id {node_id:?} must be 1-253 characters of A-Z, a-z, 0-9, '-', '.', '_' (it is part of every volume ID)");
                return std::process::ExitCode::from(2);
            }
            if driver_name.is_empty() {
                eprintln!("carve: --driver-name must not be empty");
                return std::process::ExitCode::from(2);
            }
            carve_core::host::ffi::limit_malloc_arenas();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // Node RPCs (mounts, stat) and block copies run on blocking
                // threads, made only as needed.
                .max_blocking_threads(32)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                if carve_core::host::exec::find_in_path(&lvm).is_none() {
                    eprintln!("carve: required binary {lvm:?} not found on PATH (install lvm2)");
                    return std::process::ExitCode::from(3);
                }
                // Filesystem tools are needed only for the filesystems volumes use:
                // missing ones are reported now rather than at the first stage.
                let missing: Vec<&str> = ["mkfs.ext4", "resize2fs", "mkfs.xfs", "xfs_growfs", "mkfs.btrfs", "btrfs"]
                    .into_iter()
                    .filter(|p| carve_core::host::exec::find_in_path(p).is_none())
                    .collect();
                if !missing.is_empty() {
                    tracing::warn!(missing = ?missing, "filesystem tools not found: volumes of those filesystems cannot be staged or grown");
                }
                let runner = Arc::new(SystemLvm::new(lvm, config.lvm_timeout()));
                match Lvm::new(runner.clone()).version().await {
                    Ok(v) => tracing::info!(lvm = %v, "lvm found"),
                    Err(e) => {
                        eprintln!("carve: lvm does not run: {e}");
                        return std::process::ExitCode::from(3);
                    }
                }
                let opts = carve_csi::server::Options {
                    endpoint,
                    node_id,
                    driver_name,
                    max_volumes: max_volumes_per_node,
                    config,
                };
                match carve_csi::server::serve(opts, runner).await {
                    Ok(()) => std::process::ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("carve: {e}");
                        std::process::ExitCode::from(1)
                    }
                }
            })
        }
    }
}
