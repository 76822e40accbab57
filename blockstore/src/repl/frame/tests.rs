//! Round trips, stream splitting, one crafted byte string per error, and hostile input.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn block_data() -> impl Strategy<Value = (u32, Bytes)> {
    prop_oneof![
        Just((0u32, Bytes::new())),
        (1u32..8, 1usize..24).prop_flat_map(|(blocks, size)| {
            vec(any::<u8>(), blocks as usize * size).prop_map(move |d| (blocks, Bytes::from(d)))
        }),
    ]
}

fn record_body() -> impl Strategy<Value = (RecordKind, u64, u32, Bytes)> {
    prop_oneof![
        (any::<u64>(), block_data()).prop_map(|(lba, (b, d))| (RecordKind::Write, lba, b, d)),
        (
            prop_oneof![Just(RecordKind::Trim), Just(RecordKind::Zero)],
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(k, lba, b)| (k, lba, b, Bytes::new())),
        (any::<u64>(), vec(any::<u8>(), 0..=MAX_SNAPSHOT_NAME)).prop_map(|(id, name)| (
            RecordKind::Snapshot,
            id,
            0,
            Bytes::from(name)
        )),
        any::<u64>().prop_map(|id| (RecordKind::SnapshotDelete, id, 0, Bytes::new())),
        (1u64..).prop_map(|size| (RecordKind::Grow, size, 0, Bytes::new())),
    ]
}

fn records() -> impl Strategy<Value = Records> {
    let batch = vec((1u64..1000, record_body()), 0..6);
    (any::<u64>(), any::<u64>(), batch).prop_map(|(epoch, prev_lsn, batch)| {
        let prev_lsn = prev_lsn.min(u64::MAX - 10_000);
        let mut lsn = prev_lsn;
        let records = batch
            .into_iter()
            .map(|(gap, (kind, lba, blocks, data))| {
                lsn += gap;
                Record {
                    lsn,
                    kind,
                    lba,
                    blocks,
                    data,
                }
            })
            .collect();
        Records {
            epoch,
            prev_lsn,
            records,
        }
    })
}

fn hello() -> impl Strategy<Value = Hello> {
    let ids = (any::<[u8; 16]>(), any::<[u8; 16]>());
    let rest = (
        any::<u64>(),
        0u8..5,
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<bool>(),
    );
    (ids, rest).prop_map(
        |((volume_uuid, node_id), (epoch, role, durable_lsn, bs, cap, resync_incomplete))| Hello {
            volume_uuid,
            node_id,
            epoch,
            role,
            durable_lsn,
            block_size: bs,
            capacity_blocks: cap,
            resync_incomplete,
        },
    )
}

fn frame() -> impl Strategy<Value = Frame> {
    let extent_data = prop_oneof![
        any::<u32>().prop_map(|b| (b, None)),
        block_data().prop_map(|(b, d)| (b, Some(d))),
    ];
    prop_oneof![
        hello().prop_map(Frame::Hello),
        records().prop_map(Frame::Records),
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, lsn)| Frame::Barrier { epoch, lsn }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(epoch, r, d)| Frame::Ack {
            epoch,
            received_lsn: r,
            durable_lsn: d
        }),
        any::<u64>().prop_map(|epoch| Frame::Fenced { epoch }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, start_lsn)| Frame::ResyncStart { epoch, start_lsn }),
        (any::<u64>(), any::<u64>(), extent_data).prop_map(|(epoch, lba, (blocks, data))| {
            Frame::ResyncExtent {
                epoch,
                lba,
                blocks,
                data,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, end_lsn)| Frame::ResyncDone { epoch, end_lsn }),
        (any::<u64>(), any::<bool>(), any::<u64>()).prop_map(|(epoch, in_sync, primary_lsn)| {
            Frame::PeerState {
                epoch,
                in_sync,
                primary_lsn,
            }
        }),
        (
            any::<u64>(),
            any::<u16>(),
            prop_oneof![
                Just(AccessState::Optimized),
                Just(AccessState::NonOptimized),
                Just(AccessState::Standby),
                Just(AccessState::Unavailable),
                Just(AccessState::Transitioning),
            ],
            vec(any::<u16>(), 0..=MAX_PATH_PORTS)
        )
            .prop_map(|(epoch, path_group, access, relative_ports)| {
                Frame::PathState {
                    epoch,
                    path_group,
                    access,
                    relative_ports,
                }
            }),
    ]
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        encode(f, &mut out);
    }
    out
}

