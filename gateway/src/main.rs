//! `tandem`: the Tandem storage gateway daemon and its command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gateway::config::Config;

/// Tandem exports replicated block volumes over iSCSI and NVMe/TCP.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    /// Log line format on stderr: `text` for people (coloured only on a terminal), `json` for
    /// log collectors (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG` filter (default `info`), lines on stderr
/// in `format`, colour only when stderr is a terminal (never in a journal or a file).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured volumes (with no config: one 1 GiB volume in ./tandem-data).
    Serve(ServeArgs),
    /// Print the example configuration file.
    ExampleConfig,
    /// Measure a target with the built-in initiator.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Show the volumes of a running daemon and the hosts attached over each protocol.
    Status(StatusArgs),
    /// Create, list, resize and delete volumes, and change a volume's role, on a running daemon.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Export a volume over iSCSI or NVMe/TCP on a running daemon, or remove an export.
    #[command(subcommand)]
    Export(gateway::cli::ExportCommand),
    /// Change which hosts may log in to a target or connect to a subsystem.
    #[command(subcommand)]
    Host(gateway::cli::HostCommand),
    /// Set or clear iSCSI CHAP and NVMe DH-HMAC-CHAP credentials.
    #[command(subcommand)]
    Chap(gateway::cli::ChapCommand),
    /// Take, list, delete and roll back to snapshots of a volume.
    #[command(subcommand)]
    Snapshot(gateway::cli::SnapshotCommand),
    /// Create a new writable volume from a snapshot (export it like any volume).
    Clone(gateway::cli::CloneArgs),
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Create a volume and serve it (export it with `tandem export add`).
    Create(gateway::cli::CreateArgs),
    /// List the volumes with their size, role, exports and attached hosts.
    List(gateway::cli::ListArgs),
    /// Delete a volume and its data. An exported volume needs --force (its exports go first).
    Delete(gateway::cli::DeleteArgs),
    /// Make this node the volume's primary under a new epoch (after the old primary failed).
    /// A standby not known to be in sync is refused unless --force.
    Promote(PromoteArgs),
    /// Make this node a standby of the volume (a serving primary ends its term: epoch + 1).
    Demote(RoleArgs),
    /// Planned switchover: the primary (this node) hands the volume to its in-sync standby
    /// with no acknowledged write lost, then follows it as its standby.
    Switchover(SwitchoverArgs),
    /// Grow a volume while hosts use it (they are told: iSCSI unit attention, NVMe event).
    /// Shrinking is refused unless --force, and even then on a volume any host can reach.
    Resize(ResizeArgs),
}

#[derive(Debug, clap::Args)]
struct ResizeArgs {
    /// The volume's name.
    name: String,
    /// The new size: bytes, or with a unit as in the configuration (e.g. 2GiB, 512MiB).
    size: String,
    /// Allow shrinking (discards the data beyond the new end) a volume no host uses: no iSCSI
    /// LUN, no NVMe namespace, no session.
    #[arg(long)]
    force: bool,
    /// The admin API and its token.
    #[command(flatten)]
    admin: gateway::cli::Admin,
}

#[derive(Debug, clap::Args)]
struct PromoteArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// Promote even a standby that is not known to be in sync (prints what may be lost).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct SwitchoverArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// The node to hand the volume to: its admin API address (`[admin] listen` there).
    #[arg(long)]
    to: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
struct RoleArgs {
    /// The volume's name.
    name: String,
    #[command(flatten)]
    admin: gateway::cli::Admin,
}

