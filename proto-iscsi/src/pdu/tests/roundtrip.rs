//! Property tests: encode -> decode is the identity for every PDU kind, with and without
//! digests, whole or fed in random pieces; and arbitrary input never panics the decoder.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{any_pdu, digests};
use crate::pdu::*;

fn decoder(digests: Digests) -> PduDecoder {
    let mut d = PduDecoder::new();
    d.set_digests(digests);
    d.set_max_recv_data_segment_length(MAX_DATA_SEGMENT_LENGTH);
    d
}

fn encode(pdus: &[Pdu], digests: Digests) -> Bytes {
    let mut wire = BytesMut::new();
    for pdu in pdus {
        pdu.encode(digests, &mut wire).unwrap();
    }
    wire.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity(pdu in any_pdu(), digests in digests()) {
        let wire = encode(std::slice::from_ref(&pdu), digests);
        prop_assert_eq!(wire.len(), pdu.encoded_len(digests));
        prop_assert_eq!(wire.len() % 4, 0);
        let dec = decoder(digests);
        let expected = Decoded::Complete { pdu: pdu.clone(), consumed: wire.len() };
        prop_assert_eq!(dec.decode(&wire).unwrap(), expected.clone());
        prop_assert_eq!(dec.decode_bytes(&wire).unwrap(), expected);
        // Every strict prefix asks for more, and never for more than the PDU still lacks.
        for cut in [0, 1, 47, 48, wire.len() - 1] {
            let Some(prefix) = wire.get(..cut.min(wire.len() - 1)) else { continue };
            match dec.decode(prefix).unwrap() {
                Decoded::NeedMore { at_least } => {
                    prop_assert!(at_least >= 1);
                    prop_assert!(prefix.len() + at_least <= wire.len());
                }
                other => prop_assert!(false, "prefix decoded: {:?}", other),
            }
        }
    }

    #[test]
    fn stream_in_random_pieces(
        pdus in vec(any_pdu(), 1..5),
        digests in digests(),
        pieces in vec(1usize..97, 1..64),
    ) {
        let wire = encode(&pdus, digests);
        let dec = decoder(digests);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut piece = pieces.iter().cycle();
        while pos < wire.len() {
            let n = (*piece.next().unwrap_or(&1)).min(wire.len() - pos);
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(pdu) = dec.decode_from(&mut buf).unwrap() {
                got.push(pdu);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, pdus);
    }

    #[test]
    fn digests_reencode_byte_identically(pdu in any_pdu()) {
        // Decoding and re-encoding a digested PDU must reproduce the exact wire bytes, so the
        // digests we send are the ones we verify.
        let wire = encode(std::slice::from_ref(&pdu), Digests::BOTH);
        let Decoded::Complete { pdu: back, .. } = decoder(Digests::BOTH).decode(&wire).unwrap()
        else { panic!("incomplete") };
        prop_assert_eq!(encode(&[back], Digests::BOTH), wire);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..1500)) {
        fuzz_decode(&bytes);
        let _ = PduDecoder::new().decode(&bytes);
    }

    #[test]
    fn mutated_pdus_never_panic(
        pdus in vec(any_pdu(), 1..4),
        digests in digests(),
        flips in vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut wire = encode(&pdus, digests).to_vec();
        let len = wire.len();
        for (at, value) in flips {
            if let Some(b) = wire.get_mut(at % len) {
                *b = value;
            }
        }
        fuzz_decode(&wire);
    }
}