/// Pushes `chunks` one after another, draining after each; panics on a decode error.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Decoder) {
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        dec.push(chunk);
        while let Some(f) = dec.next_frame().expect("valid stream") {
            frames.push(f);
        }
    }
    (frames, dec)
}

proptest! {
    /// Every variant, arbitrary fields: decode(encode(f)) == f, the length is what
    /// `encoded_len` said, and nothing is left buffered.
    #[test]
    fn round_trip(f in frame()) {
        let bytes = encode_all(std::slice::from_ref(&f));
        prop_assert_eq!(bytes.len(), encoded_len(&f));
        let (frames, dec) = decode_chunks([bytes.as_slice()]);
        prop_assert_eq!(frames, vec![f]);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// Several frames in one push, and the same stream split in two at every byte boundary,
    /// and pushed one byte at a time: always the same frames, in order.
    #[test]
    fn split_at_every_boundary(frames in vec(frame(), 1..4)) {
        let bytes = encode_all(&frames);
        let (all, _) = decode_chunks([bytes.as_slice()]);
        prop_assert_eq!(&all, &frames);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            let (got, dec) = decode_chunks([a, b]);
            prop_assert_eq!(&got, &frames, "split at {}", at);
            prop_assert_eq!(dec.buffered(), 0);
        }
        let (bytewise, _) = decode_chunks(bytes.chunks(1));
        prop_assert_eq!(&bytewise, &frames);
    }

    /// Random bytes through the fuzz entry point: no panic (both CRC modes, any split).
    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..600)) {
        fuzz_repl_frame(&input);
    }

    /// Valid streams with bytes overwritten, CRCs repaired: the body parsers see hostile
    /// fields behind a good checksum, and either decode something that re-encodes to itself
    /// or return a typed error.
    #[test]
    fn corrupted_frames_never_panic(
        frames in vec(frame(), 1..3),
        hits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        split in any::<u8>(),
    ) {
        let mut bytes = encode_all(&frames);
        for (at, val) in hits {
            let i = at.index(bytes.len());
            bytes[i] = val;
        }
        let mut input = vec![split | 1];
        input.extend_from_slice(&bytes);
        fuzz_repl_frame(&input);
    }
}

/// A valid frame's bytes with `edit` applied to the body, CRC recomputed.
fn crafted(f: &Frame, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = encode_all(std::slice::from_ref(f));
    let mut body = bytes.split_off(HEADER_LEN);
    edit(&mut body);
    bytes[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..12]), &body);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

fn decode_err(bytes: &[u8]) -> FrameError {
    let mut dec = Decoder::new();
    dec.push(bytes);
    let err = dec.next_frame().expect_err("crafted frame must be refused");
    assert!(err.is_fatal());
    // Poisoned: more (valid) bytes change nothing.
    dec.push(&encode_all(&[Frame::Fenced { epoch: 1 }]));
    assert_eq!(dec.next_frame(), Err(err.clone()));
    assert_eq!(dec.buffered(), 0);
    err
}

fn write(lsn: u64, blocks: u32, data: &'static [u8]) -> Record {
    let kind = RecordKind::Write;
    let data = Bytes::from_static(data);
    Record {
        lsn,
        kind,
        lba: 0,
        blocks,
        data,
    }
}

fn batch(prev_lsn: u64, records: Vec<Record>) -> Frame {
    let epoch = 3;
    Frame::Records(Records {
        epoch,
        prev_lsn,
        records,
    })
}

#[test]
fn header_errors_are_typed() {
    let good = encode_all(&[Frame::Fenced { epoch: 9 }]);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    assert_eq!(decode_err(&with(0, b'X')), FrameError::BadMagic);
    assert_eq!(decode_err(&with(4, 1)), FrameError::UnsupportedVersion(1));
    assert_eq!(decode_err(&with(4, 2)), FrameError::UnsupportedVersion(2));
    assert_eq!(decode_err(&with(4, 3)), FrameError::UnsupportedVersion(3));
    // Version 4 peers (no grow records) are refused at their first frame.
    assert_eq!(decode_err(&with(4, 4)), FrameError::UnsupportedVersion(4));
    assert_eq!(decode_err(&with(4, 6)), FrameError::UnsupportedVersion(6));
    assert_eq!(decode_err(&with(5, 0)), FrameError::UnknownKind(0));
    assert_eq!(decode_err(&with(5, 11)), FrameError::UnknownKind(11));
    assert_eq!(decode_err(&with(7, 1)), FrameError::ReservedNonZero);
    assert_eq!(decode_err(&with(20, 1)), FrameError::Checksum);
    assert_eq!(decode_err(&with(13, 0xA5)), FrameError::Checksum);
}