fn change_role(action: &str, args: &RoleArgs, force: bool) -> ExitCode {
    let query = if force { "?force=1" } else { "" };
    let path = format!("/v1/volumes/{}/{action}{query}", args.name);
    match args
        .admin
        .send(hyper::Method::POST, &path, None)
        .and_then(|body| {
            serde_json::from_str::<gateway::operator::RoleChangeReply>(&body)
                .map_err(|e| format!("unexpected answer {body:?}: {e}"))
        }) {
        Ok(r) => {
            println!("volume {}: role {} epoch {}", r.volume, r.role, r.epoch);
            if let Some(loss) = r.loss {
                println!("{loss}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem volume {action}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resize(args: &ResizeArgs) -> ExitCode {
    if let Err(e) = args.size.parse::<gateway::config::Size>() {
        eprintln!("tandem volume resize: {e}");
        return ExitCode::from(2);
    }
    let force = if args.force { "&force=1" } else { "" };
    let path = format!(
        "/v1/volumes/{}/resize?size={}{force}",
        args.name,
        args.size.trim()
    );
    match args
        .admin
        .send(hyper::Method::POST, &path, None)
        .and_then(|body| {
            serde_json::from_str::<gateway::resize::ResizeReply>(&body)
                .map_err(|e| format!("unexpected answer {body:?}: {e}"))
        }) {
        Ok(r) if r.old_bytes == r.new_bytes => {
            println!("volume {}: already {} bytes", r.volume, r.new_bytes);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "volume {}: resized from {} to {} bytes",
                r.volume, r.old_bytes, r.new_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem volume resize: {e}");
            ExitCode::FAILURE
        }
    }
}

fn switchover(args: &SwitchoverArgs) -> ExitCode {
    let path = format!("/v1/volumes/{}/switchover?to={}", args.role.name, args.to);
    match args
        .role
        .admin
        .send(hyper::Method::POST, &path, None)
        .and_then(|body| {
            serde_json::from_str::<gateway::replication::switchover::SwitchoverReply>(&body)
                .map_err(|e| format!("unexpected answer {body:?}: {e}"))
        }) {
        Ok(r) => {
            println!(
                "volume {}: primary now at {} (epoch {}); this node is {} (epoch {})",
                r.volume, r.new_primary, r.new_epoch, r.role, r.epoch
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem volume switchover: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The daemon's admin API address (`[admin] listen`).
    #[arg(long, default_value = gateway::config::DEFAULT_ADMIN_LISTEN)]
    admin: std::net::SocketAddr,
    /// Print the JSON document of `GET /v1/volumes` instead of a table.
    #[arg(long)]
    json: bool,
}

fn status(args: &StatusArgs) -> ExitCode {
    match gateway::status::fetch(args.admin) {
        Ok(doc) if args.json => match serde_json::to_string_pretty(&doc) {
            Ok(j) => {
                println!("{j}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandem status: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(doc) => {
            print!(
                "{}",
                gateway::status::table(&doc, gateway::time::unix_now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem status: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// NVMe/TCP workload (IOPS, MB/s), optionally beside the loopback TCP ceiling.
    Nvme(gateway::nvme::bench::NvmeBenchArgs),
    /// An iSCSI target that stores nothing: the ceiling an initiator reaches on this machine.
    IscsiSink(gateway::sink::SinkArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML). Without it, the built-in default is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the iSCSI portals' listen addresses (repeat for several portals).
    #[arg(long = "iscsi-listen")]
    iscsi_listen: Vec<std::net::SocketAddr>,
    /// Override the address advertised to hosts in SendTargets (applies to every portal).
    #[arg(long)]
    iscsi_advertise: Option<std::net::IpAddr>,
    /// Override the NVMe/TCP portals' listen addresses (repeat for several portals).
    #[arg(long = "nvme-listen")]
    nvme_listen: Vec<std::net::SocketAddr>,
    /// Override the NVMe/TCP discovery listeners' addresses (repeatable).
    #[arg(long = "nvme-discovery-listen")]
    nvme_discovery_listen: Vec<std::net::SocketAddr>,
    /// Override the address the discovery log advertises (applies to every NVMe/TCP portal and
    /// discovery listener).
    #[arg(long)]
    nvme_advertise: Option<std::net::IpAddr>,
    /// Override the admin API's listen address (`[admin] listen`; enables it).
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// Override this node's path group (`[node] path_group`: its ALUA target port group).
    #[arg(long)]
    path_group: Option<u16>,
    /// Add a volume: NAME=SIZE (created on first start), e.g. `--volume db=10GiB` (repeatable).
    #[arg(long = "volume", value_parser = gateway::exports::parse_volume)]
    volumes: Vec<(String, gateway::config::Size)>,
    /// Export a volume: VOLUME=iscsi, VOLUME=nvme or VOLUME=both (repeatable). iSCSI exports
    /// become the next LUN of the first target, NVMe/TCP exports the next namespace of the first
    /// subsystem.
    #[arg(long = "export", value_parser = gateway::exports::parse_export)]
    exports: Vec<(String, bool, bool)>,
    /// Coordinate failover through etcd: its endpoints, comma-separated
    /// (`http://10.0.0.5:2379,http://10.0.0.6:2379`; `[cluster] etcd`). Needs a build with the
    /// `etcd` feature.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
}

/// Async worker threads for the daemon: half the cores. The other half is left to the volumes'
/// I/O threads and flushers, which do the blocking file work; on small machines one async
/// thread serving every connection also wakes less often than two handing work back and forth.
fn async_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .max(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Status(args) => status(&args),
        Command::Volume(VolumeCommand::Promote(args)) => {
            change_role("promote", &args.role, args.force)
        }
        Command::Volume(VolumeCommand::Demote(args)) => change_role("demote", &args, false),
        Command::Volume(VolumeCommand::Switchover(args)) => switchover(&args),
        Command::Volume(VolumeCommand::Create(args)) => gateway::cli::create(&args),
        Command::Volume(VolumeCommand::List(args)) => gateway::cli::list(&args),
        Command::Volume(VolumeCommand::Delete(args)) => gateway::cli::delete(&args),
        Command::Export(c) => gateway::cli::export(&c),
        Command::Host(c) => gateway::cli::host(&c),
        Command::Chap(c) => gateway::cli::chap(&c),
        Command::Snapshot(c) => gateway::cli::snapshot(&c),
        Command::Clone(a) => gateway::cli::clone(&a),
        Command::Volume(VolumeCommand::Resize(args)) => resize(&args),
        Command::ExampleConfig => {
            print!("{}", gateway::config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Bench(BenchCommand::Nvme(args)) => run_async(
            "tandem bench nvme",
            None,
            Box::pin(gateway::nvme::bench::run(args)),
        ),
        Command::Bench(BenchCommand::IscsiSink(args)) => match gateway::sink::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandem bench iscsi-sink: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let mut cfg = match &args.config {
                Some(p) => match Config::load(p) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("tandem: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::default(),
            };
            if !args.etcd.is_empty() {
                cfg.cluster.etcd = args.etcd.clone();
            }
            if let Some(d) = args.data_dir {
                cfg.data_dir = d;
            }
            // What the admin API changed replaces the file's volumes, exports and access lists.
            match gateway::control::state::apply_saved(&mut cfg) {
                Ok(true) => tracing::info!(
                    state = %gateway::control::state::path(&cfg).display(),
                    "volumes, exports, host lists and CHAP from the control plane's state"
                ),
                Ok(false) => {}
                Err(e) => {
                    eprintln!("tandem: {e}");
                    return ExitCode::from(2);
                }
            }
            if !args.iscsi_listen.is_empty() {
                let template = cfg.iscsi.portals.first().cloned();
                cfg.iscsi.portals = args
                    .iscsi_listen
                    .iter()
                    .enumerate()
                    .map(|(i, a)| gateway::config::PortalConfig {
                        listen: *a,
                        advertise: None,
                        tpgt: template.as_ref().map_or(1, |t| t.tpgt) + i as u16,
                    })
                    .collect();
            }
            for (name, size) in &args.volumes {
                gateway::exports::add_volume(&mut cfg, name, *size);
            }
            for (name, iscsi, nvme) in &args.exports {
                if let Err(e) = gateway::exports::add_export(&mut cfg, name, *iscsi, *nvme) {
                    eprintln!("tandem: {e}");
                    return ExitCode::from(2);
                }
            }
            if let Some(ip) = args.iscsi_advertise {
                for p in &mut cfg.iscsi.portals {
                    p.advertise = Some(std::net::SocketAddr::new(ip, p.listen.port()));
                }
            }
            if !args.nvme_listen.is_empty() {
                cfg.nvme.portals = args
                    .nvme_listen
                    .iter()
                    .map(|a| gateway::nvme::config::NvmePortalConfig {
                        listen: *a,
                        advertise: None,
                    })
                    .collect();
            }
            if !args.nvme_discovery_listen.is_empty() {
                cfg.nvme.discovery_listen = args.nvme_discovery_listen.clone();
            }
            if let Some(ip) = args.nvme_advertise {
                for p in &mut cfg.nvme.portals {
                    p.advertise = Some(std::net::SocketAddr::new(ip, p.listen.port()));
                }
                cfg.nvme.discovery_advertise = Some(ip);
            }
            if let Some(a) = args.admin_listen {
                cfg.admin.enabled = true;
                cfg.admin.listen = a;
            }
            if let Some(g) = args.path_group {
                cfg.node.path_group = g;
            }
            if let Err(e) = cfg.validate() {
                eprintln!("tandem: {e}");
                return ExitCode::from(2);
            }
            run_async(
                "tandem",
                Some(async_workers()),
                Box::pin(gateway::serve::run(cfg)),
            )
        }
    }
}

/// The work of a command that needs the async runtime.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>;

/// Builds the one tokio runtime of the process (`workers` async threads, or one per core) and
/// runs `job` on it; errors are printed after `what`.
fn run_async(what: &str, workers: Option<usize>, job: Job) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}
