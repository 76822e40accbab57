//! The replication wire format: typed frames, their encoder and a streaming decoder.
//!
//! Primary and standby talk over one byte stream of frames. Each frame is a 16-byte header
//! followed by a body (all integers little endian):
//!
//! | offset | field                                                   |
//! |--------|---------------------------------------------------------|
//! | 0      | magic u32 ([`MAGIC`], the bytes "TRPL")                 |
//! | 4      | version u8 ([`VERSION`])                                |
//! | 5      | kind u8 (which [`Frame`] variant)                       |
//! | 6      | reserved u16, zero                                      |
//! | 8      | body_len u32, at most [`MAX_BODY`]                      |
//! | 12     | crc u32: CRC32C of header bytes 0..12, then the body    |
//!
//! The decoder checks the header before it buffers the body, so a hostile length is refused
//! without allocating it, and checks the CRC before it parses the body. Record data in decoded
//! frames shares the receive buffer ([`bytes::Bytes`]); nothing is copied per record.
//!
//! Bodies, by kind:
//! - 1 `Hello`: volume_uuid \[16\], node_id \[16\], epoch u64, role u8, durable_lsn u64,
//!   block_size u32, capacity_blocks u64, resync_incomplete u8 (0 or 1).
//! - 2 `Records`: epoch u64, prev_lsn u64, count u32, then `count` records of lsn u64, kind u8
//!   (1 write, 2 trim, 3 zero, 5 snapshot, 6 snapshot delete, 7 grow: the log's codes), lba
//!   u64, blocks u32, data_len u32, data. A snapshot record carries the snapshot id in `lba`,
//!   0 blocks and the name as data (at most 255 bytes); a delete record the id and nothing
//!   else; a grow record the new capacity in blocks in `lba` (not 0) and nothing else.
//! - 3 `Barrier`: epoch u64, lsn u64.
//! - 4 `Ack`: epoch u64, received_lsn u64, durable_lsn u64.
//! - 5 `Fenced`: epoch u64.
//! - 6 `ResyncStart`: epoch u64, start_lsn u64.
//! - 7 `ResyncExtent`: epoch u64, lba u64, blocks u32, has_data u8 (0 or 1), then the data.
//! - 8 `ResyncDone`: epoch u64, end_lsn u64.
//! - 9 `PeerState`: epoch u64, in_sync u8 (0 or 1), primary_lsn u64.
//! - 10 `PathState`: epoch u64, path_group u16, access u8 (the ALUA code: 0 active/optimized,
//!   1 active/non-optimized, 2 standby, 3 unavailable, 15 transitioning), port_count u8, then
//!   `port_count` relative target port ids u16.
//!
//! A body must be exactly as long as its fields: trailing bytes are an error.

mod decode;
mod encode;
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use decode::Decoder;
pub use encode::{encode, encoded_len};
#[cfg(any(test, feature = "fuzz"))]
pub use fuzz::fuzz_repl_frame;

/// Marks the start of every frame, so a stream that is not ours (or lost its framing) is
/// refused at the first header. The bytes "TRPL" read as a little-endian u32.
pub const MAGIC: u32 = 0x4C50_5254;
/// Wire format version; a peer speaking another one is refused rather than misread.
/// Version 2 added the Hello's `resync_incomplete` and the `ResyncDone`'s `end_lsn`; version 3
/// the snapshot and snapshot delete records; version 4 the `PathState` frame; version 5 the
/// grow record (a version 4 peer would refuse it mid-stream, so it is refused at its Hello).
pub const VERSION: u8 = 5;
/// Length of the fixed frame header, the unit the decoder reads before trusting anything.
pub const HEADER_LEN: usize = 16;
/// Largest body accepted: a 4 MiB batch of record data plus room for the record headers.
/// Larger frames are refused from the header alone, before anything is buffered for them.
pub const MAX_BODY: u32 = (4 << 20) + 4096;
/// Bytes a `Records` body spends before its first record (epoch, prev_lsn, count), so the
/// primary can size batches to stay under [`MAX_BODY`].
pub const RECORDS_HEADER_LEN: usize = 20;
/// Bytes each record spends in a `Records` body besides its data (lsn, kind, lba, blocks,
/// data_len); also the bound the decoder uses to refuse record counts that cannot fit.
pub const RECORD_HEADER_LEN: usize = 25;