#[test]
fn huge_length_refused_from_the_header_alone() {
    for len in [MAX_BODY + 1, u32::MAX] {
        let mut header = encode_all(&[Frame::Fenced { epoch: 1 }]);
        header.truncate(HEADER_LEN);
        header[8..12].copy_from_slice(&len.to_le_bytes());
        assert_eq!(decode_err(&header), FrameError::TooLarge { len });
    }
    // The limit itself is accepted: the decoder waits for the body.
    let mut header = encode_all(&[Frame::Fenced { epoch: 1 }]);
    header.truncate(HEADER_LEN);
    header[8..12].copy_from_slice(&MAX_BODY.to_le_bytes());
    let mut dec = Decoder::new();
    dec.push(&header);
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(dec.buffered(), HEADER_LEN);
}

#[test]
fn malformed_bodies_are_typed() {
    let m = |s| FrameError::Malformed(s);
    let fenced = Frame::Fenced { epoch: 1 };
    let short = m("fenced body too short");
    assert_eq!(decode_err(&crafted(&fenced, |b| b.truncate(7))), short);
    let trailing = m("trailing bytes after the body");
    assert_eq!(decode_err(&crafted(&fenced, |b| b.push(0))), trailing);

    let hello = Frame::Hello(Hello {
        volume_uuid: [1; 16],
        node_id: [2; 16],
        epoch: 4,
        role: 1,
        durable_lsn: 5,
        block_size: 4096,
        capacity_blocks: 1 << 20,
        resync_incomplete: false,
    });
    let state = Frame::PeerState {
        epoch: 3,
        in_sync: true,
        primary_lsn: 9,
    };
    let bad_flag = crafted(&state, |b| b[8] = 2);
    assert_eq!(decode_err(&bad_flag), m("peer state in_sync is not 0 or 1"));
    let path = Frame::PathState {
        epoch: 3,
        path_group: 2,
        access: AccessState::Standby,
        relative_ports: vec![257, 258],
    };
    let bad_access = crafted(&path, |b| b[10] = 4);
    assert_eq!(decode_err(&bad_access), m("unknown access state code"));
    let bad_count = crafted(&path, |b| b[11] = 3);
    assert_eq!(
        decode_err(&bad_count),
        m("path state port count does not match the body")
    );
    let bad_role = crafted(&hello, |b| b[40] = 5);
    assert_eq!(decode_err(&bad_role), m("unknown role in hello"));
    let bad_resync = crafted(&hello, |b| b[61] = 2);
    assert_eq!(
        decode_err(&bad_resync),
        m("hello resync flag is not 0 or 1")
    );
    let done = Frame::ResyncDone {
        epoch: 1,
        end_lsn: 9,
    };
    let short_done = crafted(&done, |b| b.truncate(8));
    assert_eq!(decode_err(&short_done), m("resync done body too short"));

    // A declared count that cannot fit is refused before allocating (u32::MAX records of at
    // least 25 bytes would be a 100 GiB Vec).
    let huge_count = crafted(&batch(0, vec![]), |b| b[16..20].copy_from_slice(&[0xFF; 4]));
    assert_eq!(decode_err(&huge_count), m("record count exceeds the body"));
    let one = batch(0, vec![write(1, 1, b"abcd")]);
    let bad_kind = crafted(&one, |b| b[28] = 4);
    assert_eq!(decode_err(&bad_kind), m("unknown record kind"));
    let long_data = crafted(&one, |b| b[41..45].copy_from_slice(&5u32.to_le_bytes()));
    assert_eq!(decode_err(&long_data), m("record data too short"));
    let not_after_prev = batch(1, vec![write(1, 1, b"abcd")]);
    assert_eq!(
        decode_err(&crafted(&not_after_prev, |_| {})),
        m("record LSNs do not increase")
    );
    let backwards = batch(0, vec![write(5, 1, b"ab"), write(4, 1, b"cd")]);
    assert_eq!(
        decode_err(&crafted(&backwards, |_| {})),
        m("record LSNs do not increase")
    );
    let uneven = batch(0, vec![write(1, 3, b"abcd")]);
    let not_blocks = m("data is not a whole number of blocks");
    assert_eq!(decode_err(&crafted(&uneven, |_| {})), not_blocks);
    let empty_write = batch(0, vec![write(1, 2, b"")]);
    assert_eq!(decode_err(&crafted(&empty_write, |_| {})), not_blocks);
    // Snapshot records: no blocks, a bounded name; delete records: nothing but the id.
    let mut snap = write(1, 1, b"abcd");
    snap.kind = RecordKind::Snapshot;
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![snap.clone()]), |_| {})),
        m("a snapshot record with blocks or an overlong name")
    );
    snap.blocks = 0;
    snap.data = Bytes::from(vec![b'n'; MAX_SNAPSHOT_NAME + 1]);
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![snap.clone()]), |_| {})),
        m("a snapshot record with blocks or an overlong name")
    );
    snap.kind = RecordKind::SnapshotDelete;
    snap.data = Bytes::from_static(b"x");
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![snap]), |_| {})),
        m("a snapshot delete record with blocks or data")
    );
    // Grow records: a size and nothing else.
    let mut grow = write(1, 1, b"abcd");
    grow.kind = RecordKind::Grow;
    let bad_grow = m("a grow record with blocks, data or a zero size");
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![grow.clone()]), |_| {})),
        bad_grow
    );
    grow.blocks = 0;
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![grow.clone()]), |_| {})),
        bad_grow
    );
    grow.data = Bytes::new();
    grow.lba = 0;
    assert_eq!(
        decode_err(&crafted(&batch(0, vec![grow.clone()]), |_| {})),
        bad_grow
    );
    grow.lba = 1 << 40;
    let good_grow = batch(0, vec![grow]);
    let bytes = encode_all(std::slice::from_ref(&good_grow));
    assert_eq!(decode_chunks([bytes.as_slice()]).0, vec![good_grow]);
    let mut trim = write(1, 1, b"abcd");
    trim.kind = RecordKind::Trim;
    let trim_data = batch(0, vec![trim]);
    assert_eq!(
        decode_err(&crafted(&trim_data, |_| {})),
        m("data on a trim or zero record")
    );

    let extent = Frame::ResyncExtent {
        epoch: 1,
        lba: 2,
        blocks: 2,
        data: Some(Bytes::from_static(b"abcdef")),
    };
    let bad_flag = crafted(&extent, |b| b[20] = 2);
    assert_eq!(
        decode_err(&bad_flag),
        m("resync extent data flag is not 0 or 1")
    );
    assert_eq!(decode_err(&crafted(&extent, |b| b.push(0))), not_blocks);
    let dealloc_with_data = crafted(&extent, |b| b[20] = 0);
    assert_eq!(decode_err(&dealloc_with_data), trailing);
}

