//! Byte-exact checks against the PDU layouts of RFC 7143 section 11 (the same offsets as
//! the Linux kernel's include/scsi/iscsi_proto.h structs).

use bytes::{Bytes, BytesMut};

use crate::pdu::*;

fn wire(pdu: &Pdu, digests: Digests) -> Vec<u8> {
    let mut out = BytesMut::new();
    pdu.encode(digests, &mut out).unwrap();
    out.to_vec()
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The SCSI Read (10) command PDU of RFC 7143 Appendix B.4, with its header digest.
const RFC_READ10: [u8; 48] = [
    0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
    0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const RFC_READ10_DIGEST: [u8; 4] = [0x56, 0x3a, 0x96, 0xd9];

#[test]
fn rfc_appendix_b4_read10_with_header_digest() {
    let mut bytes = RFC_READ10.to_vec();
    bytes.extend_from_slice(&RFC_READ10_DIGEST);
    let mut dec = PduDecoder::new();
    dec.set_digests(Digests::BOTH);
    let Decoded::Complete { pdu, consumed } = dec.decode(&bytes).unwrap() else {
        panic!("incomplete");
    };
    assert_eq!(consumed, 52);
    let Pdu::ScsiCommand(cmd) = &pdu else {
        panic!("not a command: {pdu:?}");
    };
    assert!(cmd.final_ && cmd.read && !cmd.write && !cmd.immediate);
    assert_eq!(cmd.attr, TaskAttribute::Untagged);
    assert_eq!(cmd.itt, 0x1400_0000);
    assert_eq!(cmd.expected_data_transfer_length, 1024);
    assert_eq!((cmd.cmd_sn, cmd.exp_stat_sn), (0x14, 0x18));
    assert_eq!(cmd.cdb[0], 0x28);
    assert_eq!(cmd.cdb[8], 0x02);
    assert_eq!(cmd.cdb.len(), 16);
    // Our encoder reproduces the RFC bytes and digest exactly.
    assert_eq!(wire(&pdu, Digests::BOTH), bytes);
}

#[test]
fn login_request_and_response_offsets() {
    let req = Pdu::LoginRequest(LoginRequest {
        transit: true,
        continue_: false,
        csg: Stage::OperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 1, 2, 3, 4, 5],
        tsih: 0x0102,
        itt: 0xAABB_CCDD,
        cid: 0x0304,
        cmd_sn: 7,
        exp_stat_sn: 9,
        data: Bytes::from_static(b"A=B\0"),
    });
    let w = wire(&req, Digests::NONE);
    assert_eq!(w[0], 0x43, "I bit is always set on Login Request");
    assert_eq!(w[1], 0x80 | (1 << 2) | 3, "T|CSG=1|NSG=3");
    assert_eq!(&w[5..8], &[0, 0, 4]);
    assert_eq!(&w[8..14], &[0x80, 1, 2, 3, 4, 5]);
    assert_eq!(&w[14..16], &[1, 2]);
    assert_eq!(be32(&w, 16), 0xAABB_CCDD);
    assert_eq!(&w[20..24], &[3, 4, 0, 0]);
    assert_eq!((be32(&w, 24), be32(&w, 28)), (7, 9));
    assert_eq!(&w[48..], b"A=B\0");

    let status = crate::login::LoginStatus::AUTHENTICATION_FAILURE;
    let (class, detail) = (status.class, status.detail);
    let rsp = Pdu::LoginResponse(LoginResponse {
        continue_: true,
        csg: Stage::SecurityNegotiation,
        nsg: Stage::OperationalNegotiation,
        version_active: 0,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        status_class: class,
        status_detail: detail,
        ..LoginResponse::default()
    });
    let w = wire(&rsp, Digests::NONE);
    assert_eq!(w[0], 0x23);
    assert_eq!(w[1], 0x40 | 1, "C|CSG=0|NSG=1");
    assert_eq!((be32(&w, 24), be32(&w, 28), be32(&w, 32)), (1, 2, 3));
    assert_eq!(&w[36..38], &[0x02, 0x01]);
}

#[test]
fn data_in_with_status_and_padding() {
    let pdu = Pdu::DataIn(DataIn {
        final_: true,
        underflow: true,
        status: Some(0x02),
        itt: 5,
        ttt: RESERVED_TAG,
        data_sn: 0x11,
        buffer_offset: 0x22,
        residual_count: 0x33,
        data: Bytes::from_static(&[9, 9, 9, 9, 9]),
        ..DataIn::default()
    });
    let w = wire(&pdu, Digests::NONE);
    assert_eq!(w[0], 0x25);
    assert_eq!(w[1], 0x80 | 0x02 | 0x01, "F|U|S");
    assert_eq!(w[3], 0x02, "status byte");
    assert_eq!(&w[5..8], &[0, 0, 5], "DataSegmentLength excludes padding");
    assert_eq!(be32(&w, 20), 0xFFFF_FFFF);
    assert_eq!(
        (be32(&w, 36), be32(&w, 40), be32(&w, 44)),
        (0x11, 0x22, 0x33)
    );
    assert_eq!(w.len(), 48 + 8);
    assert_eq!(&w[53..], &[0, 0, 0], "zero padding to 4 bytes");
}

#[test]
fn scsi_response_r2t_and_tmf_offsets() {
    let rsp = Pdu::ScsiResponse(ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: false,
        underflow: true,
        response: ServiceResponse::CommandCompleted,
        status: 0x02,
        itt: 1,
        snack_tag: 0,
        stat_sn: 2,
        exp_cmd_sn: 3,
        max_cmd_sn: 4,
        exp_data_sn: 5,
        bidi_read_residual_count: 6,
        residual_count: 7,
        data: Bytes::new(),
    });
    let w = wire(&rsp, Digests::NONE);
    assert_eq!(&w[..4], &[0x21, 0x82, 0x00, 0x02]);
    let words: Vec<u32> = (24..48).step_by(4).map(|at| be32(&w, at)).collect();
    assert_eq!(words, [2, 3, 4, 5, 6, 7]);

    let r2t = Pdu::R2t(R2t {
        ttt: 0x10,
        r2t_sn: 1,
        buffer_offset: 8192,
        desired_data_transfer_length: 65536,
        ..R2t::default()
    });
    let w = wire(&r2t, Digests::NONE);
    assert_eq!(&w[..2], &[0x31, 0x80]);
    assert_eq!(be32(&w, 20), 0x10);
    assert_eq!((be32(&w, 36), be32(&w, 40), be32(&w, 44)), (1, 8192, 65536));

    let tmf = Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::AbortTask,
        lun: Lun::from_index(2),
        itt: 9,
        referenced_task_tag: 4,
        cmd_sn: 1,
        exp_stat_sn: 2,
        ref_cmd_sn: 3,
        exp_data_sn: 6,
    });
    let w = wire(&tmf, Digests::NONE);
    assert_eq!(&w[..2], &[0x42, 0x81]);
    assert_eq!(&w[8..10], &[0, 2]);
    assert_eq!((be32(&w, 20), be32(&w, 32), be32(&w, 36)), (4, 3, 6));
}