/// Frame kind codes (header byte 5); one place so encoder and decoder cannot disagree.
mod kind {
    pub const HELLO: u8 = 1;
    pub const RECORDS: u8 = 2;
    pub const BARRIER: u8 = 3;
    pub const ACK: u8 = 4;
    pub const FENCED: u8 = 5;
    pub const RESYNC_START: u8 = 6;
    pub const RESYNC_EXTENT: u8 = 7;
    pub const RESYNC_DONE: u8 = 8;
    pub const PEER_STATE: u8 = 9;
    pub const PATH_STATE: u8 = 10;
}

/// One replication message: what primary and standby say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Both directions, first frame of a connection: who is talking about which volume.
    Hello(Hello),
    /// Primary to standby, pipelined: the next log records in LSN order.
    Records(Records),
    /// Primary to standby: make everything up to `lsn` durable, then [`Frame::Ack`].
    Barrier {
        /// Epoch of the primary sending it.
        epoch: u64,
        /// LSN that must be durable on the standby before it acknowledges.
        lsn: u64,
    },
    /// Standby to primary: how far the standby has received and made durable.
    Ack {
        /// Epoch of the standby.
        epoch: u64,
        /// Highest LSN received.
        received_lsn: u64,
        /// Highest LSN durable on the standby.
        durable_lsn: u64,
    },
    /// "I hold a newer epoch than yours": the receiver must stop serving.
    Fenced {
        /// The sender's (newer) epoch.
        epoch: u64,
    },
    /// A full resync begins; extents follow, then records from `start_lsn`.
    ResyncStart {
        /// Epoch of the primary.
        epoch: u64,
        /// First LSN shipped as records after the extents.
        start_lsn: u64,
    },
    /// One region of the primary's extent during a full resync.
    ResyncExtent {
        /// Epoch of the primary.
        epoch: u64,
        /// First block of the region.
        lba: u64,
        /// Blocks in the region.
        blocks: u32,
        /// The region's contents, `blocks * block_size` bytes; `None` for a deallocated range.
        data: Option<Bytes>,
    },
    /// The extent part of a full resync is complete: records from the `ResyncStart`'s
    /// `start_lsn` follow, and the standby's image is consistent (whole, promotable) only once
    /// it applied them through `end_lsn`, the primary's last LSN when the copy ended.
    ResyncDone {
        /// Epoch of the primary.
        epoch: u64,
        /// The primary's last LSN when the last region was read.
        end_lsn: u64,
    },
    /// Primary to standby: how the primary counts the standby now, so that the standby knows
    /// (and persists) whether it may be promoted without losing an acknowledged flush. Sent
    /// when the connection is ready and whenever the primary recorded a change.
    PeerState {
        /// Epoch of the primary.
        epoch: u64,
        /// True: every flush the primary acknowledges waits for this standby (it holds every
        /// acknowledged flush, or will before the flush is acknowledged). False: the primary
        /// acknowledges flushes without it (it fell behind, or needs a full resync).
        in_sync: bool,
        /// The primary's last LSN when it sent this.
        primary_lsn: u64,
    },
    /// Either direction: the sender's paths to the volume as hosts see them (its ALUA target
    /// port group, that group's relative target ports and its access state now), so that each
    /// node lists both nodes' groups in REPORT TARGET PORT GROUPS with the state last learned.
    /// Sent when the connection is ready and whenever the state changed.
    PathState {
        /// The sender's epoch.
        epoch: u64,
        /// The sender's target port group id.
        path_group: u16,
        /// The sender's access state on that group.
        access: AccessState,
        /// The group's relative target port ids (at most 255).
        relative_ports: Vec<u16>,
    },
}

pub use block_core::AccessState;

/// The wire code of an access state: its ALUA code (SPC-4 table 173).
fn access_code(a: AccessState) -> u8 {
    match a {
        AccessState::Optimized => 0,
        AccessState::NonOptimized => 1,
        AccessState::Standby => 2,
        AccessState::Unavailable => 3,
        AccessState::Transitioning => 15,
    }
}

fn access_from_code(c: u8) -> Option<AccessState> {
    Some(match c {
        0 => AccessState::Optimized,
        1 => AccessState::NonOptimized,
        2 => AccessState::Standby,
        3 => AccessState::Unavailable,
        15 => AccessState::Transitioning,
        _ => return None,
    })
}

/// Most relative target ports a `PathState` carries (its count is one byte).
pub const MAX_PATH_PORTS: usize = 255;

