//! Entry point for fuzz targets: drives one hostile command through a fresh logical unit.
//!
//! Kept in the library so the same function runs under proptest in `cargo test` and under
//! cargo-fuzz; a fuzz target is a one-line call to [`run_command`].

use bytes::Bytes;

use super::config::LuConfig;
use super::task::{BlockOp, BlockResult, Nexus, Step};
use super::unit::LogicalUnit;
use block_core::reservation::ReservationState;

/// Runs `input` as `[selector, cdb (16 bytes), data-out...]` through a 16-block LU, answering
/// block operations synthetically, then feeds the remaining bytes to the PR state decoder.
pub fn run_command(input: &[u8]) {
    let (sel, rest) = input.split_first().unwrap_or((&0, &[]));
    let (cdb, data) = rest.split_at(rest.len().min(16));
    let mut lu = LogicalUnit::new(LuConfig::new(512, [sel & 0x0F; 16]), 16);
    let nexus = Nexus {
        id: u64::from(*sel),
        initiator_port: "iqn.fuzz,i,0x000000000001".into(),
        target_port_group: u16::from(sel >> 6),
        relative_port: 1,
    };
    for _ in 0..2 {
        let mut step = lu.start(&nexus, cdb, data.len() as u32);
        loop {
            step = match step {
                Step::Done(_) => break,
                Step::NeedDataOut { len, task } => {
                    let mut buf = data.to_vec();
                    buf.resize(len as usize, 0);
                    lu.data_out(&nexus, task, Bytes::from(buf))
                }
                Step::Io { op, task } => {
                    let result = match op {
                        BlockOp::Read { blocks, .. } => {
                            BlockResult::Data(Bytes::from(vec![0u8; blocks as usize * 512]))
                        }
                        BlockOp::CompareAndWrite { .. } => BlockResult::Miscompare { offset: 0 },
                        BlockOp::GetLbaStatus { .. } => BlockResult::LbaStatus(Vec::new()),
                        _ => BlockResult::Ok,
                    };
                    let _ = lu.io_done(task, result);
                    break;
                }
            }
        }
    }
    let _ = ReservationState::from_bytes(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn run_command_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::run_command(&input);
        }
    }
}
