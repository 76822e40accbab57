//! Malformed input: each fault yields its typed error and the right disposition, and the
//! stream stays usable after rejectable errors.

use bytes::{Bytes, BytesMut};

use crate::pdu::*;

fn wire(pdu: &Pdu, digests: Digests) -> Vec<u8> {
    let mut out = BytesMut::new();
    pdu.encode(digests, &mut out).unwrap();
    out.to_vec()
}

fn nop(data: &'static [u8]) -> Pdu {
    Pdu::NopOut(NopOut {
        itt: 1,
        ttt: RESERVED_TAG,
        data: Bytes::from_static(data),
        ..NopOut::default()
    })
}

fn decoder(digests: Digests) -> PduDecoder {
    let mut d = PduDecoder::new();
    d.set_digests(digests);
    d
}

#[test]
fn need_more_reports_missing_bytes() {
    let d = decoder(Digests::NONE);
    assert_eq!(d.decode(&[]), Ok(Decoded::NeedMore { at_least: 48 }));
    let w = wire(&nop(b"12345"), Digests::NONE);
    assert_eq!(d.decode(&w[..10]), Ok(Decoded::NeedMore { at_least: 38 }));
    assert_eq!(d.decode(&w[..48]), Ok(Decoded::NeedMore { at_least: 8 }));
    let d = decoder(Digests::BOTH);
    let w = wire(&nop(b"12345"), Digests::BOTH);
    // Until the header digest is checked, DataSegmentLength is not trusted even as a hint,
    // so the decoder never asks for bytes a corrupted length invented.
    assert_eq!(d.decode(&w[..48]), Ok(Decoded::NeedMore { at_least: 4 }));
    assert_eq!(
        d.decode(&w[..52]),
        Ok(Decoded::NeedMore { at_least: 8 + 4 })
    );
}

#[test]
fn header_digest_error_closes() {
    let mut w = wire(&nop(b"abc"), Digests::BOTH);
    w[20] ^= 1;
    let err = decoder(Digests::BOTH).decode(&w).unwrap_err();
    assert!(matches!(err.error, DecodeError::HeaderDigest { .. }));
    assert_eq!(err.error.fault(), Fault::Corruption);
    assert_eq!(err.skipped, None);
    assert_eq!(err.disposition(), Disposition::Close);
    // A header digest error is reported as soon as the header is in, before the data.
    assert!(decoder(Digests::BOTH).decode(&w[..52]).is_err());
}

#[test]
fn data_digest_error_rejects_and_stream_continues() {
    let mut w = wire(&nop(b"abcdef"), Digests::BOTH);
    let first_len = w.len();
    w[53] ^= 0x80;
    w.extend_from_slice(&wire(&nop(b"ok"), Digests::BOTH));
    let d = decoder(Digests::BOTH);
    let mut buf = BytesMut::from(&w[..]);
    let err = d.decode_from(&mut buf).unwrap_err();
    assert!(matches!(err.error, DecodeError::DataDigest { .. }));
    assert_eq!(
        err.disposition(),
        Disposition::Reject(RejectReason::DataDigestError)
    );
    let skipped = err.skipped.clone().unwrap();
    assert_eq!(skipped.consumed, first_len);
    assert_eq!(&skipped.header[..], &w[..48]);
    let reject = reject_for(&err, StatusSeq::default()).unwrap();
    assert_eq!(reject.reason, RejectReason::DataDigestError);
    assert_eq!(&reject.header[..], &w[..48]);
    // The bad PDU was removed; the next one decodes.
    assert_eq!(d.decode_from(&mut buf).unwrap(), Some(nop(b"ok")));
    assert!(buf.is_empty());
}

#[test]
fn oversized_segment_refused_from_header_alone() {
    let cmd = Pdu::ScsiCommand(ScsiCommand {
        write: true,
        cdb: Bytes::from_static(&[0x2a; 16]),
        data: Bytes::from(vec![0u8; 9000]),
        ..ScsiCommand::default()
    });
    let w = wire(&cmd, Digests::NONE);
    let d = decoder(Digests::NONE);
    let err = d.decode(&w[..48]).unwrap_err();
    assert_eq!(
        err.error,
        DecodeError::DataSegmentTooLong {
            length: 9000,
            limit: 8192
        }
    );
    assert_eq!(err.disposition(), Disposition::Close);
    let mut big = decoder(Digests::NONE);
    big.set_max_recv_data_segment_length(9000);
    assert!(matches!(big.decode(&w), Ok(Decoded::Complete { .. })));
}

#[test]
fn login_pdus_use_login_limit() {
    let mut d = decoder(Digests::NONE);
    d.set_max_recv_data_segment_length(512);
    let login = Pdu::LoginRequest(LoginRequest {
        data: Bytes::from(vec![b'a'; 8192]),
        ..LoginRequest::default()
    });
    assert!(matches!(
        d.decode(&wire(&login, Digests::NONE)),
        Ok(Decoded::Complete { .. })
    ));
    let too_big = Pdu::LoginRequest(LoginRequest {
        data: Bytes::from(vec![b'a'; 8193]),
        ..LoginRequest::default()
    });
    let err = d.decode(&wire(&too_big, Digests::NONE)).unwrap_err();
    assert!(matches!(
        err.error,
        DecodeError::DataSegmentTooLong { limit: 8192, .. }
    ));
    let text = Pdu::TextRequest(TextRequest {
        data: Bytes::from(vec![b'a'; 600]),
        ..TextRequest::default()
    });
    let err = d.decode(&wire(&text, Digests::NONE)).unwrap_err();
    assert!(matches!(
        err.error,
        DecodeError::DataSegmentTooLong { limit: 512, .. }
    ));
}

