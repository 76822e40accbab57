//! Answering a completed SCSI command: Data-In PDUs sized to the initiator's
//! MaxRecvDataSegmentLength, sequences bounded by MaxBurstLength, status in the last Data-In
//! when the command succeeded, otherwise a SCSI Response carrying the sense data; residual
//! counts against ExpectedDataTransferLength.

use super::Connection;
use crate::pdu::{DataIn, Pdu, ScsiResponse, ServiceResponse, RESERVED_TAG};
use crate::scsi::{Completion, Status};

/// Residual over/underflow of a transfer: `(overflow, underflow, count)`.
fn residual(expected: u32, actual: u64) -> (bool, bool, u32) {
    let expected = u64::from(expected);
    if actual > expected {
        (
            true,
            false,
            (actual - expected).min(u64::from(u32::MAX)) as u32,
        )
    } else if actual < expected {
        (false, true, (expected - actual) as u32)
    } else {
        (false, false, 0)
    }
}

impl Connection {
    /// Reports a command handed out by [`super::Event::Command`] as finished. `data_out_used`
    /// is how many data-out bytes the command actually transferred (for the residual count).
    /// Completions of aborted or unknown tasks are ignored.
    pub fn complete(&mut self, itt: u32, c: &Completion, data_out_used: u32) {
        let Some(super::Running {
            lun,
            expected,
            slot,
        }) = self.executing.remove(&itt)
        else {
            self.aborted.remove(&itt);
            return;
        };
        self.release_slot(slot);
        if self.is_closed() {
            return;
        }
        let (max_seg, max_burst) = self.params_ref_pub().map_or((8192, 262_144), |p| {
            (
                p.initiator_max_recv_data_segment_length.max(512),
                p.max_burst_length.max(512),
            )
        });
        let is_read = !c.data.is_empty();
        let (overflow, underflow, count) = if is_read {
            residual(expected, c.data.len() as u64)
        } else if data_out_used > 0 || expected > 0 {
            residual(expected, u64::from(data_out_used))
        } else {
            (false, false, 0)
        };
        let data = if c.data.len() as u64 > u64::from(expected) {
            c.data.slice(..expected as usize)
        } else {
            c.data.clone()
        };
        let good = c.status == Status::Good && c.sense.is_none();
        let mut data_sn = 0u32;
        if !data.is_empty() {
            let total = data.len();
            let mut off = 0usize;
            let mut in_burst = 0usize;
            while off < total {
                let len = (total - off)
                    .min(max_seg as usize)
                    .min(max_burst as usize - in_burst);
                let last = off + len == total;
                in_burst += len;
                let end_of_seq = last || in_burst == max_burst as usize;
                if end_of_seq {
                    in_burst = 0;
                }
                let with_status = last && good;
                let stat_sn = if with_status { self.next_stat_sn() } else { 0 };
                let pdu = DataIn {
                    final_: end_of_seq,
                    ack: false,
                    overflow: with_status && overflow,
                    underflow: with_status && underflow,
                    status: with_status.then_some(c.status as u8),
                    lun: if with_status { Default::default() } else { lun },
                    itt,
                    ttt: RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                    data_sn,
                    buffer_offset: off as u32,
                    residual_count: if with_status { count } else { 0 },
                    data: data.slice(off..off + len),
                };
                self.send(Pdu::DataIn(pdu));
                data_sn = data_sn.wrapping_add(1);
                off += len;
            }
            if good {
                return;
            }
        }
        let sense = c
            .sense_bytes()
            .map(|s| ScsiResponse::sense_segment(&s))
            .unwrap_or_default();
        let stat_sn = self.next_stat_sn();
        let resp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow,
            underflow,
            response: ServiceResponse::CommandCompleted,
            status: c.status as u8,
            itt,
            snack_tag: 0,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            exp_data_sn: data_sn,
            bidi_read_residual_count: 0,
            residual_count: count,
            data: sense,
        };
        self.send(Pdu::ScsiResponse(resp));
    }

    fn params_ref_pub(&self) -> Option<&crate::login::SessionParams> {
        self.params()
    }
}

#[cfg(test)]
mod tests {
    use super::residual;

    #[test]
    fn residuals() {
        assert_eq!(residual(4096, 4096), (false, false, 0));
        assert_eq!(residual(4096, 512), (false, true, 3584));
        assert_eq!(residual(512, 4096), (true, false, 3584));
        assert_eq!(residual(0, 512), (true, false, 512));
    }
}