/// The layout other implementations (and old captures) rely on, byte for byte.
#[test]
fn golden_bytes() {
    let bytes = encode_all(&[Frame::Barrier {
        epoch: 7,
        lsn: 0x0102,
    }]);
    let mut expected = b"TRPL".to_vec();
    expected.extend_from_slice(&[VERSION, 3, 0, 0, 16, 0, 0, 0]);
    let body = [7, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&expected), &body);
    expected.extend_from_slice(&crc.to_le_bytes());
    expected.extend_from_slice(&body);
    assert_eq!(bytes, expected);
    assert_eq!(u32::from_le_bytes(*b"TRPL"), MAGIC);
}

/// Record data is a view of the receive buffer, and is exactly the bytes sent.
#[test]
fn record_data_is_shared_not_copied() {
    let f = batch(0, vec![write(1, 2, b"0123"), write(3, 1, b"45")]);
    let (got, _) = decode_chunks([encode_all(std::slice::from_ref(&f)).as_slice()]);
    let Some(Frame::Records(r)) = got.first() else {
        panic!("expected records, got {got:?}");
    };
    assert_eq!(r.records[0].data, Bytes::from_static(b"0123"));
    let gap = r.records[1].data.as_ptr() as usize - r.records[0].data.as_ptr() as usize;
    assert_eq!(gap, 4 + RECORD_HEADER_LEN);
}
