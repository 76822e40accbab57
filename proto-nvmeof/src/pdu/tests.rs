use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::status::Status;

fn cfg(digests: Digests) -> DecoderConfig {
    DecoderConfig {
        digests,
        max_plen: 1 << 20,
    }
}

fn opts(digests: Digests, pda: u8) -> EncodeOptions {
    EncodeOptions { digests, pda }
}

fn decode_all(bytes: &[u8], d: Digests) -> Pdu {
    match decode(bytes, &cfg(d)).unwrap() {
        Decoded::Pdu { pdu, consumed } => {
            assert_eq!(consumed, bytes.len());
            pdu
        }
        other => panic!("incomplete: {other:?}"),
    }
}

#[test]
fn icresp_layout_is_128_bytes_per_nvme_tcp_icresp_pdu() {
    let pdu = Pdu::IcResp(IcResp {
        pfv: 0,
        cpda: 0,
        digests: Digests {
            header: true,
            data: false,
        },
        maxh2cdata: 0x0010_0000,
    });
    let b = encode_to_vec(&pdu, &EncodeOptions::default());
    assert_eq!(b.len(), 128);
    assert_eq!(&b[0..8], &[0x01, 0x00, 128, 0, 128, 0, 0, 0]);
    assert_eq!(&b[8..10], &[0, 0]); // PFV
    assert_eq!(b[10], 0); // CPDA
    assert_eq!(b[11], 0x01); // DGST: header digest only
    assert_eq!(&b[12..16], &0x0010_0000u32.to_le_bytes()); // MAXH2CDATA
    assert!(b[16..].iter().all(|&x| x == 0));
}

#[test]
fn capsule_cmd_pdo_follows_header_digest_with_cpda_zero() {
    let mut sqe = crate::sqe::Sqe::new(0x01, 5);
    sqe.set_sgl(crate::sqe::Sgl {
        addr: 0,
        length: 8,
        ident: crate::sqe::SGL_IN_CAPSULE,
    });
    let pdu = Pdu::CapsuleCmd(CapsuleCmd {
        sqe,
        data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]),
    });
    let d = Digests {
        header: true,
        data: true,
    };
    let b = encode_to_vec(&pdu, &opts(d, 0));
    assert_eq!(b[1], flags::HDGSTF | flags::DDGSTF);
    assert_eq!(b[2], 72);
    assert_eq!(b[3], 76, "PDO = HLEN + HDGST");
    assert_eq!(b.len(), 72 + 4 + 8 + 4);
    assert_eq!(&b[72..76], &crc32c(&b[..72]).to_le_bytes());
    assert_eq!(&b[84..88], &crc32c(&b[76..84]).to_le_bytes());
    assert_eq!(decode_all(&b, d), pdu);
}

#[test]
fn c2h_data_honours_hpda_padding() {
    let pdu = Pdu::C2hData(DataPdu {
        cccid: 1,
        ttag: 0,
        offset: 0,
        last: true,
        success: true,
        data: Bytes::from_static(&[9; 12]),
    });
    let b = encode_to_vec(&pdu, &opts(Digests::default(), 7)); // 32-byte alignment
    assert_eq!(b[3], 32);
    assert_eq!(b[1], flags::LAST_PDU | flags::SUCCESS);
    assert!(b[24..32].iter().all(|&x| x == 0));
    assert_eq!(&b[16..20], &12u32.to_le_bytes()); // DATAL
    assert_eq!(decode_all(&b, Digests::default()), pdu);
}

#[test]
fn r2t_and_resp_layouts() {
    let r2t = encode_to_vec(
        &Pdu::R2t(R2t {
            cccid: 0x0102,
            ttag: 0x0304,
            offset: 4096,
            length: 8192,
        }),
        &EncodeOptions::default(),
    );
    assert_eq!(r2t.len(), 24);
    assert_eq!(&r2t[0..8], &[0x09, 0, 24, 0, 24, 0, 0, 0]);
    assert_eq!(&r2t[8..12], &[0x02, 0x01, 0x04, 0x03]);
    assert_eq!(&r2t[12..16], &4096u32.to_le_bytes());
    assert_eq!(&r2t[16..20], &8192u32.to_le_bytes());
    let cqe = crate::cqe::Cqe {
        cid: 3,
        status: Status::SUCCESS,
        ..Default::default()
    };
    let resp = encode_to_vec(&Pdu::CapsuleResp(cqe), &EncodeOptions::default());
    assert_eq!(resp.len(), 24);
    assert_eq!(&resp[0..4], &[0x05, 0, 24, 0]);
}

#[test]
fn header_digest_mismatch_terminates_with_fes_3() {
    let d = Digests {
        header: true,
        data: false,
    };
    let mut b = encode_to_vec(&Pdu::CapsuleResp(crate::cqe::Cqe::default()), &opts(d, 0));
    b[10] ^= 1;
    let e = decode(&b, &cfg(d)).unwrap_err();
    assert!(matches!(e, PduError::HeaderDigest { .. }));
    assert_eq!(
        e.action(),
        ErrorAction::Terminate {
            fes: Fes::HEADER_DIGEST_ERROR,
            fei: 0
        }
    );
}

