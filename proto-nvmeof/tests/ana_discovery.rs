//! ANA states, async events, discovery log, connect refusals and transport errors.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use proto_nvmeof::discovery::{SubsystemType, DISC_ENTRY_LEN, DISC_HEADER_LEN};
use proto_nvmeof::fabrics::CNTLID_DYNAMIC;
use proto_nvmeof::logpage::{lid, LogRequest};
use proto_nvmeof::pdu::{CapsuleCmd, Digests, Fes, Pdu};
use proto_nvmeof::{
    AddressFamily, AnaState, CloseReason, Cqe, DiscoveryEntry, Portal, Sqe, Status, TargetConfig,
    DISCOVERY_NQN,
};

fn get_log(
    h: &mut Host,
    t: &mut Target,
    lid: u8,
    offset: u64,
    len: u64,
    rae: bool,
) -> (Vec<u8>, Status) {
    let cid = h.cid();
    let sqe = LogRequest {
        lid,
        lsp: 0,
        rae,
        len,
        offset,
        csi: 0,
    }
    .encode(cid, 0xFFFF_FFFF);
    let (data, cqe) = h.read_cmd(t, sqe, len as u32);
    (data, cqe.unwrap().status)
}

fn enable_aens(h: &mut Host, t: &mut Target) {
    let cqe = h.admin_nodata(t, 0x09, 0x0B, 0x0000_0900);
    assert!(cqe.status.is_success());
}

fn send_aer(h: &mut Host, t: &mut Target) -> (u16, Vec<Pdu>) {
    let cid = h.cid();
    (cid, h.command(t, Sqe::new(0x0C, cid), &[]))
}

/// libnvme's `nvme ana-log` asks for the size computed from Identify Controller (16 + 32 *
/// NANAGRPID + 4 * MNAN bytes) in 4 KiB pieces at increasing offsets: every piece is served.
#[test]
fn ana_log_reads_in_pieces_up_to_the_identify_size() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (mut admin, _cntlid) = admin_host(&mut t, now);
    let cfg = TargetConfig::default();
    let size = 16 + 32 * u64::from(cfg.anagrpmax) + 4 * u64::from(cfg.mnan.min(cfg.max_nsid));
    assert!(size > 4096, "the read must take several pieces");
    let mut log = Vec::new();
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(4096);
        let (piece, st) = get_log(&mut admin, &mut t, lid::ANA, offset, len, true);
        assert!(st.is_success(), "piece at offset {offset}: {st:?}");
        log.extend_from_slice(&piece);
        offset += len;
    }
    assert_eq!(le16(&log, 8), 1); // NGRPS
    assert_eq!(log[32], 0x01); // optimized
    assert!(
        log[52..].iter().all(|&b| b == 0),
        "the unused tail reads as zeros"
    );
    let (_, st) = get_log(&mut admin, &mut t, lid::ANA, size + 4, 4, false);
    assert!(!st.is_success(), "an offset past the log's size is refused");
}

#[test]
fn ana_change_completes_held_aer_and_bumps_chgcnt() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (mut admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    enable_aens(&mut admin, &mut t);

    let (log1, st) = get_log(&mut admin, &mut t, lid::ANA, 0, 4096, false);
    assert!(st.is_success());
    let chg1 = le64(&log1, 0);
    assert_eq!(le16(&log1, 8), 1); // NGRPS
    assert_eq!(le32(&log1, 16), 1); // ANAGRPID
    assert_eq!(le32(&log1, 20), 1); // NNSIDS
    assert_eq!(log1[32], 0x01); // optimized
    assert_eq!(le32(&log1, 48), 1); // NSID 1

    // AER is held: nothing comes back
    let (aer_cid, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());

    // this node's group becomes inaccessible
    let mut s = subsystem();
    s.set_ana_state(1, AnaState::Inaccessible);
    let snap = Arc::new(s);
    t.reg.set_subsystem(Arc::clone(&snap));
    admin.conn.update_subsystem(Arc::clone(&snap));
    io.conn.update_subsystem(Arc::clone(&snap));
    let cqe = single_cqe(&admin.recv());
    assert_eq!(cqe.cid, aer_cid);
    assert_eq!(cqe.dw0(), 0x000C_0302); // notice, ANA change, log 0Ch

    // I/O now fails over: 0x302 with DNR clear
    let cid = io.cid();
    let cqe = single_cqe(&io.command(&mut t, rw_sqe(0x02, cid, 1, 0, 1, false), &[]));
    assert_eq!(cqe.status, Status::ANA_INACCESSIBLE);
    assert!(!cqe.status.is_dnr());
    // and the driver hears of the refusal (the node counts it)
    assert_eq!(io.path_refused, vec![(1, Status::ANA_INACCESSIBLE)]);

    let (log2, _) = get_log(&mut admin, &mut t, lid::ANA, 0, 4096, false);
    assert_ne!(le64(&log2, 0), chg1, "CHGCNT must change");
    assert_eq!(log2[32], 0x03);

    // a further change with a new AER outstanding is reported again after the log read
    let (aer2, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());
    let mut s = (*snap).clone();
    s.set_ana_state(1, AnaState::Change);
    admin.conn.update_subsystem(Arc::new(s.clone()));
    let cqe = single_cqe(&admin.recv());
    assert_eq!(cqe.cid, aer2);
    io.conn.update_subsystem(Arc::new(s));
    let cid = io.cid();
    let cqe = single_cqe(&io.command(&mut t, rw_sqe(0x02, cid, 1, 0, 1, false), &[]));
    assert_eq!(cqe.status, Status::ANA_TRANSITION);
}