/// The handshake: lets each side check it talks about the same volume and geometry, and
/// compare epochs and log positions before anything is shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// UUID of the volume both nodes serve.
    pub volume_uuid: [u8; 16],
    /// Stable id of the sending node.
    pub node_id: [u8; 16],
    /// The sender's persisted epoch.
    pub epoch: u64,
    /// The sender's role, as [`crate::Role::to_u8`] (the decoder refuses unknown codes).
    pub role: u8,
    /// Highest LSN durable on the sender.
    pub durable_lsn: u64,
    /// Block size of the sender's volume in bytes.
    pub block_size: u32,
    /// Capacity of the sender's volume in blocks.
    pub capacity_blocks: u64,
    /// Sent by a standby whose last full resync did not complete (it crashed or lost the
    /// connection mid-copy): its image is not consistent and its position means nothing, so
    /// the primary must start a full resync again. Always false from a primary.
    pub resync_incomplete: bool,
}

/// A batch of log records, shipped without waiting for the previous batch's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    /// Epoch of the primary that wrote them.
    pub epoch: u64,
    /// LSN of the last record shipped before this batch (0 at the start), so the standby can
    /// detect a lost batch.
    pub prev_lsn: u64,
    /// The records; LSNs strictly increase and all exceed `prev_lsn` (gaps allowed: the log
    /// spends LSNs on padding records it does not ship). The decoder enforces this.
    pub records: Vec<Record>,
}

/// One log record as shipped: the part of `blockstore`'s log record the standby replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log sequence number on the primary.
    pub lsn: u64,
    /// What the record does.
    pub kind: RecordKind,
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// `blocks * block_size` bytes for a write, empty otherwise. The decoder, which does not
    /// know the block size, checks a write's data is non-empty and a multiple of `blocks`
    /// (empty when `blocks` is 0), and that other kinds carry none.
    pub data: Bytes,
}

/// What a shipped record does (the log's padding records are never shipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Data for `blocks` blocks at `lba`.
    Write,
    /// Deallocate `blocks` blocks at `lba`.
    Trim,
    /// Write zeros to `blocks` blocks at `lba`.
    Zero,
    /// Take snapshot `lba` (its id) here; the data is its name (at most
    /// [`MAX_SNAPSHOT_NAME`] bytes), `blocks` is 0.
    Snapshot,
    /// Delete snapshot `lba` (its id) here; no data, `blocks` 0.
    SnapshotDelete,
    /// Grow the volume to `lba` blocks here (not 0); no data, `blocks` 0.
    Grow,
}

/// The longest snapshot name a snapshot record carries.
pub const MAX_SNAPSHOT_NAME: usize = crate::recovery::MAX_SNAPSHOT_NAME;

impl RecordKind {
    /// Wire code; the same as the log record's kind code.
    fn code(self) -> u8 {
        match self {
            RecordKind::Write => 1,
            RecordKind::Trim => 2,
            RecordKind::Zero => 3,
            RecordKind::Snapshot => 5,
            RecordKind::SnapshotDelete => 6,
            RecordKind::Grow => 7,
        }
    }

    fn from_code(c: u8) -> Option<RecordKind> {
        Some(match c {
            1 => RecordKind::Write,
            2 => RecordKind::Trim,
            3 => RecordKind::Zero,
            5 => RecordKind::Snapshot,
            6 => RecordKind::SnapshotDelete,
            7 => RecordKind::Grow,
            _ => return None,
        })
    }
}

/// Why bytes received from the peer are not a valid frame. Typed by who is at fault: every
/// variant is the peer's fault (or the link's), never a local condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header does not start with [`MAGIC`]: not our protocol, or framing was lost.
    #[error("bad frame magic")]
    BadMagic,
    /// The peer speaks another wire format version.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    /// The frame kind code is not defined.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The reserved header field is not zero.
    #[error("reserved frame header field is not zero")]
    ReservedNonZero,
    /// The declared body is larger than [`MAX_BODY`]; refused before buffering it.
    #[error("frame body of {len} bytes exceeds the limit")]
    TooLarge {
        /// Declared body length.
        len: u32,
    },
    /// The CRC32C over header and body does not match: corrupted in transit.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The body does not hold what its kind requires; says which rule was broken.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl FrameError {
    /// Whether the connection must be closed. Every error is fatal today (after one the byte
    /// stream cannot be trusted); the state machines ask rather than assume, so a recoverable
    /// error added later needs no change there.
    pub fn is_fatal(&self) -> bool {
        match self {
            FrameError::BadMagic
            | FrameError::UnsupportedVersion(_)
            | FrameError::UnknownKind(_)
            | FrameError::ReservedNonZero
            | FrameError::TooLarge { .. }
            | FrameError::Checksum
            | FrameError::Malformed(_) => true,
        }
    }
}
