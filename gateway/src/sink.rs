//! `tandem bench iscsi-sink`: an iSCSI target whose one LUN stores nothing.
//!
//! A benchmark of a target against a peer says little unless one also knows what the
//! initiator itself can reach on the machine. The sink answers with the same protocol core as
//! `tandem serve` (login, negotiation, the SCSI command set) but completes every block
//! operation at once, without storage: writes are discarded, reads return zeros. Each
//! connection is served by one blocking thread doing read, process, write, the least work a
//! target can do per command. What an initiator reaches against it is the ceiling for any
//! target on that machine; `scripts/bench-iscsi.sh` prints it beside Tandem and tgt.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_iscsi::login::{DiscoveredTarget, Refusal, TargetAuth};
use proto_iscsi::scsi::{
    Begun, BlockOp, BlockResult, LbaExtent, LogicalUnit, LuConfig, Nexus, Provisioning,
};
use proto_iscsi::session::{Answer, Connection, ConnectionConfig, Event, Question};
use rand::RngCore;

use crate::config::Size;

/// Options of `tandem bench iscsi-sink`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3260")]
    pub listen: SocketAddr,
    /// Size the LUN reports, e.g. `1GiB`.
    #[arg(long, default_value = "1GiB")]
    pub size: Size,
    /// The target's IQN.
    #[arg(long, default_value = "iqn.2026-11.io.tandem:sink")]
    pub iqn: String,
}

/// Block size of the sink's LUN.
const BLOCK_SIZE: u32 = 512;

/// What every connection of the sink shares.
struct Shared {
    iqn: String,
    blocks: u64,
    listen: SocketAddr,
    tsih: AtomicU16,
    nexus: AtomicU64,
}

impl Shared {
    /// The answer to a connection's question: one target, no authentication.
    fn answer(&self, q: Question) -> Answer {
        match q {
            Question::SessionExists { .. } => Answer::SessionExists(false),
            Question::Admit { target: None, .. } => Answer::Admit(Ok(TargetAuth::None)),
            Question::Admit {
                target: Some(t), ..
            } => Answer::Admit(if t == self.iqn {
                Ok(TargetAuth::None)
            } else {
                Err(Refusal::NotFound)
            }),
            // The sink keeps no sessions: nothing to close.
            Question::Reinstate { .. } => Answer::Reinstated,
            Question::AllocateTsih => {
                Answer::Tsih(Some(self.tsih.fetch_add(1, Ordering::Relaxed).max(1)))
            }
            Question::SendTargets { .. } => Answer::SendTargets(vec![DiscoveredTarget {
                name: self.iqn.clone(),
                addresses: vec![format!("{},1", self.listen)],
            }]),
        }
    }
}

/// Serves the sink until the process is stopped.
pub fn run(args: SinkArgs) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        iqn: args.iqn,
        blocks: args.size.0 / u64::from(BLOCK_SIZE),
        listen,
        tsih: AtomicU16::new(1),
        nexus: AtomicU64::new(1),
    });
    eprintln!(
        "iSCSI sink (stores nothing) on {listen}: iscsi://{listen}/{}/0",
        shared.iqn
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("sink-conn".into())
            .spawn(move || serve(stream, &shared));
    }
    Ok(())
}

/// One connection: read what arrived, run every command it completes, write the answers.
fn serve(mut stream: TcpStream, shared: &Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let mut conn = Connection::new(ConnectionConfig::default(), seed);
    let uuid = *uuid::Uuid::new_v4().as_bytes();
    let mut lu = LogicalUnit::new(LuConfig::new(BLOCK_SIZE, uuid), shared.blocks);
    let mut nexus: Option<Nexus> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut closing = false;
    while !closing {
        // Wake up at the session's deadline (NOP-In pings).
        let wait = conn.poll_timeout().map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        let _ = stream.set_read_timeout(wait);
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => conn.receive(Instant::now(), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                conn.handle_timeout(Instant::now())
            }
            Err(_) => return,
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Question(q) => conn.answer(shared.answer(q)),
                Event::LoggedIn(s) => {
                    nexus = Some(Nexus {
                        id: shared.nexus.fetch_add(1, Ordering::Relaxed),
                        initiator_port: format!(
                            "{},i,0x{}",
                            s.params.initiator_name,
                            hex::encode(s.isid)
                        ),
                        target_port_group: 1,
                        relative_port: 1,
                    });
                }
                Event::Command(cmd) => {
                    let Some(n) = &nexus else { continue };
                    let expected_out = if cmd.write { cmd.expected_len } else { 0 };
                    let (begun, used) =
                        lu.start_with_data(n, &cmd.cdb, &cmd.data_out, expected_out);
                    let c = match begun {
                        Begun::Done(c) => c,
                        Begun::Io { op, task } => lu.io_done(task, complete_at_once(op)),
                    };
                    conn.complete(cmd.itt, &c, used);
                }
                Event::Close(_) => closing = true,
                Event::Aborted(_) | Event::Reset { .. } => {}
            }
        }
        if conn.has_output() && stream.write_all(&conn.take_output()).is_err() {
            return;
        }
    }
}

/// The result of a block operation on storage that keeps nothing.
fn complete_at_once(op: BlockOp) -> BlockResult {
    match op {
        BlockOp::Read { blocks, .. } => {
            BlockResult::Data(Bytes::from(vec![
                0u8;
                blocks as usize * BLOCK_SIZE as usize
            ]))
        }
        BlockOp::GetLbaStatus { lba } => BlockResult::LbaStatus(vec![LbaExtent {
            lba,
            blocks: 1,
            status: Provisioning::Deallocated,
        }]),
        _ => BlockResult::Ok,
    }
}