#[test]
fn aer_not_completed_without_event_and_limit_enforced() {
    let mut t = Target::new(TargetConfig::default());
    let (mut admin, _) = admin_host(&mut t, Instant::now());
    enable_aens(&mut admin, &mut t);
    for _ in 0..4 {
        let (_, pdus) = send_aer(&mut admin, &mut t);
        assert!(pdus.is_empty());
    }
    // AERL = 3 (four outstanding): the fifth is refused
    let (_, pdus) = send_aer(&mut admin, &mut t);
    assert_eq!(single_cqe(&pdus).status, Status::ASYNC_LIMIT);
    // a snapshot without changes completes nothing
    admin.conn.update_subsystem(Arc::new(subsystem()));
    assert!(admin.recv().is_empty());
}

#[test]
fn no_ana_statuses_when_ana_not_advertised() {
    let mut t = Target::new(TargetConfig::default());
    let mut s = subsystem();
    s.ana_enabled = false;
    s.set_ana_state(1, AnaState::Inaccessible);
    t.reg.set_subsystem(Arc::new(s));
    let now = Instant::now();
    let (mut admin, cntlid) = admin_host(&mut t, now);
    let (id, _) = admin.admin(&mut t, 0x06, 0, 1, 0);
    assert_eq!(id[76] & (1 << 3), 0);
    let (ns, _) = admin.admin(&mut t, 0x06, 1, 0, 0);
    assert_eq!(le32(&ns, 92), 0);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    let cid = io.cid();
    let (data, cqe) = collect_read(&io.command(&mut t, rw_sqe(0x02, cid, 1, 0, 1, false), &[]));
    assert_eq!(data.len(), 512);
    assert!(cqe.unwrap().status.is_success());
}

fn portal(addr: &str, portid: u16) -> Portal {
    Portal {
        adrfam: AddressFamily::Ipv4,
        traddr: addr.into(),
        trsvcid: "4420".into(),
        portid,
    }
}

