//! Collecting a write command's data: immediate data, unsolicited Data-Out up to
//! FirstBurstLength, then R2T-solicited Data-Out in bursts of at most MaxBurstLength with at
//! most MaxOutstandingR2T bursts outstanding.

use bytes::BytesMut;

use crate::pdu::ScsiCommand;

/// One outstanding R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Target transfer tag of the R2T.
    pub ttt: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// First byte offset requested.
    pub offset: u32,
    /// Bytes requested.
    pub len: u32,
    /// Bytes received so far.
    pub received: u32,
    /// DataSN the next Data-Out of this burst must carry.
    pub next_data_sn: u32,
}

/// Why a Data-Out PDU was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutError {
    /// Offset/length outside what was allowed (unsolicited burst or the R2T's range).
    OutOfBounds,
    /// The TTT names no outstanding R2T of this task.
    UnknownTtt,
    /// DataSN out of sequence (a lost or reordered PDU: at ErrorRecoveryLevel 0 the
    /// connection must be dropped).
    BadDataSn,
}

/// A write command waiting for its data.
#[derive(Debug)]
pub struct WriteTask {
    /// The command (its data segment moved into `buf`).
    pub cmd: ScsiCommand,
    /// Data received so far, placed by offset. It grows only as data arrives: unsolicited
    /// data must come in order (DataPDUInOrder=Yes), and a gap before an R2T's range is
    /// covered by the budget charged for the solicited part.
    pub buf: BytesMut,
    /// Expected data transfer length.
    pub edtl: u32,
    /// Bytes the initiator may send without R2T (immediate + unsolicited).
    pub unsolicited_len: u32,
    /// Unsolicited bytes received.
    pub unsolicited_received: u32,
    /// Whether the unsolicited burst has ended (F bit or all bytes received).
    pub unsolicited_done: bool,
    /// First offset not yet requested by an R2T.
    pub next_offset: u32,
    /// Outstanding R2Ts.
    pub bursts: Vec<Burst>,
    /// Next R2TSN.
    pub next_r2t_sn: u32,
    /// Bytes received in total.
    pub received: u32,
    /// Whether data beyond our limit is being swallowed (the command will fail).
    pub discarding: bool,
    /// Whether budget was charged for the solicited part.
    pub charged: u32,
    /// DataSN the next unsolicited Data-Out must carry.
    pub unsolicited_data_sn: u32,
    /// Whether the command holds a CmdSN slot (it was not immediate).
    pub slot: bool,
}

impl WriteTask {
    /// Starts collecting for `cmd`, whose immediate data has already been validated.
    pub fn new(mut cmd: ScsiCommand, unsolicited_len: u32, discarding: bool) -> Self {
        let edtl = cmd.expected_data_transfer_length;
        let immediate = std::mem::take(&mut cmd.data);
        let imm_len = immediate.len() as u32;
        let mut buf = BytesMut::new();
        if !discarding {
            buf.extend_from_slice(&immediate);
        }
        let unsolicited_len = unsolicited_len.max(imm_len);
        WriteTask {
            cmd,
            buf,
            edtl,
            unsolicited_len,
            unsolicited_received: imm_len,
            unsolicited_done: imm_len >= unsolicited_len,
            next_offset: unsolicited_len,
            bursts: Vec::new(),
            next_r2t_sn: 0,
            received: imm_len,
            discarding,
            charged: 0,
            unsolicited_data_sn: 0,
            slot: false,
        }
    }

    /// Whether every byte has arrived.
    pub fn complete(&self) -> bool {
        self.received >= self.edtl && self.bursts.is_empty()
    }

    fn place(&mut self, offset: u32, data: &[u8]) {
        if self.discarding {
            return;
        }
        let end = offset as usize + data.len();
        if self.buf.len() < end {
            // Reserve at once what this part may need (never more: a doubling growth would
            // hold up to twice the command): the unsolicited burst, which is bounded by
            // FirstBurstLength, or the whole command once solicited data (charged to the
            // write budget) arrives. Then fill any gap (only solicited ranges can leave one).
            let part = if end <= self.unsolicited_len as usize {
                self.unsolicited_len
            } else {
                self.edtl
            };
            let want = (part as usize).max(end);
            self.buf.reserve(want - self.buf.len());
            self.buf.resize(end, 0);
        }
        self.buf[offset as usize..end].copy_from_slice(data);
    }

