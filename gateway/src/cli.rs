//! The control plane's command line: `tandem volume create|list|delete`, `tandem export
//! add|remove`, `tandem host allow|deny`, `tandem chap set|clear`. Each command is one request to
//! the daemon's admin API ([`crate::client`]) carrying the bearer token, and prints a table (or
//! the API's JSON with `--json`); errors print the API's message and exit non-zero.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use hyper::Method;

use crate::control::api::{VolumeCreated, VolumeDeleted};
use crate::control::edit::{AccessList, ChapState, Export, Protocol};

/// Where the daemon's admin API is and how to prove the right to change it.
#[derive(Debug, Clone, clap::Args)]
pub struct Admin {
    /// The daemon's admin API address (`[admin] listen`).
    #[arg(long, default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
    pub admin: SocketAddr,
    /// The file holding the admin token (default: `$TANDEM_TOKEN_FILE`, else
    /// `<data dir>/admin-token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The daemon's data directory, where its admin token is (default: `$TANDEM_DATA_DIR`,
    /// else `tandem-data`, the daemon's own default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Admin {
    /// The token file this command reads.
    pub fn token_path(&self) -> PathBuf {
        if let Some(p) = &self.token_file {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("TANDEM_TOKEN_FILE") {
            return PathBuf::from(p);
        }
        let dir = self
            .data_dir
            .clone()
            .or_else(|| std::env::var_os("TANDEM_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("tandem-data"));
        dir.join(crate::token::TOKEN_FILE)
    }

    /// Sends a mutating request with the token; returns the answer's body.
    pub fn send(&self, method: Method, path: &str, body: Option<String>) -> Result<String, String> {
        let token = crate::token::read(&self.token_path())?;
        crate::client::blocking(
            self.admin,
            crate::client::Call::send(method, path, Some(&token), body),
        )
        .map_err(|e| e.to_string())
    }
}

/// `tandem volume create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The new volume's name.
    pub name: String,
    /// Its size, e.g. 10GiB.
    #[arg(long)]
    pub size: crate::config::Size,
    /// Logical block size: 512 or 4096.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Write-ahead log size, e.g. 128MiB.
    #[arg(long)]
    pub wal_size: Option<crate::config::Size>,
    /// The volume's UUID (default: random), e.g. to give an NVMe namespace a known UUID.
    #[arg(long)]
    pub uuid: Option<String>,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `tandem volume delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The volume's name.
    pub name: String,
    /// Delete it even while exported (its exports are removed first; hosts lose it).
    #[arg(long)]
    pub force: bool,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `tandem volume list` (reading needs no token; the token options are accepted for
/// uniformity).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the JSON document of `GET /v1/volumes`.
    #[arg(long)]
    pub json: bool,
}

/// `tandem export add|remove`.
#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// Export a volume as a LUN of an iSCSI target or a namespace of an NVMe subsystem
    /// (created when it does not exist; a new subsystem admits no host until one is allowed).
    Add(ExportArgs),
    /// Remove a volume's exports over a protocol (hosts attached through them lose it).
    Remove(ExportArgs),
}

/// The arguments of `tandem export add|remove`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The volume.
    pub volume: String,
    /// The protocol.
    #[arg(long, value_enum)]
    pub protocol: ProtocolArg,
    /// The target IQN or subsystem NQN (default: the only one there is).
    #[arg(long)]
    pub target: Option<String>,
    /// The LUN or NSID (default: the lowest free one; remove: every one of the volume).
    #[arg(long)]
    pub id: Option<u32>,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// A protocol on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// iSCSI.
    Iscsi,
    /// NVMe/TCP.
    Nvme,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Iscsi => Protocol::Iscsi,
            ProtocolArg::Nvme => Protocol::Nvme,
        }
    }
}

/// `tandem host allow|deny`.
#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Let a host (initiator name or host NQN) log in to a target or connect to a subsystem.
    /// On an iSCSI target that admitted any initiator, the list then holds this one only.
    Allow(HostArgs),
    /// Take a host off the list: its next login or connect is refused (its live sessions go on).
    Deny(HostArgs),
}

/// The arguments of `tandem host allow|deny`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// The iSCSI initiator name or NVMe host NQN.
    pub host: String,
    /// The protocol.
    #[arg(long, value_enum)]
    pub protocol: ProtocolArg,
    /// The target IQN or subsystem NQN (default: the only one there is).
    #[arg(long)]
    pub target: Option<String>,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `tandem chap set|clear`.
#[derive(Debug, clap::Subcommand)]
pub enum ChapCommand {
    /// Set iSCSI CHAP of a target (or of discovery without --target), or an NVMe host's
    /// DH-HMAC-CHAP secrets (--host). A secret given as `-` is read from standard input.
    Set(ChapArgs),
    /// Remove them (a host then logs in without authenticating).
    Clear(ChapArgs),
}

/// The arguments of `tandem chap set|clear`.
#[derive(Debug, clap::Args)]
pub struct ChapArgs {
    /// The iSCSI target IQN (absent, and no --host: discovery sessions).
    #[arg(long, conflicts_with = "host")]
    pub target: Option<String>,
    /// The NVMe host NQN whose DH-HMAC-CHAP secrets these are.
    #[arg(long)]
    pub host: Option<String>,
    /// iSCSI: the user name the initiator presents.
    #[arg(long)]
    pub username: Option<String>,
    /// iSCSI: the initiator's secret (`-`: read it from standard input).
    #[arg(long)]
    pub secret: Option<String>,
    /// iSCSI mutual CHAP: the target's name.
    #[arg(long)]
    pub target_username: Option<String>,
    /// iSCSI mutual CHAP: the target's secret.
    #[arg(long)]
    pub target_secret: Option<String>,
    /// NVMe: the host's `DHHC-1:...` secret (`-`: read it from standard input).
    #[arg(long)]
    pub dhchap_secret: Option<String>,
    /// NVMe: the controller's secret, for bidirectional authentication.
    #[arg(long)]
    pub dhchap_ctrl_secret: Option<String>,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Prints `body` as it is (`--json`) or as `table(parsed)`; maps errors to a failure.
fn finish<T: serde::de::DeserializeOwned>(
    what: &str,
    json: bool,
    answer: Result<String, String>,
    table: impl FnOnce(T) -> String,
) -> ExitCode {
    match answer.and_then(|body| {
        if json {
            return Ok(body);
        }
        serde_json::from_str::<T>(&body)
            .map(table)
            .map_err(|e| format!("unexpected answer {body:?}: {e}"))
    }) {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Iscsi => "iscsi",
        Protocol::Nvme => "nvme",
    }
}

fn exports_table(list: &[Export]) -> String {
    let w = list
        .iter()
        .map(|e| e.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<12} {:<8} {:<w$} {:>5}\n",
        "VOLUME", "PROTOCOL", "TARGET", "ID"
    );
    for e in list {
        out.push_str(&format!(
            "{:<12} {:<8} {:<w$} {:>5}\n",
            e.volume,
            proto(e.protocol),
            e.target,
            e.id
        ));
    }
    out
}

/// `tandem volume create`.
pub fn create(a: &CreateArgs) -> ExitCode {
    let body = serde_json::json!({
        "name": a.name,
        "size": a.size.0,
        "block_size": a.block_size,
        "wal_size": a.wal_size.map(|w| w.0),
        "uuid": a.uuid,
    });
    let answer = a
        .admin
        .send(Method::POST, "/v1/volumes", Some(body.to_string()));
    finish("volume create", a.json, answer, |v: VolumeCreated| {
        format!(
            "{:<12} {:<36} {:>14} {:>6}\n{:<12} {:<36} {:>14} {:>6}",
            "VOLUME", "UUID", "BYTES", "BLOCK", v.name, v.uuid, v.size_bytes, v.block_size
        )
    })
}

/// `tandem volume delete`.
pub fn delete(a: &DeleteArgs) -> ExitCode {
    let path = format!(
        "/v1/volumes/{}{}",
        a.name,
        if a.force { "?force=1" } else { "" }
    );
    let answer = a.admin.send(Method::DELETE, &path, None);
    finish("volume delete", a.json, answer, |d: VolumeDeleted| {
        let mut out = format!("volume {} deleted", d.name);
        if !d.exports_removed.is_empty() {
            out.push_str("; exports removed:\n");
            out.push_str(&exports_table(&d.exports_removed));
        }
        out
    })
}

/// `tandem volume list`.
pub fn list(a: &ListArgs) -> ExitCode {
    let answer = crate::client::blocking(a.admin.admin, crate::client::Call::get("/v1/volumes"))
        .map_err(|e| e.to_string());
    finish(
        "volume list",
        a.json,
        answer,
        |doc: crate::status::VolumesDoc| {
            let mut out = format!(
                "{:<12} {:>14} {:>6} {:<8} {:<11} {:>5} {:<16} {:<}\n",
                "VOLUME", "BYTES", "BLOCK", "ROLE", "ACCESS", "HOSTS", "ORIGIN", "EXPORTS"
            );
            for v in &doc.volumes {
                let mut exports: Vec<String> = v
                    .exports
                    .iscsi
                    .iter()
                    .map(|e| format!("iscsi {} lun {}", e.target, e.lun))
                    .collect();
                exports.extend(
                    v.exports
                        .nvme
                        .iter()
                        .map(|e| format!("nvme {} nsid {}", e.subsystem, e.nsid)),
                );
                // A clone or read-only view: VOLUME@SNAPSHOT-ID, "(ro)" for a view.
                let origin = v.clone_of.as_ref().map_or_else(
                    || "-".to_string(),
                    |c| {
                        let ro = if c.read_only { " (ro)" } else { "" };
                        format!("{}@{}{ro}", c.volume, c.snapshot)
                    },
                );
                out.push_str(&format!(
                    "{:<12} {:>14} {:>6} {:<8} {:<11} {:>5} {:<16} {}\n",
                    v.name,
                    v.size_bytes,
                    v.block_size,
                    v.role,
                    v.access_state,
                    v.hosts.iscsi.len() + v.hosts.nvme.len(),
                    origin,
                    if exports.is_empty() {
                        "-".to_string()
                    } else {
                        exports.join(", ")
                    }
                ));
            }
            for u in &doc.unavailable {
                out.push_str(&format!("{:<12} UNAVAILABLE: {}\n", u.name, u.reason));
            }
            out
        },
    )
}

/// `tandem export add|remove`.
pub fn export(c: &ExportCommand) -> ExitCode {
    let (a, method, what) = match c {
        ExportCommand::Add(a) => (a, Method::POST, "export add"),
        ExportCommand::Remove(a) => (a, Method::DELETE, "export remove"),
    };
    let body = serde_json::json!({
        "volume": a.volume,
        "protocol": Protocol::from(a.protocol),
        "target": a.target,
        "id": a.id,
    });
    let answer = a
        .admin
        .send(method.clone(), "/v1/exports", Some(body.to_string()));
    if method == Method::POST {
        finish(what, a.json, answer, |e: Export| exports_table(&[e]))
    } else {
        finish(what, a.json, answer, |l: Vec<Export>| {
            format!("removed:\n{}", exports_table(&l))
        })
    }
}

/// `tandem host allow|deny`.
pub fn host(c: &HostCommand) -> ExitCode {
    let (a, method, what) = match c {
        HostCommand::Allow(a) => (a, Method::POST, "host allow"),
        HostCommand::Deny(a) => (a, Method::DELETE, "host deny"),
    };
    let body = serde_json::json!({
        "protocol": Protocol::from(a.protocol),
        "host": a.host,
        "target": a.target,
    });
    let answer = a.admin.send(method, "/v1/hosts", Some(body.to_string()));
    finish(what, a.json, answer, |l: AccessList| {
        let hosts = match &l.allowed {
            None => "any host".to_string(),
            Some(h) if h.is_empty() => "no host".to_string(),
            Some(h) => h.join(", "),
        };
        format!(
            "{:<8} {:<40} ALLOWED\n{:<8} {:<40} {hosts}",
            "PROTOCOL",
            "TARGET",
            proto(l.protocol),
            l.target
        )
    })
}

/// `value`, or a line of standard input when it is `-`.
fn secret(value: &Option<String>) -> Result<Option<String>, String> {
    match value.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("reading the secret from standard input: {e}"))?;
            Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
        }
        other => Ok(other.map(str::to_string)),
    }
}

/// `tandem chap set|clear`.
pub fn chap(c: &ChapCommand) -> ExitCode {
    let (a, set) = match c {
        ChapCommand::Set(a) => (a, true),
        ChapCommand::Clear(a) => (a, false),
    };
    let what = if set { "chap set" } else { "chap clear" };
    let request = (|| -> Result<(Method, &str, String), String> {
        let method = if set { Method::PUT } else { Method::DELETE };
        if let Some(host) = &a.host {
            let body = if set {
                let s = secret(&a.dhchap_secret)?
                    .ok_or("--host needs --dhchap-secret (the host's DHHC-1 secret)")?;
                serde_json::json!({
                    "nqn": host,
                    "dhchap_secret": s,
                    "dhchap_ctrl_secret": secret(&a.dhchap_ctrl_secret)?,
                })
            } else {
                serde_json::json!({ "host": host })
            };
            return Ok((method, "/v1/nvme/dhchap", body.to_string()));
        }
        let body = if set {
            serde_json::json!({
                "target": a.target,
                "username": a.username.as_deref().ok_or("iSCSI CHAP needs --username")?,
                "secret": secret(&a.secret)?.ok_or("iSCSI CHAP needs --secret")?,
                "target_username": a.target_username,
                "target_secret": secret(&a.target_secret)?,
            })
        } else {
            serde_json::json!({ "target": a.target })
        };
        Ok((method, "/v1/iscsi/chap", body.to_string()))
    })();
    let answer = request.and_then(|(m, path, body)| a.admin.send(m, path, Some(body)));
    finish(what, a.json, answer, |s: ChapState| {
        format!("{}: {}", s.of, s.chap)
    })
}

/// `tandem snapshot create|list|delete|rollback`.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Take a crash-consistent snapshot of a volume (every write acknowledged before it is in
    /// it); hosts go on writing.
    Create(SnapshotArgs),
    /// List a volume's snapshots.
    List(SnapshotListArgs),
    /// Delete a snapshot (refused while clones of it exist).
    Delete(SnapshotArgs),
    /// Roll a volume back to a snapshot (refused while hosts are attached unless --force).
    Rollback(SnapshotArgs),
}

/// The arguments of `tandem snapshot create|delete|rollback`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The volume.
    pub volume: String,
    /// The snapshot's name (delete, rollback: its name or id).
    pub snapshot: String,
    /// Rollback: even while hosts are attached (their file systems see the data change).
    #[arg(long)]
    pub force: bool,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `tandem snapshot list`.
#[derive(Debug, clap::Args)]
pub struct SnapshotListArgs {
    /// The volume.
    pub volume: String,
    /// The admin API.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

fn snapshots_table(list: &[crate::control::snapshots::SnapshotStatus]) -> String {
    let w = list.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:>4} {:<w$} {:>10} {:>14} {:>12} {:>6} {:>12}\n",
        "ID", "NAME", "POSITION", "BYTES", "TAKEN", "CLONES", "DELTA"
    );
    for s in list {
        out.push_str(&format!(
            "{:>4} {:<w$} {:>10} {:>14} {:>12} {:>6} {:>12}\n",
            s.id, s.name, s.position, s.size_bytes, s.created_unix, s.clones, s.delta_bytes
        ));
    }
    out
}

/// `tandem snapshot ...`.
pub fn snapshot(c: &SnapshotCommand) -> ExitCode {
    use crate::control::snapshots::SnapshotStatus;
    match c {
        SnapshotCommand::List(a) => {
            let path = format!("/v1/volumes/{}/snapshots", a.volume);
            let answer = crate::client::blocking(a.admin.admin, crate::client::Call::get(&path))
                .map_err(|e| e.to_string());
            finish("snapshot list", a.json, answer, |l: Vec<SnapshotStatus>| {
                snapshots_table(&l)
            })
        }
        SnapshotCommand::Create(a) => {
            let path = format!("/v1/volumes/{}/snapshots", a.volume);
            let body = serde_json::json!({ "name": a.snapshot }).to_string();
            let answer = a.admin.send(Method::POST, &path, Some(body));
            finish("snapshot create", a.json, answer, |s: SnapshotStatus| {
                snapshots_table(&[s])
            })
        }
        SnapshotCommand::Delete(a) => {
            let path = format!("/v1/volumes/{}/snapshots/{}", a.volume, a.snapshot);
            let answer = a.admin.send(Method::DELETE, &path, None);
            finish("snapshot delete", a.json, answer, |s: SnapshotStatus| {
                format!("snapshot {} ({}) of {} deleted", s.name, s.id, a.volume)
            })
        }
        SnapshotCommand::Rollback(a) => {
            let force = if a.force { "?force=1" } else { "" };
            let path = format!(
                "/v1/volumes/{}/snapshots/{}/rollback{force}",
                a.volume, a.snapshot
            );
            let answer = a.admin.send(Method::POST, &path, None);
            finish("snapshot rollback", a.json, answer, |s: SnapshotStatus| {
                format!(
                    "volume {} rolled back to snapshot {} ({})",
                    a.volume, s.name, s.id
                )
            })
        }
    }
}

/// `tandem clone`.
#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// The volume the snapshot is of.
    pub volume: String,
    /// The snapshot (name or id).
    pub snapshot: String,
    /// The new volume's name.
    pub name: String,
    /// A read-only view of the snapshot (exported write protected) instead of a writable
    /// clone: how a snapshot is exported.
    #[arg(long)]
    pub read_only: bool,
    /// The admin API and its token.
    #[command(flatten)]
    pub admin: Admin,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `tandem clone VOLUME SNAPSHOT NAME [--read-only]`: a new volume from a snapshot, writable
/// or a read-only view.
pub fn clone(a: &CloneArgs) -> ExitCode {
    let path = format!("/v1/volumes/{}/snapshots/{}/clone", a.volume, a.snapshot);
    let body = serde_json::json!({ "name": a.name, "read_only": a.read_only }).to_string();
    let answer = a.admin.send(Method::POST, &path, Some(body));
    finish("clone", a.json, answer, |v: VolumeCreated| {
        format!(
            "{:<12} {:<36} {:>14} {:>6}\n{:<12} {:<36} {:>14} {:>6}",
            "VOLUME", "UUID", "BYTES", "BLOCK", v.name, v.uuid, v.size_bytes, v.block_size
        )
    })
}