#[test]
fn discovery_log_with_offsets_and_genctr() {
    let mut t = Target::new(TargetConfig::default());
    let entries = vec![
        DiscoveryEntry {
            subtype: SubsystemType::Nvme,
            subnqn: SUBNQN.into(),
            portal: portal("10.0.0.1", 1),
        },
        DiscoveryEntry {
            subtype: SubsystemType::Nvme,
            subnqn: SUBNQN.into(),
            portal: portal("10.0.0.2", 2),
        },
    ];
    t.reg.set_discovery_entries(entries.clone());
    let mut h = Host::new(&t, Instant::now());
    h.icreq(&mut t, Digests::default());
    let cqe = h.connect(&mut t, 0, CNTLID_DYNAMIC, DISCOVERY_NQN, 0);
    assert!(cqe.status.is_success());
    h.enable(&mut t);

    let (id, _) = h.admin(&mut t, 0x06, 0, 1, 0);
    assert_eq!(id[111], 2); // CNTRLTYPE discovery
    assert_eq!(
        &id[768..768 + DISCOVERY_NQN.len()],
        DISCOVERY_NQN.as_bytes()
    );
    let (_, cqe) = h.admin(&mut t, 0x18, 0, 0, 0); // keep alive accepted
    assert!(cqe.unwrap().status.is_success());

    // libnvme: header, entries at offset 1024, header again
    let (hdr, st) = get_log(&mut h, &mut t, lid::DISCOVERY, 0, 1024, false);
    assert!(st.is_success());
    let genctr = le64(&hdr, 0);
    assert_eq!(le64(&hdr, 8), 2);
    assert_eq!(le16(&hdr, 16), 0);
    let (recs, _) = get_log(
        &mut h,
        &mut t,
        lid::DISCOVERY,
        DISC_HEADER_LEN as u64,
        2048,
        false,
    );
    for (i, addr) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
        let e = &recs[i * DISC_ENTRY_LEN..(i + 1) * DISC_ENTRY_LEN];
        assert_eq!(e[0], 3); // TRTYPE TCP
        assert_eq!(e[1], 1); // IPv4
        assert_eq!(e[2], 2); // NVMe subsystem
        assert_eq!(le16(e, 4), i as u16 + 1); // PORTID
        assert_eq!(le16(e, 6), 0xFFFF); // CNTLID
        assert_eq!(le16(e, 8), 32); // ASQSZ
        assert_eq!(&e[32..36], b"4420");
        assert_eq!(&e[256..256 + SUBNQN.len()], SUBNQN.as_bytes());
        assert_eq!(&e[512..512 + addr.len()], addr.as_bytes());
        assert_eq!(e[768], 0); // TSAS SECTYPE none
    }
    // misaligned offset
    let (_, st) = get_log(&mut h, &mut t, lid::DISCOVERY, 2, 1024, false);
    assert_eq!(st, Status::INVALID_FIELD.dnr());

    // AER held, then the portal list changes: GENCTR moves and the AER completes
    let cqe = h.admin_nodata(&mut t, 0x09, 0x0B, 1 << 31);
    assert!(cqe.status.is_success());
    let (aer, pdus) = send_aer(&mut h, &mut t);
    assert!(pdus.is_empty());
    let mut more = entries;
    more.push(DiscoveryEntry {
        subtype: SubsystemType::Nvme,
        subnqn: SUBNQN.into(),
        portal: portal("10.0.0.3", 3),
    });
    t.reg.set_discovery_entries(more);
    h.conn.update_discovery(t.reg.discovery());
    let cqe = single_cqe(&h.recv());
    assert_eq!(cqe.cid, aer);
    assert_eq!(cqe.dw0(), 0x0070_F002);
    let (hdr2, _) = get_log(&mut h, &mut t, lid::DISCOVERY, 0, 1024, false);
    assert_ne!(le64(&hdr2, 0), genctr);
    assert_eq!(le64(&hdr2, 8), 3);

    // a host not on the allow-list does not see the subsystem
    let mut s = subsystem();
    s.allowed_hosts = Some(vec!["nqn.other".into()]);
    t.reg.set_subsystem(Arc::new(s));
    h.conn.update_discovery(t.reg.discovery());
    let (hdr3, _) = get_log(&mut h, &mut t, lid::DISCOVERY, 0, 1024, false);
    assert_eq!(le64(&hdr3, 8), 0);
    assert_ne!(le64(&hdr3, 0), le64(&hdr2, 0));
}

#[test]
fn connect_refusals_carry_iattr_and_ipo() {
    let mut t = Target::new(TargetConfig::default());
    let mut s = subsystem();
    s.allowed_hosts = Some(vec!["nqn.someone-else".into()]);
    t.reg.set_subsystem(Arc::new(s));
    let mut h = Host::new(&t, Instant::now());
    h.icreq(&mut t, Digests::default());
    let cqe = h.connect(&mut t, 0, CNTLID_DYNAMIC, SUBNQN, 0);
    assert_eq!(cqe.status, Status::CONNECT_INVALID_HOST.dnr());
    assert_eq!(cqe.dw0(), (1 << 16) | 512);
    let cqe = h.connect(&mut t, 0, CNTLID_DYNAMIC, "nqn.unknown", 0);
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAM.dnr());
    assert_eq!(cqe.dw0(), (1 << 16) | 256);

    let mut t = Target::new(TargetConfig::default());
    let mut h = Host::new(&t, Instant::now());
    h.icreq(&mut t, Digests::default());
    let cqe = h.connect(&mut t, 1, 0x33, SUBNQN, 0);
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAM.dnr());
    assert_eq!(cqe.dw0(), (1 << 16) | 16);
    let cqe = h.connect(&mut t, 0, 5, SUBNQN, 0); // admin must ask for FFFFh
    assert_eq!(cqe.dw0(), (1 << 16) | 16);
}

