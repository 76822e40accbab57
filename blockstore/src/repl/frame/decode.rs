//! Streaming frame decoder: bytes in as they arrive, frames out.
//!
//! Order of checks, each before the next costs anything: the 16-byte header (magic, version,
//! kind, reserved, length) before the body is buffered, so a hostile length is refused without
//! allocating it; the CRC before the body is parsed; the body's fields with nom, bounded by the
//! bytes actually present (a declared record count that cannot fit is refused before any
//! allocation). Every failure is a [`FrameError`]; nothing here indexes or panics.

use bytes::{Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{le_u16, le_u32, le_u64, le_u8};
use nom::Parser;

use super::{
    access_from_code, kind, Frame, FrameError, Hello, Record, RecordKind, Records, HEADER_LEN,
    MAGIC, MAX_BODY, MAX_SNAPSHOT_NAME, RECORD_HEADER_LEN, VERSION,
};
use crate::Role;

type In<'a> = &'a [u8];
type NomError<'a> = nom::error::Error<In<'a>>;

/// Decodes the frames of one connection. Feed it with [`Decoder::push`], drain it with
/// [`Decoder::next_frame`] until `Ok(None)`.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Received bytes not yet decoded.
    buf: BytesMut,
    /// The first error; once set the stream cannot be trusted and every call returns it.
    failed: Option<FrameError>,
}

impl Decoder {
    /// An empty decoder for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers received bytes. Ignored once the decoder has failed (the connection is over).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After an error the
    /// decoder is poisoned: it drops its buffer and returns the same error from then on.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.decode_one().inspect_err(|e| {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        })
    }

    /// Bytes received and not yet returned as frames (for the driver's flow control).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn decode_one(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (kind, body_len, crc) = check_header(header)?;
        // Cannot overflow: body_len <= MAX_BODY was checked.
        let total = HEADER_LEN + body_len as usize;
        if self.buf.len() < total {
            // The length is checked, so reserving the whole frame now is safe and saves
            // regrowing the buffer as the body trickles in.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let body = frame.slice(HEADER_LEN..);
        let summed =
            crc32c::crc32c_append(crc32c::crc32c(frame.get(..12).unwrap_or_default()), &body);
        if summed != crc {
            return Err(FrameError::Checksum);
        }
        parse_body(kind, &body).map(Some)
    }
}

/// Validates the fixed header; returns (kind, body_len, crc).
fn check_header(header: &[u8; HEADER_LEN]) -> Result<(u8, u32, u32), FrameError> {
    let (_, (magic, version, kind, reserved, body_len, crc)) = fields(
        header.as_slice(),
        (le_u32, le_u8, le_u8, le_u16, le_u32, le_u32),
        "header",
    )?;
    if magic != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    if !(kind::HELLO..=kind::PATH_STATE).contains(&kind) {
        return Err(FrameError::UnknownKind(kind));
    }
    if reserved != 0 {
        return Err(FrameError::ReservedNonZero);
    }
    if body_len > MAX_BODY {
        return Err(FrameError::TooLarge { len: body_len });
    }
    Ok((kind, body_len, crc))
}

/// Runs a nom parser over `input`. The one place a nom failure becomes a [`FrameError`]: on
/// complete input it can only mean the body is shorter than the fields `what` needs.
fn fields<'a, P>(
    input: In<'a>,
    mut parser: P,
    what: &'static str,
) -> Result<(In<'a>, P::Output), FrameError>
where
    P: Parser<In<'a>, Error = NomError<'a>>,
{
    parser.parse(input).map_err(|_| FrameError::Malformed(what))
}

/// Refuses bytes left over after the last field.
fn end(rest: In<'_>) -> Result<(), FrameError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Malformed("trailing bytes after the body"))
    }
}