#[test]
fn unknown_opcode_is_rejected_as_not_supported() {
    let mut w = wire(&nop(b"vendor"), Digests::NONE);
    w[0] = 0x1c; // vendor-specific initiator opcode
    let err = decoder(Digests::NONE).decode(&w).unwrap_err();
    assert_eq!(err.error, DecodeError::UnknownOpcode(0x1c));
    assert_eq!(err.error.fault(), Fault::Unsupported);
    assert_eq!(
        err.disposition(),
        Disposition::Reject(RejectReason::CommandNotSupported)
    );
    assert_eq!(err.skipped.map(|s| s.consumed), Some(w.len()));
}

fn protocol_error(w: &[u8]) -> DecodeError {
    let err = decoder(Digests::NONE).decode(w).unwrap_err();
    assert_eq!(
        err.disposition(),
        Disposition::Reject(RejectReason::ProtocolError),
        "{err:?}"
    );
    err.error
}

#[test]
fn reserved_values_and_misplaced_segments_are_protocol_errors() {
    let login = wire(&Pdu::LoginRequest(LoginRequest::default()), Digests::NONE);
    let mut bad_csg = login.clone();
    bad_csg[1] = 2 << 2;
    assert!(matches!(
        protocol_error(&bad_csg),
        DecodeError::ReservedValue { field: "CSG", .. }
    ));

    let cmd = wire(
        &Pdu::ScsiCommand(ScsiCommand {
            cdb: Bytes::from_static(&[0; 16]),
            ..ScsiCommand::default()
        }),
        Digests::NONE,
    );
    let mut bad_attr = cmd.clone();
    bad_attr[1] = 0x80 | 5;
    assert!(matches!(
        protocol_error(&bad_attr),
        DecodeError::ReservedValue { field: "ATTR", .. }
    ));

    let logout = Pdu::LogoutRequest(LogoutRequest {
        immediate: false,
        reason: LogoutReason::CloseSession,
        itt: 1,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 0,
    });
    let mut bad_reason = wire(&logout, Digests::NONE);
    bad_reason[1] = 0x80 | 3;
    assert!(matches!(
        protocol_error(&bad_reason),
        DecodeError::ReservedValue { .. }
    ));
    let mut with_data = wire(&logout, Digests::NONE);
    with_data[7] = 4;
    with_data.extend_from_slice(&[0; 4]);
    assert!(matches!(
        protocol_error(&with_data),
        DecodeError::UnexpectedDataSegment { .. }
    ));

    let mut nop_ahs = wire(&nop(b""), Digests::NONE);
    nop_ahs[4] = 2;
    nop_ahs.extend_from_slice(&[0, 5, 2, 0, 0, 0, 0, 0]);
    assert!(matches!(
        protocol_error(&nop_ahs),
        DecodeError::UnexpectedAhs { words: 2, .. }
    ));

    let mut bad_ahs = cmd.clone();
    bad_ahs[4] = 1;
    bad_ahs.extend_from_slice(&[0, 9, 1, 0]);
    assert!(matches!(protocol_error(&bad_ahs), DecodeError::BadAhs(_)));
}

#[test]
fn encode_errors() {
    let long_cdb = Pdu::ScsiCommand(ScsiCommand {
        cdb: Bytes::from(vec![0u8; 2000]),
        ..ScsiCommand::default()
    });
    let mut out = BytesMut::new();
    assert_eq!(
        long_cdb.encode(Digests::NONE, &mut out),
        Err(EncodeError::CdbTooLong(2000))
    );
    let huge = Pdu::DataIn(DataIn {
        data: Bytes::from(vec![0u8; MAX_DATA_SEGMENT_LENGTH as usize + 1]),
        ..DataIn::default()
    });
    assert!(matches!(
        huge.encode(Digests::NONE, &mut out),
        Err(EncodeError::DataSegmentTooLong(_))
    ));
    assert!(out.is_empty(), "nothing is written on error");
}

#[test]
fn short_cdb_is_zero_padded() {
    let cmd = Pdu::ScsiCommand(ScsiCommand {
        cdb: Bytes::from_static(&[0x00, 0, 0, 0, 0, 0]),
        ..ScsiCommand::default()
    });
    let w = wire(&cmd, Digests::NONE);
    assert_eq!(w.len(), 48);
    let Ok(Decoded::Complete {
        pdu: Pdu::ScsiCommand(back),
        ..
    }) = decoder(Digests::NONE).decode(&w)
    else {
        panic!("decode failed");
    };
    assert_eq!(back.cdb.as_ref(), &[0u8; 16]);
}

#[test]
fn itt_accessor() {
    assert_eq!(nop(b"").itt(), Some(1));
    let reject = Pdu::Reject(build_reject(
        RejectReason::ProtocolError,
        &[],
        StatusSeq::default(),
    ));
    assert_eq!(reject.itt(), None);
}