#[test]
fn data_digest_mismatch_fails_only_the_command() {
    let d = Digests {
        header: false,
        data: true,
    };
    let mut sqe = crate::sqe::Sqe::new(0x01, 0x77);
    sqe.set_sgl(crate::sqe::Sgl {
        addr: 0,
        length: 4,
        ident: crate::sqe::SGL_IN_CAPSULE,
    });
    let mut b = encode_to_vec(
        &Pdu::CapsuleCmd(CapsuleCmd {
            sqe,
            data: Bytes::from_static(&[1, 2, 3, 4]),
        }),
        &opts(d, 0),
    );
    let n = b.len();
    b[n - 1] ^= 0xFF;
    let e = decode(&b, &cfg(d)).unwrap_err();
    assert_eq!(
        e.action(),
        ErrorAction::FailCommand {
            cid: 0x77,
            consumed: n
        }
    );
}

#[test]
fn plen_limit_checked_from_the_common_header_alone() {
    let hdr = [0x04, 0, 72, 0, 0xFF, 0xFF, 0xFF, 0x7F];
    let e = decode(&hdr, &cfg(Digests::default())).unwrap_err();
    assert_eq!(
        e,
        PduError::PlenTooLarge {
            plen: 0x7FFF_FFFF,
            max: 1 << 20
        }
    );
    assert_eq!(
        decode(&hdr[..5], &cfg(Digests::default())).unwrap(),
        Decoded::NeedMore { total: 8 }
    );
}

#[test]
fn header_errors_carry_field_offsets() {
    let bad_hlen = [0x04, 0, 71, 0, 71, 0, 0, 0];
    let e = decode(&bad_hlen, &cfg(Digests::default())).unwrap_err();
    assert_eq!(
        e.action(),
        ErrorAction::Terminate {
            fes: Fes::INVALID_HEADER_FIELD,
            fei: 2
        }
    );
    let unknown = [0x08, 0, 24, 0, 24, 0, 0, 0];
    assert_eq!(
        decode(&unknown, &cfg(Digests::default())).unwrap_err(),
        PduError::UnknownType(8)
    );
    // HDGSTF set although no header digest was negotiated
    let flags_bad = [0x05, 1, 24, 0, 28, 0, 0, 0];
    assert_eq!(
        decode(&flags_bad, &cfg(Digests::default()))
            .unwrap_err()
            .action(),
        ErrorAction::Terminate {
            fes: Fes::INVALID_HEADER_FIELD,
            fei: 1
        }
    );
}

fn arb_digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

fn arb_data() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn arb_data_pdu() -> impl Strategy<Value = DataPdu> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        arb_data(),
    )
        .prop_map(|(cccid, ttag, offset, last, success, data)| DataPdu {
            cccid,
            ttag,
            offset,
            last,
            success,
            data,
        })
}

fn arb_pdu() -> impl Strategy<Value = Pdu> {
    let sqe = proptest::collection::vec(any::<u8>(), 64).prop_map(|v| {
        let mut a = [0u8; 64];
        a.copy_from_slice(&v);
        crate::sqe::Sqe(a)
    });
    let term = (
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..128),
    )
        .prop_map(|(fes, fei, d)| TermReq {
            fes,
            fei,
            data: Bytes::from(d),
        });
    prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(hpda, dg, maxr2t)| Pdu::IcReq(IcReq {
            pfv: 0,
            hpda,
            digests: Digests::from_byte(dg),
            maxr2t
        })),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(cpda, dg, max)| Pdu::IcResp(IcResp {
            pfv: 0,
            cpda,
            digests: Digests::from_byte(dg),
            maxh2cdata: max
        })),
        term.clone().prop_map(Pdu::H2cTermReq),
        term.prop_map(Pdu::C2hTermReq),
        (sqe, arb_data()).prop_map(|(sqe, data)| Pdu::CapsuleCmd(CapsuleCmd { sqe, data })),
        (
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<bool>()
        )
            .prop_map(|(result, sqhd, sqid, cid, st, phase)| Pdu::CapsuleResp(
                crate::cqe::Cqe {
                    result,
                    sqhd,
                    sqid,
                    cid,
                    status: Status(st & 0x7FFF),
                    phase
                }
            )),
        arb_data_pdu().prop_map(Pdu::H2cData),
        arb_data_pdu().prop_map(Pdu::C2hData),
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
            |(cccid, ttag, offset, length)| Pdu::R2t(R2t {
                cccid,
                ttag,
                offset,
                length
            })
        ),
    ]
}

proptest! {
    #[test]
    fn round_trip_every_pdu(pdu in arb_pdu(), d in arb_digests(), pda in 0u8..32) {
        let bytes = encode_to_vec(&pdu, &opts(d, pda));
        prop_assert_eq!(decode_all(&bytes, d), pdu);
    }

    #[test]
    fn streaming_decode_with_random_chunking(
        pdus in proptest::collection::vec(arb_pdu(), 1..6),
        d in arb_digests(),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let mut stream = Vec::new();
        for p in &pdus {
            encode(p, &opts(d, 0), &mut stream);
        }
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while fed < stream.len() {
            let n = (*cut.next().unwrap()).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            loop {
                match decode(&buf, &cfg(d)).unwrap() {
                    Decoded::NeedMore { total } => {
                        prop_assert!(total > buf.len());
                        break;
                    }
                    Decoded::Pdu { pdu, consumed } => {
                        got.push(pdu);
                        buf.drain(..consumed);
                    }
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, pdus);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), d in arb_digests()) {
        let _ = decode(&bytes, &cfg(d));
    }
}