#[test]
fn h2c_data_out_of_range_terminates_with_fes_4() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    let cid = io.cid();
    let pdus = io.command(&mut t, rw_sqe(0x01, cid, 1, 0, 64, false), &[]);
    let Some(Pdu::R2t(r2t)) = pdus.first().cloned() else {
        panic!("{pdus:?}")
    };
    io.send(&mut t, &h2c(cid, r2t.ttag, 512, &[0; 512], false));
    match io.recv().as_slice() {
        [Pdu::C2hTermReq(term)] => {
            assert_eq!(term.fes, Fes::DATA_OUT_OF_RANGE);
            assert_eq!(term.data.len(), 24); // the offending header
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(io.closed, Some(CloseReason::Protocol(_))));
    assert!(io.conn.is_closed());
}

#[test]
fn capsule_before_icreq_is_a_sequence_error() {
    let mut t = Target::new(TargetConfig::default());
    let mut h = Host::new(&t, Instant::now());
    h.send(
        &mut t,
        &Pdu::CapsuleCmd(CapsuleCmd {
            sqe: Sqe::new(0x18, 1),
            data: bytes::Bytes::new(),
        }),
    );
    match h.recv().as_slice() {
        [Pdu::C2hTermReq(term)] => assert_eq!(term.fes, Fes::PDU_SEQUENCE_ERROR),
        other => panic!("{other:?}"),
    }
}

#[test]
fn capsule_data_digest_error_fails_only_that_command() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let d = Digests {
        header: false,
        data: true,
    };
    let mut io = io_host(&mut t, now, cntlid, 1, d, 0);
    let cid = io.cid();
    let pdu = Pdu::CapsuleCmd(CapsuleCmd {
        sqe: rw_sqe(0x01, cid, 1, 0, 1, true),
        data: bytes::Bytes::from(vec![7u8; 512]),
    });
    let mut b = proto_nvmeof::pdu::encode_to_vec(
        &pdu,
        &proto_nvmeof::pdu::EncodeOptions { digests: d, pda: 0 },
    );
    let n = b.len();
    b[n - 1] ^= 1;
    io.send_raw(&mut t, &b);
    let cqe = single_cqe(&io.recv());
    assert_eq!(cqe.status, Status::TRANSIENT_TRANSPORT_ERROR);
    assert!(!io.conn.is_closed());
    assert!(t.volumes[&1][..512].iter().all(|&x| x == 0));
}

#[test]
fn dsm_deallocate_and_write_zeroes_become_ops() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    let cid = io.cid();
    let mut sqe = Sqe::new(0x09, cid);
    sqe.set_nsid(1);
    sqe.set_cdw(10, 1); // two ranges
    sqe.set_cdw(11, 1 << 2); // AD
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 32,
        ident: proto_nvmeof::sqe::SGL_IN_CAPSULE,
    });
    let mut ranges = Vec::new();
    for (lba, nlb) in [(10u64, 4u32), (100, 8)] {
        ranges.extend_from_slice(&0u32.to_le_bytes());
        ranges.extend_from_slice(&nlb.to_le_bytes());
        ranges.extend_from_slice(&lba.to_le_bytes());
    }
    assert!(single_cqe(&io.command(&mut t, sqe, &ranges))
        .status
        .is_success());
    assert_eq!(
        t.ops.last(),
        Some(&proto_nvmeof::IoOp::Block(
            block_core::BlockOp::Deallocate {
                ranges: vec![(10, 4), (100, 8)]
            }
        ))
    );
    // Linux sends one range in a 4096-byte buffer (room for 256): the rest is ignored.
    let cid = io.cid();
    let mut sqe = Sqe::new(0x09, cid);
    sqe.set_nsid(1);
    sqe.set_cdw(10, 0); // one range
    sqe.set_cdw(11, 1 << 2); // AD
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 4096,
        ident: proto_nvmeof::sqe::SGL_IN_CAPSULE,
    });
    let mut page = vec![0u8; 4096];
    page[4..8].copy_from_slice(&16u32.to_le_bytes());
    page[8..16].copy_from_slice(&200u64.to_le_bytes());
    assert!(single_cqe(&io.command(&mut t, sqe, &page))
        .status
        .is_success());
    assert_eq!(
        t.ops.last(),
        Some(&proto_nvmeof::IoOp::Block(
            block_core::BlockOp::Deallocate {
                ranges: vec![(200, 16)]
            }
        ))
    );
    // A buffer shorter than the ranges it announces is refused.
    let cid = io.cid();
    let mut sqe = Sqe::new(0x09, cid);
    sqe.set_nsid(1);
    sqe.set_cdw(10, 1); // two ranges
    sqe.set_cdw(11, 1 << 2);
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 16,
        ident: proto_nvmeof::sqe::SGL_IN_CAPSULE,
    });
    assert_eq!(
        single_cqe(&io.command(&mut t, sqe, &page[..16])).status,
        Status::SGL_INVALID_DATA.dnr()
    );
    let cid = io.cid();
    let mut wz = rw_sqe(0x08, cid, 1, 5, 3, false);
    wz.set_cdw(12, 2 | (1 << 25));
    wz.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 0,
        ident: 0,
    });
    assert!(single_cqe(&io.command(&mut t, wz, &[])).status.is_success());
    assert_eq!(
        t.ops.last(),
        Some(&proto_nvmeof::IoOp::Block(
            block_core::BlockOp::WriteZeroes {
                lba: 5,
                blocks: 3,
                deallocate: true,
                fua: false
            }
        ))
    );
}

