//! A single entry point that drives the login machinery with arbitrary bytes, shared by the
//! `login_negotiate` cargo-fuzz target and a proptest, so both exercise the same code.

use super::config::{LoginContext, TargetAuth, TargetConfig};
use super::negotiate::Negotiator;
use super::params::SessionType;
use super::state::{LoginConnection, LoginOutcome, LoginRequest, MAX_LOGIN_REQUESTS};
use crate::chap::ChapConfig;
use crate::text;

struct FuzzContext {
    counter: u8,
    next_tsih: u16,
}

impl LoginContext for FuzzContext {
    fn target_auth(&self, target_name: &str) -> Option<TargetAuth> {
        match target_name {
            "iqn.2024-01.org.example:open" => Some(TargetAuth::None),
            "iqn.2024-01.org.example:chap" => Some(TargetAuth::Chap(ChapConfig::one_way(
                "user",
                b"secret-secret".to_vec(),
            ))),
            _ => None,
        }
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.counter;
            self.counter = self.counter.wrapping_add(1);
        }
    }

    fn allocate_tsih(&mut self) -> Option<u16> {
        self.next_tsih = self.next_tsih.wrapping_add(1);
        Some(self.next_tsih)
    }
}

/// Feeds `data` to the negotiation engine (as one text segment, for both session types) and to
/// a login state machine (as a sequence of framed requests). Must never panic.
///
/// Frame layout: one flag byte (bit 7 T, bit 6 C, bit 5 non-zero TSIH, bit 4 other CID, bits
/// 0-1 CSG, bits 2-3 NSG), a big-endian u16 length, then that many text bytes (truncated to
/// what is left).
pub fn fuzz_login_negotiate(data: &[u8]) {
    if let Ok(pairs) = text::parse_text(data) {
        for session_type in [SessionType::Normal, SessionType::Discovery] {
            let mut n = Negotiator::new(TargetConfig::default());
            n.params_mut().session_type = session_type;
            if n.negotiate(&pairs).is_ok() {
                let _ = n.target_offers();
                let _ = n.declarations();
                let _ = n.finish();
            }
        }
    }

    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let mut ctx = FuzzContext {
        counter: 0,
        next_tsih: 0,
    };
    let mut rest = data;
    for _ in 0..=MAX_LOGIN_REQUESTS + 1 {
        let [flags, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (text, after) = tail.split_at(len);
        rest = after;
        let req = LoginRequest {
            transit: flags & 0x80 != 0,
            cont: flags & 0x40 != 0,
            csg: flags & 0x3,
            nsg: (flags >> 2) & 0x3,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, 1],
            tsih: u16::from(flags & 0x20 != 0),
            cid: u16::from(flags & 0x10 != 0),
            data: text,
        };
        let step = conn.step(&req, &mut ctx);
        if !matches!(step.outcome, LoginOutcome::Continue) {
            break;
        }
    }
}
