//! Frame encoder: typed frames to bytes.
//!
//! Encoding cannot fail: the caller builds frames from its own state. It does not validate them
//! either; a frame the decoder would refuse (data on a trim, LSNs out of order, a body over
//! [`MAX_BODY`]) is the sender's bug and the peer refuses it. [`encoded_len`] lets the sender
//! keep batches under the limit.

#[cfg(any(test, feature = "fuzz"))]
use super::MAX_BODY;
use super::VERSION;
use super::{kind, Frame, Record, HEADER_LEN, MAGIC, RECORDS_HEADER_LEN, RECORD_HEADER_LEN};

/// Bytes [`encode`] appends for `frame`, header included.
pub fn encoded_len(frame: &Frame) -> usize {
    HEADER_LEN + body_len(frame)
}

fn body_len(frame: &Frame) -> usize {
    match frame {
        Frame::Hello(_) => 16 + 16 + 8 + 1 + 8 + 4 + 8 + 1,
        Frame::Records(r) => {
            RECORDS_HEADER_LEN
                + r.records
                    .iter()
                    .map(|rec| RECORD_HEADER_LEN + rec.data.len())
                    .sum::<usize>()
        }
        Frame::Barrier { .. } | Frame::ResyncStart { .. } | Frame::ResyncDone { .. } => 16,
        Frame::Ack { .. } => 24,
        Frame::PeerState { .. } => 17,
        Frame::PathState { relative_ports, .. } => {
            8 + 2 + 1 + 1 + 2 * relative_ports.len().min(super::MAX_PATH_PORTS)
        }
        Frame::Fenced { .. } => 8,
        Frame::ResyncExtent { data, .. } => 8 + 8 + 4 + 1 + data.as_ref().map_or(0, |d| d.len()),
    }
}

fn kind_code(frame: &Frame) -> u8 {
    match frame {
        Frame::Hello(_) => kind::HELLO,
        Frame::Records(_) => kind::RECORDS,
        Frame::Barrier { .. } => kind::BARRIER,
        Frame::Ack { .. } => kind::ACK,
        Frame::Fenced { .. } => kind::FENCED,
        Frame::ResyncStart { .. } => kind::RESYNC_START,
        Frame::ResyncExtent { .. } => kind::RESYNC_EXTENT,
        Frame::ResyncDone { .. } => kind::RESYNC_DONE,
        Frame::PeerState { .. } => kind::PEER_STATE,
        Frame::PathState { .. } => kind::PATH_STATE,
    }
}

/// Length fields are u32 on the wire; anything longer is already far over [`MAX_BODY`], so
/// saturating makes the peer refuse the frame instead of misreading a wrapped length.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Appends one frame to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(encoded_len(frame));
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.push(kind_code(frame));
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&len32(body_len(frame)).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled in below
    encode_body(frame, out);
    seal(out, start);
}

/// Computes the CRC of the frame at `start` (header up to the CRC, then everything after the
/// header) and writes it into the header.
fn seal(out: &mut [u8], start: usize) {
    let Some(frame) = out.get_mut(start..) else {
        return;
    };
    let (head, body) = frame.split_at_mut(HEADER_LEN.min(frame.len()));
    let crc = crc32c::crc32c_append(crc32c::crc32c(head.get(..12).unwrap_or_default()), body);
    if let Some(field) = head.get_mut(12..16) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
}

fn encode_body(frame: &Frame, out: &mut Vec<u8>) {
    let u64s = |out: &mut Vec<u8>, vals: &[u64]| {
        for v in vals {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    match frame {
        Frame::Hello(h) => {
            out.extend_from_slice(&h.volume_uuid);
            out.extend_from_slice(&h.node_id);
            out.extend_from_slice(&h.epoch.to_le_bytes());
            out.push(h.role);
            out.extend_from_slice(&h.durable_lsn.to_le_bytes());
            out.extend_from_slice(&h.block_size.to_le_bytes());
            out.extend_from_slice(&h.capacity_blocks.to_le_bytes());
            out.push(u8::from(h.resync_incomplete));
        }
        Frame::Records(r) => {
            u64s(out, &[r.epoch, r.prev_lsn]);
            out.extend_from_slice(&len32(r.records.len()).to_le_bytes());
            for rec in &r.records {
                encode_record(rec, out);
            }
        }
        Frame::Barrier { epoch, lsn } => u64s(out, &[*epoch, *lsn]),
        Frame::Ack {
            epoch,
            received_lsn,
            durable_lsn,
        } => u64s(out, &[*epoch, *received_lsn, *durable_lsn]),
        Frame::Fenced { epoch } => u64s(out, &[*epoch]),
        Frame::ResyncDone { epoch, end_lsn } => u64s(out, &[*epoch, *end_lsn]),
        Frame::PeerState {
            epoch,
            in_sync,
            primary_lsn,
        } => {
            u64s(out, &[*epoch]);
            out.push(u8::from(*in_sync));
            u64s(out, &[*primary_lsn]);
        }
        Frame::PathState {
            epoch,
            path_group,
            access,
            relative_ports,
        } => {
            // More ports than the count can say are left out (a node has at most 255 portals).
            let ports = &relative_ports[..relative_ports.len().min(super::MAX_PATH_PORTS)];
            u64s(out, &[*epoch]);
            out.extend_from_slice(&path_group.to_le_bytes());
            out.push(super::access_code(*access));
            out.push(ports.len() as u8);
            for p in ports {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        Frame::ResyncStart { epoch, start_lsn } => u64s(out, &[*epoch, *start_lsn]),
        Frame::ResyncExtent {
            epoch,
            lba,
            blocks,
            data,
        } => {
            u64s(out, &[*epoch, *lba]);
            out.extend_from_slice(&blocks.to_le_bytes());
            out.push(u8::from(data.is_some()));
            if let Some(d) = data {
                out.extend_from_slice(d);
            }
        }
    }
}

fn encode_record(rec: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&rec.lsn.to_le_bytes());
    out.push(rec.kind.code());
    out.extend_from_slice(&rec.lba.to_le_bytes());
    out.extend_from_slice(&rec.blocks.to_le_bytes());
    out.extend_from_slice(&len32(rec.data.len()).to_le_bytes());
    out.extend_from_slice(&rec.data);
}

/// Rewrites the CRC of every whole frame in `buf` (walking the body lengths, stopping at the
/// first implausible one), so fuzz input reaches the body parsers.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn fix_crcs(buf: &mut [u8]) {
    let mut at = 0usize;
    while let Some(len) = buf.get(at + 8..at + 12) {
        let Ok(len) = <[u8; 4]>::try_from(len).map(u32::from_le_bytes) else {
            return;
        };
        if len > MAX_BODY {
            return;
        }
        let end = at + HEADER_LEN + len as usize;
        let Some(frame) = buf.get_mut(at..end) else {
            return;
        };
        seal(frame, 0);
        at = end;
    }
}