    /// Accepts one Data-Out PDU.
    pub fn data_out(
        &mut self,
        ttt: u32,
        data_sn: u32,
        offset: u32,
        data: &[u8],
        final_: bool,
    ) -> Result<(), DataOutError> {
        let len = data.len() as u32;
        let end = offset.checked_add(len).ok_or(DataOutError::OutOfBounds)?;
        if ttt == crate::pdu::RESERVED_TAG {
            // In order (DataPDUInOrder=Yes): a Data-Out at a higher offset would make the
            // buffer grow over bytes nobody sent.
            if self.unsolicited_done
                || end > self.unsolicited_len
                || end > self.edtl
                || offset != self.unsolicited_received
            {
                return Err(DataOutError::OutOfBounds);
            }
            if data_sn != self.unsolicited_data_sn {
                return Err(DataOutError::BadDataSn);
            }
            self.unsolicited_data_sn = self.unsolicited_data_sn.wrapping_add(1);
            self.place(offset, data);
            self.unsolicited_received += len;
            self.received += len;
            if final_ || self.unsolicited_received >= self.unsolicited_len {
                self.unsolicited_done = true;
            }
            return Ok(());
        }
        let Some(i) = self.bursts.iter().position(|b| b.ttt == ttt) else {
            return Err(DataOutError::UnknownTtt);
        };
        let b = self.bursts[i];
        // In order within the burst (DataPDUInOrder=Yes).
        if offset != b.offset + b.received || end > b.offset + b.len {
            return Err(DataOutError::OutOfBounds);
        }
        if data_sn != b.next_data_sn {
            return Err(DataOutError::BadDataSn);
        }
        self.bursts[i].next_data_sn = data_sn.wrapping_add(1);
        self.place(offset, data);
        self.received += len;
        self.bursts[i].received += len;
        if final_ || self.bursts[i].received >= b.len {
            self.bursts.remove(i);
        }
        Ok(())
    }

    /// Bytes still to be requested by R2Ts.
    pub fn unrequested(&self) -> u32 {
        self.edtl.saturating_sub(self.next_offset)
    }

    /// Requests the next burst of at most `max_burst` bytes with tag `ttt`.
    pub fn next_burst(&mut self, ttt: u32, max_burst: u32) -> Option<Burst> {
        if !self.unsolicited_done || self.unrequested() == 0 {
            return None;
        }
        let len = self.unrequested().min(max_burst.max(1));
        let b = Burst {
            ttt,
            r2t_sn: self.next_r2t_sn,
            offset: self.next_offset,
            len,
            received: 0,
            next_data_sn: 0,
        };
        self.next_r2t_sn = self.next_r2t_sn.wrapping_add(1);
        self.next_offset += len;
        self.bursts.push(b);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::RESERVED_TAG;

    fn cmd(edtl: u32, imm: &[u8]) -> ScsiCommand {
        ScsiCommand {
            write: true,
            final_: true,
            expected_data_transfer_length: edtl,
            data: bytes::Bytes::copy_from_slice(imm),
            ..ScsiCommand::default()
        }
    }

    #[test]
    fn immediate_then_unsolicited_then_solicited_bursts() {
        let mut t = WriteTask::new(cmd(10_000, &[1; 1000]), 4000, false);
        assert!(!t.unsolicited_done);
        assert_eq!(
            t.next_burst(5, 3000),
            None,
            "no R2T before the unsolicited burst ends"
        );
        t.data_out(RESERVED_TAG, 0, 1000, &[2; 3000], true).unwrap();
        assert!(t.unsolicited_done);
        let b1 = t.next_burst(5, 4096).unwrap();
        assert_eq!((b1.offset, b1.len, b1.r2t_sn), (4000, 4096, 0));
        let b2 = t.next_burst(6, 4096).unwrap();
        assert_eq!((b2.offset, b2.len, b2.r2t_sn), (8096, 1904, 1));
        assert_eq!(t.next_burst(7, 4096), None);
        assert_eq!(
            t.data_out(9, 0, 4000, &[3; 10], false),
            Err(DataOutError::UnknownTtt)
        );
        assert_eq!(
            t.data_out(5, 0, 3990, &[3; 10], false),
            Err(DataOutError::OutOfBounds)
        );
        assert_eq!(
            t.data_out(5, 1, 4000, &[3; 10], false),
            Err(DataOutError::BadDataSn)
        );
        t.data_out(6, 0, 8096, &[4; 1904], true).unwrap();
        t.data_out(5, 0, 4000, &[3; 2048], false).unwrap();
        t.data_out(5, 1, 6048, &[3; 2048], true).unwrap();
        assert!(t.complete());
        assert_eq!(t.buf.len(), 10_000);
        assert_eq!(&t.buf[..1000], &[1; 1000][..]);
        assert_eq!(&t.buf[1000..4000], &[2; 3000][..]);
        assert_eq!(&t.buf[4000..8096], &[3; 4096][..]);
        assert_eq!(&t.buf[8096..], &[4; 1904][..]);
    }

    #[test]
    fn unsolicited_data_beyond_the_first_burst_is_refused() {
        let mut t = WriteTask::new(cmd(8192, &[]), 4096, false);
        assert_eq!(
            t.data_out(RESERVED_TAG, 0, 4000, &[0; 200], false),
            Err(DataOutError::OutOfBounds)
        );
        assert_eq!(
            t.data_out(RESERVED_TAG, 0, u32::MAX, &[0; 2], false),
            Err(DataOutError::OutOfBounds)
        );
        assert_eq!(
            t.data_out(RESERVED_TAG, 3, 0, &[0; 2], false),
            Err(DataOutError::BadDataSn)
        );
    }
}