/// The `len` bytes of `body` that end where `rest` (a suffix of `body`) begins, sharing the
/// receive buffer instead of copying.
fn share(body: &Bytes, rest: In<'_>, len: usize) -> Result<Bytes, FrameError> {
    let end = body.len().checked_sub(rest.len());
    let start = end.and_then(|e| e.checked_sub(len));
    match (start, end) {
        (Some(start), Some(end)) => Ok(body.slice(start..end)),
        _ => Err(FrameError::Malformed("data outside the body")),
    }
}

/// The data rule shared by write records and resync extents: `blocks` whole blocks of some
/// size the decoder does not know, so non-empty and a multiple of `blocks` (empty for none).
fn check_block_data(blocks: u32, len: usize) -> Result<(), FrameError> {
    let ok = match usize::try_from(blocks) {
        Ok(0) => len == 0,
        Ok(b) => len > 0 && len.is_multiple_of(b),
        Err(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(FrameError::Malformed(
            "data is not a whole number of blocks",
        ))
    }
}

fn parse_body(kind: u8, body: &Bytes) -> Result<Frame, FrameError> {
    let epoch_only = |what| -> Result<u64, FrameError> {
        let (rest, epoch) = fields(body, le_u64, what)?;
        end(rest)?;
        Ok(epoch)
    };
    let two = |what| -> Result<(u64, u64), FrameError> {
        let (rest, v) = fields(body, (le_u64, le_u64), what)?;
        end(rest)?;
        Ok(v)
    };
    Ok(match kind {
        kind::HELLO => Frame::Hello(parse_hello(body)?),
        kind::RECORDS => Frame::Records(parse_records(body)?),
        kind::BARRIER => {
            let (epoch, lsn) = two("barrier body too short")?;
            Frame::Barrier { epoch, lsn }
        }
        kind::ACK => {
            let (rest, (epoch, received_lsn, durable_lsn)) =
                fields(body, (le_u64, le_u64, le_u64), "ack body too short")?;
            end(rest)?;
            Frame::Ack {
                epoch,
                received_lsn,
                durable_lsn,
            }
        }
        kind::FENCED => Frame::Fenced {
            epoch: epoch_only("fenced body too short")?,
        },
        kind::RESYNC_START => {
            let (epoch, start_lsn) = two("resync start body too short")?;
            Frame::ResyncStart { epoch, start_lsn }
        }
        kind::RESYNC_EXTENT => parse_extent(body)?,
        kind::RESYNC_DONE => {
            let (epoch, end_lsn) = two("resync done body too short")?;
            Frame::ResyncDone { epoch, end_lsn }
        }
        kind::PEER_STATE => {
            let (rest, (epoch, in_sync, primary_lsn)) =
                fields(body, (le_u64, le_u8, le_u64), "peer state body too short")?;
            end(rest)?;
            let in_sync = match in_sync {
                0 => false,
                1 => true,
                _ => return Err(FrameError::Malformed("peer state in_sync is not 0 or 1")),
            };
            Frame::PeerState {
                epoch,
                in_sync,
                primary_lsn,
            }
        }
        kind::PATH_STATE => parse_path_state(body)?,
        other => return Err(FrameError::UnknownKind(other)),
    })
}

fn parse_hello(body: In<'_>) -> Result<Hello, FrameError> {
    let uuid = take(16usize).map_opt(|s: In<'_>| <[u8; 16]>::try_from(s).ok());
    let node = take(16usize).map_opt(|s: In<'_>| <[u8; 16]>::try_from(s).ok());
    let (
        rest,
        (volume_uuid, node_id, epoch, role, durable_lsn, block_size, capacity_blocks, resync),
    ) = fields(
        body,
        (uuid, node, le_u64, le_u8, le_u64, le_u32, le_u64, le_u8),
        "hello body too short",
    )?;
    end(rest)?;
    if Role::from_u8(role).is_none() {
        return Err(FrameError::Malformed("unknown role in hello"));
    }
    let resync_incomplete = match resync {
        0 => false,
        1 => true,
        _ => return Err(FrameError::Malformed("hello resync flag is not 0 or 1")),
    };
    Ok(Hello {
        volume_uuid,
        node_id,
        epoch,
        role,
        durable_lsn,
        block_size,
        capacity_blocks,
        resync_incomplete,
    })
}

fn parse_path_state(body: In<'_>) -> Result<Frame, FrameError> {
    let (rest, (epoch, path_group, access, count)) = fields(
        body,
        (le_u64, le_u16, le_u8, le_u8),
        "path state body too short",
    )?;
    let access =
        access_from_code(access).ok_or(FrameError::Malformed("unknown access state code"))?;
    // The count is one byte: at most 255 ports, checked against the body before anything is
    // allocated.
    let count = usize::from(count);
    if rest.len() != 2 * count {
        return Err(FrameError::Malformed(
            "path state port count does not match the body",
        ));
    }
    let (rest, relative_ports) = fields(
        rest,
        nom::multi::count(le_u16, count),
        "path state ports too short",
    )?;
    end(rest)?;
    Ok(Frame::PathState {
        epoch,
        path_group,
        access,
        relative_ports,
    })
}

fn parse_records(body: &Bytes) -> Result<Records, FrameError> {
    let (mut rest, (epoch, prev_lsn, count)) =
        fields(body, (le_u64, le_u64, le_u32), "records header too short")?;
    // Every record takes at least RECORD_HEADER_LEN bytes: a count that cannot fit in what is
    // left is refused before anything is allocated for it.
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > rest.len() / RECORD_HEADER_LEN {
        return Err(FrameError::Malformed("record count exceeds the body"));
    }
    let mut records = Vec::with_capacity(count);
    let mut last = prev_lsn;
    for _ in 0..count {
        let (after, (lsn, code, lba, blocks, data_len)) = fields(
            rest,
            (le_u64, le_u8, le_u64, le_u32, le_u32),
            "record header too short",
        )?;
        let (after, data) = fields(after, take(data_len), "record data too short")?;
        let kind =
            RecordKind::from_code(code).ok_or(FrameError::Malformed("unknown record kind"))?;
        if lsn <= last {
            return Err(FrameError::Malformed("record LSNs do not increase"));
        }
        match kind {
            RecordKind::Write => check_block_data(blocks, data.len())?,
            RecordKind::Trim | RecordKind::Zero if data.is_empty() => {}
            RecordKind::Trim | RecordKind::Zero => {
                return Err(FrameError::Malformed("data on a trim or zero record"))
            }
            RecordKind::Snapshot if blocks == 0 && data.len() <= MAX_SNAPSHOT_NAME => {}
            RecordKind::Snapshot => {
                return Err(FrameError::Malformed(
                    "a snapshot record with blocks or an overlong name",
                ))
            }
            RecordKind::SnapshotDelete if blocks == 0 && data.is_empty() => {}
            RecordKind::SnapshotDelete => {
                return Err(FrameError::Malformed(
                    "a snapshot delete record with blocks or data",
                ))
            }
            RecordKind::Grow if blocks == 0 && data.is_empty() && lba != 0 => {}
            RecordKind::Grow => {
                return Err(FrameError::Malformed(
                    "a grow record with blocks, data or a zero size",
                ))
            }
        }
        records.push(Record {
            lsn,
            kind,
            lba,
            blocks,
            data: share(body, after, data.len())?,
        });
        last = lsn;
        rest = after;
    }
    end(rest)?;
    Ok(Records {
        epoch,
        prev_lsn,
        records,
    })
}

fn parse_extent(body: &Bytes) -> Result<Frame, FrameError> {
    let (rest, (epoch, lba, blocks, has_data)) = fields(
        body,
        (le_u64, le_u64, le_u32, le_u8),
        "resync extent header too short",
    )?;
    let data = match has_data {
        0 => {
            end(rest)?;
            None
        }
        1 => {
            check_block_data(blocks, rest.len())?;
            Some(share(body, &[], rest.len())?)
        }
        _ => {
            return Err(FrameError::Malformed(
                "resync extent data flag is not 0 or 1",
            ))
        }
    };
    Ok(Frame::ResyncExtent {
        epoch,
        lba,
        blocks,
        data,
    })
}
