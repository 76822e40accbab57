//! The scripted host exchange: ICReq, admin Connect, properties, Identify, I/O queue,
//! in-capsule and R2T writes, C2HData reads, flush, keep-alive expiry.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proto_nvmeof::pdu::{Digests, Pdu};
use proto_nvmeof::{namespace_ids, CloseReason, IoOp, Status, TargetConfig};

#[test]
fn scripted_host_exchange() {
    let cfg = TargetConfig {
        maxh2cdata: 8192,
        max_r2t_len: 16384,
        max_c2h_data: 16384,
        ..TargetConfig::default()
    };
    let mut t = Target::new(cfg);
    let t0 = Instant::now();
    let digests = Digests {
        header: true,
        data: true,
    };

    // ICReq -> ICResp: 128 bytes, PFV 0, CPDA 0, digests echoed, MAXH2CDATA sane
    let mut admin = Host::new(&t, t0);
    match admin.icreq(&mut t, digests) {
        Pdu::IcResp(r) => {
            assert_eq!(r.pfv, 0);
            assert_eq!(r.cpda, 0);
            assert_eq!(r.digests, digests);
            assert_eq!(r.maxh2cdata, 8192);
        }
        other => panic!("{other:?}"),
    }

    // admin Connect: DW0 is the dynamically allocated CNTLID from this node's range
    let cntlid = admin.admin_connect(&mut t);
    assert!((0x10..=0x1F).contains(&cntlid));

    // Property Get CAP: MQES, TO, CSS NVM
    let cap = admin.prop_get(&mut t, 0x00, true).result;
    assert_eq!(cap & 0xFFFF, 1023);
    assert_eq!((cap >> 24) & 0xFF, 15);
    assert_eq!((cap >> 37) & 1, 1);
    assert_eq!(admin.prop_get(&mut t, 0x08, false).result, 0x0001_0400);
    // Identify before enabling is a sequence error
    let (_, cqe) = admin.admin(&mut t, 0x06, 0, 1, 0);
    assert_eq!(cqe.unwrap().status, Status::COMMAND_SEQUENCE_ERROR.dnr());
    // CC.EN -> CSTS.RDY
    admin.enable(&mut t);
    assert_eq!(admin.prop_get(&mut t, 0x1C, false).result & 1, 1);

    // Identify controller
    let (id, cqe) = admin.admin(&mut t, 0x06, 0, 1, 0);
    assert!(cqe.unwrap().status.is_success());
    assert_eq!(id.len(), 4096);
    assert_eq!(le16(&id, 78), cntlid);
    assert_eq!(&id[768..768 + SUBNQN.len()], SUBNQN.as_bytes());
    assert_eq!(id[768 + SUBNQN.len()], 0);
    assert_eq!(le32(&id, 1792), (64 + 16384) / 16); // IOCCSZ
    assert_eq!(le32(&id, 1796), 1); // IORCSZ
    assert_eq!(le16(&id, 1798), 0); // ICDOFF

    // I/O queue on its own connection, with digests
    let mut io = io_host(&mut t, t0, cntlid, 1, digests, 0);
    assert_eq!(t.reg.association(cntlid).unwrap().io_queues.len(), 1);

    // 16 KiB write in the capsule: no R2T
    let payload: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
    let cid = io.cid();
    let r = io.command(&mut t, rw_sqe(0x01, cid, 1, 8, 32, true), &payload);
    let cqe = single_cqe(&r);
    assert!(cqe.status.is_success());
    assert_eq!(cqe.cid, cid);
    assert_eq!(cqe.sqid, 1);
    assert_eq!(&t.volumes[&1][8 * BS..8 * BS + 16384], &payload[..]);

    // 40 KiB write via R2T: R2Ts of at most 16 KiB, H2CData of at most MAXH2CDATA
    let big: Vec<u8> = (0..40960u32).map(|i| (i % 251) as u8).collect();
    let cid = io.cid();
    let mut pdus = io.command(&mut t, rw_sqe(0x01, cid, 1, 100, 80, false), &[]);
    let mut r2ts = Vec::new();
    loop {
        let Some(Pdu::R2t(r2t)) = pdus.first().cloned() else {
            break;
        };
        assert_eq!(pdus.len(), 1);
        assert_eq!(r2t.cccid, cid);
        assert!(r2t.length <= 16384);
        r2ts.push((r2t.offset, r2t.length));
        let mut off = r2t.offset;
        let end = r2t.offset + r2t.length;
        pdus = Vec::new();
        while off < end {
            let n = (end - off).min(8192);
            io.send(
                &mut t,
                &h2c(
                    cid,
                    r2t.ttag,
                    off,
                    &big[off as usize..(off + n) as usize],
                    off + n == end,
                ),
            );
            pdus.extend(io.recv());
            off += n;
        }
    }
    assert_eq!(r2ts, vec![(0, 16384), (16384, 16384), (32768, 8192)]);
    assert!(single_cqe(&pdus).status.is_success());
    assert_eq!(&t.volumes[&1][100 * BS..100 * BS + 40960], &big[..]);

    // read back 40 KiB: C2HData in 16 KiB pieces, LAST on the final one, then a response
    let cid = io.cid();
    let pdus = io.command(&mut t, rw_sqe(0x02, cid, 1, 100, 80, false), &[]);
    let sizes: Vec<(usize, bool, bool)> = pdus
        .iter()
        .filter_map(|p| match p {
            Pdu::C2hData(d) => Some((d.data.len(), d.last, d.success)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sizes,
        vec![
            (16384, false, false),
            (16384, false, false),
            (8192, true, false)
        ]
    );
    let (data, cqe) = collect_read(&pdus);
    assert_eq!(data, big);
    assert!(cqe.unwrap().status.is_success());

    // flush
    let cid = io.cid();
    let mut f = proto_nvmeof::Sqe::new(0x00, cid);
    f.set_nsid(1);
    assert!(single_cqe(&io.command(&mut t, f, &[])).status.is_success());
    assert_eq!(t.ops.last(), Some(&IoOp::Block(block_core::BlockOp::Flush)));

    // keep-alive: KATO 5 s from the Connect; a Keep Alive at 4 s pushes it to 9 s
    assert_eq!(
        admin.conn.kato_deadline(),
        Some(t0 + Duration::from_secs(5))
    );
    assert_eq!(admin.conn.poll_timeout(), admin.conn.kato_deadline());
    admin.advance(Duration::from_secs(4));
    let (_, cqe) = admin.admin(&mut t, 0x18, 0, 0, 0);
    assert!(cqe.unwrap().status.is_success());
    assert!(!admin.conn.handle_timeout(t0 + Duration::from_secs(8)));
    assert!(admin.conn.handle_timeout(t0 + Duration::from_millis(9001)));
    admin.pump(&mut t);
    assert_eq!(admin.closed, Some(CloseReason::KeepAliveExpired));
    assert_eq!(
        admin.conn.close_reason(),
        Some(&CloseReason::KeepAliveExpired)
    );
    assert_eq!(admin.conn.poll_timeout(), None);
    assert!(t.reg.release(cntlid).is_some());
}

#[test]
fn identify_namespace_and_descriptors_agree() {
    let mut t = Target::new(TargetConfig::default());
    let (mut h, _) = admin_host(&mut t, Instant::now());
    let (ns, _) = h.admin(&mut t, 0x06, 1, 0, 0);
    let ids = namespace_ids(b"0123456789abcdef", 0);
    assert_eq!(le64(&ns, 0), 2048); // NSZE
    assert_eq!(ns[30] & 1, 1); // NMIC shared
    assert_eq!(le32(&ns, 92), 1); // ANAGRPID
    assert_eq!(&ns[104..120], &ids.nguid);
    assert_eq!(&ns[120..128], &ids.eui64);
    assert_eq!(ns[130], 9); // LBAF0 LBADS for 512-byte blocks
    let (desc, _) = h.admin(&mut t, 0x06, 1, 3, 0);
    assert_eq!(&desc[0..4], &[1, 8, 0, 0]);
    assert_eq!(&desc[4..12], &ids.eui64);
    assert_eq!(&desc[12..14], &[2, 16]);
    assert_eq!(&desc[16..32], &ids.nguid);
    assert_eq!(&desc[32..34], &[3, 16]);
    assert_eq!(&desc[36..52], &ids.uuid);
    let (list, _) = h.admin(&mut t, 0x06, 0, 2, 0);
    assert_eq!(le32(&list, 0), 1);
    assert_eq!(le32(&list, 4), 0);
    // inactive NSID: zero-filled structure; NSID 0: invalid namespace
    let (zero, cqe) = h.admin(&mut t, 0x06, 7, 0, 0);
    assert!(cqe.unwrap().status.is_success());
    assert!(zero.iter().all(|&b| b == 0));
    let (_, cqe) = h.admin(&mut t, 0x06, 0, 0, 0);
    assert_eq!(cqe.unwrap().status, Status::INVALID_NS.dnr());
}

#[test]
fn sq_flow_control_disabled_reads_complete_with_success_flag() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 1 << 2);
    let cid = io.cid();
    let pdus = io.command(&mut t, rw_sqe(0x02, cid, 1, 0, 8, false), &[]);
    match pdus.as_slice() {
        [Pdu::C2hData(d)] => {
            assert!(d.last && d.success);
            assert_eq!(d.data.len(), 4096);
        }
        other => panic!("{other:?}"),
    }
    // errors still get a response capsule (SQHD reserved as FFFFh)
    let cid = io.cid();
    let cqe = single_cqe(&io.command(&mut t, rw_sqe(0x02, cid, 1, 2047, 8, false), &[]));
    assert_eq!(cqe.status, Status::LBA_OUT_OF_RANGE.dnr());
    assert_eq!(cqe.sqhd, 0xFFFF);
}

#[test]
fn sqhd_advances_per_command() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    let mut heads = Vec::new();
    for _ in 0..3 {
        let cid = io.cid();
        let mut f = proto_nvmeof::Sqe::new(0x00, cid);
        f.set_nsid(1);
        heads.push(single_cqe(&io.command(&mut t, f, &[])).sqhd);
    }
    assert_eq!(heads, vec![2, 3, 4]); // the Connect was entry 1
}