#[test]
fn reject_async_logout_snack_offsets() {
    let seq = StatusSeq {
        stat_sn: 10,
        exp_cmd_sn: 11,
        max_cmd_sn: 12,
    };
    let reject = Pdu::Reject(build_reject(
        RejectReason::DataDigestError,
        &RFC_READ10,
        seq,
    ));
    let w = wire(&reject, Digests::NONE);
    assert_eq!(&w[..4], &[0x3f, 0x80, 0x02, 0x00]);
    assert_eq!(&w[5..8], &[0, 0, 48]);
    assert_eq!(be32(&w, 16), 0xFFFF_FFFF);
    assert_eq!((be32(&w, 24), be32(&w, 28), be32(&w, 32)), (10, 11, 12));
    assert_eq!(&w[48..], &RFC_READ10);

    let msg = Pdu::AsyncMessage(AsyncMessage {
        lun: Lun::default(),
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        event: AsyncEvent::RequestLogout,
        vendor_code: 0,
        parameter1: 0,
        parameter2: 0x0002,
        parameter3: 0x0014,
        data: Bytes::new(),
    });
    let w = wire(&msg, Digests::NONE);
    assert_eq!(&w[..2], &[0x32, 0x80]);
    assert_eq!(be32(&w, 16), 0xFFFF_FFFF);
    assert_eq!(&w[36..44], &[1, 0, 0, 0, 0, 2, 0, 0x14]);

    let logout = Pdu::LogoutResponse(LogoutResponse {
        response: LogoutResponseCode::Success,
        itt: 3,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        time2wait: 2,
        time2retain: 20,
    });
    let w = wire(&logout, Digests::NONE);
    assert_eq!(&w[..4], &[0x26, 0x80, 0, 0]);
    assert_eq!(&w[40..44], &[0, 2, 0, 20]);

    let snack = Pdu::SnackRequest(SnackRequest {
        snack_type: SnackType::Status,
        lun: Lun::default(),
        itt: 1,
        ttt_or_snack_tag: 2,
        exp_stat_sn: 3,
        beg_run: 4,
        run_length: 5,
    });
    let w = wire(&snack, Digests::NONE);
    assert_eq!(&w[..2], &[0x10, 0x81]);
    assert_eq!(
        (be32(&w, 20), be32(&w, 28), be32(&w, 40), be32(&w, 44)),
        (2, 3, 4, 5)
    );
}

#[test]
fn extended_cdb_and_bidi_ahs_on_the_wire() {
    let cdb: Vec<u8> = (0u8..32).collect();
    let cmd = Pdu::ScsiCommand(ScsiCommand {
        read: true,
        write: true,
        cdb: Bytes::from(cdb.clone()),
        bidi_read_length: Some(4096),
        ..ScsiCommand::default()
    });
    let w = wire(&cmd, Digests::NONE);
    assert_eq!(
        w[4], 7,
        "TotalAHSLength: 20-byte CDB AHS + 8-byte bidi AHS = 7 words"
    );
    assert_eq!(&w[32..48], &cdb[..16]);
    assert_eq!(&w[48..52], &[0, 17, 1, 0]);
    assert_eq!(&w[52..68], &cdb[16..]);
    assert_eq!(&w[68..76], &[0, 5, 2, 0, 0, 0, 0x10, 0]);
    assert_eq!(w.len(), 76);
}

#[test]
fn digest_placement() {
    // No data segment: only the header digest is present.
    let nop = Pdu::NopOut(NopOut {
        itt: 1,
        ttt: RESERVED_TAG,
        ..NopOut::default()
    });
    let w = wire(&nop, Digests::BOTH);
    assert_eq!(w.len(), 52);
    assert_eq!(&w[48..], &crc32c::crc32c(&w[..48]).to_le_bytes());
    // With data: header digest after BHS, data digest over data + padding.
    let nop = Pdu::NopOut(NopOut {
        data: Bytes::from_static(b"ping!"),
        ..NopOut::default()
    });
    let w = wire(&nop, Digests::BOTH);
    assert_eq!(w.len(), 48 + 4 + 8 + 4);
    assert_eq!(&w[52..60], b"ping!\0\0\0");
    assert_eq!(&w[60..], &crc32c::crc32c(&w[52..60]).to_le_bytes());
}