#[test]
fn compare_reports_miscompare() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    t.volumes.get_mut(&1).unwrap()[..512].fill(0xAB);
    let cid = io.cid();
    let ok = single_cqe(&io.command(&mut t, rw_sqe(0x05, cid, 1, 0, 1, true), &[0xAB; 512]));
    assert!(ok.status.is_success());
    let cid = io.cid();
    let bad = single_cqe(&io.command(&mut t, rw_sqe(0x05, cid, 1, 0, 1, true), &[0xAC; 512]));
    assert_eq!(bad.status, Status::COMPARE_FAILED.dnr());
}

fn resv_mask(h: &mut Host, t: &mut Target, set: bool, nsid: u32, mask: u32) -> Cqe {
    let cid = h.cid();
    let mut sqe = Sqe::new(if set { 0x09 } else { 0x0A }, cid);
    sqe.set_nsid(nsid);
    sqe.set_cdw(10, 0x82);
    sqe.set_cdw(11, mask);
    single_cqe(&h.command(t, sqe, &[]))
}

#[test]
fn reservation_notices_complete_an_aer_and_are_read_one_page_at_a_time() {
    use proto_nvmeof::resv_notice::NoticeKind;
    let mut t = Target::new(TargetConfig::default());
    let (mut admin, _) = admin_host(&mut t, Instant::now());
    let (aer, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());
    // Two notices: the held AER completes once, for the Reservation Notification log.
    admin
        .conn
        .reservation_notice(NoticeKind::RegistrationPreempted, 1);
    admin
        .conn
        .reservation_notice(NoticeKind::ReservationReleased, 1);
    let cqe = single_cqe(&admin.recv());
    assert_eq!(cqe.cid, aer);
    assert_eq!(cqe.dw0(), 0x0080_0006); // I/O command specific, info 00h, log 80h
                                        // A notice for a namespace the subsystem does not have is ignored.
    admin
        .conn
        .reservation_notice(NoticeKind::ReservationPreempted, 7);
    // Reading the page (without RAE) returns the oldest notice and re-arms the event because
    // one notice is left: the next AER completes at once.
    let (page, st) = get_log(&mut admin, &mut t, lid::RESERVATION, 0, 64, false);
    assert!(st.is_success());
    assert_eq!(le64(&page, 0), 1);
    assert_eq!((page[8], page[9]), (1, 1));
    assert_eq!(le32(&page, 12), 1);
    let (aer2, pdus) = send_aer(&mut admin, &mut t);
    let cqe = single_cqe(&pdus);
    assert_eq!((cqe.cid, cqe.dw0()), (aer2, 0x0080_0006));
    let (page, _) = get_log(&mut admin, &mut t, lid::RESERVATION, 0, 64, false);
    assert_eq!((le64(&page, 0), page[8], page[9]), (2, 2, 0));
    let (page, _) = get_log(&mut admin, &mut t, lid::RESERVATION, 0, 64, false);
    assert!(page.iter().all(|&b| b == 0), "empty page");

    // Masking: RESREL masked on every namespace creates no page.
    assert!(resv_mask(&mut admin, &mut t, true, 0xFFFF_FFFF, 1 << 2)
        .status
        .is_success());
    assert_eq!(resv_mask(&mut admin, &mut t, false, 1, 0).dw0(), 1 << 2);
    admin
        .conn
        .reservation_notice(NoticeKind::ReservationReleased, 1);
    let (page, _) = get_log(&mut admin, &mut t, lid::RESERVATION, 0, 64, false);
    assert!(page.iter().all(|&b| b == 0), "masked notice made no page");
    assert_eq!(
        resv_mask(&mut admin, &mut t, true, 9, 0).status,
        Status::INVALID_NS.dnr()
    );
}
