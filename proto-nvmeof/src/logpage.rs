//! Get Log Page (NVMe base 2.0 section 5.16): command decoding, offset/length handling, and
//! the pages an I/O controller serves (supported logs, error, SMART, firmware slot, changed
//! namespaces, command effects, ANA).

use crate::padded::ascii_padded;
use crate::sqe::Sqe;
use crate::status::Status;
use crate::subsystem::Subsystem;

/// Log page identifiers.
pub mod lid {
    /// Supported Log Pages.
    pub const SUPPORTED: u8 = 0x00;
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FW_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NS: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const CMD_EFFECTS: u8 = 0x05;
    /// Asymmetric Namespace Access.
    pub const ANA: u8 = 0x0C;
    /// Reservation Notification.
    pub const RESERVATION: u8 = 0x80;
    /// Discovery (discovery controllers only).
    pub const DISCOVERY: u8 = 0x70;
}

/// ANA log LSP bit: return groups only (no NSID lists).
pub const ANA_LSP_RGO: u8 = 1 << 0;

/// A decoded Get Log Page command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogRequest {
    /// Log page identifier.
    pub lid: u8,
    /// Log specific parameter.
    pub lsp: u8,
    /// Retain asynchronous event: reading must not clear the pending event.
    pub rae: bool,
    /// Bytes requested (NUMD + 1 dwords).
    pub len: u64,
    /// Byte offset into the page (LPOL/LPOU).
    pub offset: u64,
    /// Command set identifier.
    pub csi: u8,
}

impl LogRequest {
    /// Decodes the Get Log Page fields of `sqe`.
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw10 = sqe.cdw(10);
        let cdw11 = sqe.cdw(11);
        let numd = (u64::from(cdw11 & 0xFFFF) << 16) | u64::from(cdw10 >> 16);
        LogRequest {
            lid: cdw10 as u8,
            lsp: ((cdw10 >> 8) & 0x7F) as u8,
            rae: cdw10 & (1 << 15) != 0,
            len: (numd + 1) * 4,
            offset: (u64::from(sqe.cdw(13)) << 32) | u64::from(sqe.cdw(12)),
            csi: (sqe.cdw(14) >> 24) as u8,
        }
    }

    /// Encodes a Get Log Page SQE (host side).
    pub fn encode(&self, cid: u16, nsid: u32) -> Sqe {
        let mut sqe = Sqe::new(0x02, cid);
        sqe.set_nsid(nsid);
        let numd = (self.len / 4).saturating_sub(1);
        let cdw10 = u32::from(self.lid)
            | (u32::from(self.lsp & 0x7F) << 8)
            | (u32::from(self.rae) << 15)
            | ((numd as u32 & 0xFFFF) << 16);
        sqe.set_cdw(10, cdw10);
        sqe.set_cdw(11, (numd >> 16) as u32 & 0xFFFF);
        sqe.set_cdw(12, self.offset as u32);
        sqe.set_cdw(13, (self.offset >> 32) as u32);
        sqe.set_cdw(14, u32::from(self.csi) << 24);
        sqe
    }

    /// The requested window of `page`: bytes from the offset, zero-filled to the requested
    /// length. Offsets must be dword aligned and inside the page; the length must not exceed
    /// `max_len` (the controller's MDTS), so hostile NUMD values never drive allocation.
    pub fn window(&self, page: &[u8], max_len: u32) -> Result<Vec<u8>, Status> {
        if self.offset & 3 != 0 || self.offset > page.len() as u64 || self.len > u64::from(max_len)
        {
            return Err(Status::INVALID_FIELD.dnr());
        }
        let start = self.offset as usize;
        let len = self.len as usize;
        let mut out: Vec<u8> = page
            .get(start..page.len().min(start.saturating_add(len)))
            .unwrap_or_default()
            .to_vec();
        out.resize(len, 0);
        Ok(out)
    }
}

/// Supported Log Pages (LID 00h): one dword per LID with LSUPP (bit 0) set.
pub fn supported_logs() -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    for l in [
        lid::SUPPORTED,
        lid::ERROR,
        lid::SMART,
        lid::FW_SLOT,
        lid::CHANGED_NS,
        lid::CMD_EFFECTS,
        lid::ANA,
        lid::RESERVATION,
    ] {
        b[usize::from(l) * 4] = 1;
    }
    b
}

/// Error Information (one empty 64-byte entry: no errors recorded).
pub fn error_log() -> Vec<u8> {
    vec![0u8; 64]
}

/// SMART / Health Information (512 bytes, nothing to report for a virtual device).
pub fn smart_log() -> Vec<u8> {
    vec![0u8; 512]
}

/// Firmware Slot Information: slot 1 active, holding `firmware`.
pub fn fw_slot_log(firmware: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1; // AFI: slot 1 active
    b[8..16].copy_from_slice(&ascii_padded(firmware, 8));
    b
}

/// Changed Namespace List: up to 1024 NSIDs, or 0xFFFFFFFF first when more changed.
pub fn changed_ns_log(changed: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    if changed.len() > 1024 {
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        return b;
    }
    for (i, n) in changed.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
    }
    b
}

/// Commands Supported and Effects (CSUPP, and LBCC for commands that change media).
pub fn cmd_effects_log() -> Vec<u8> {
    const CSUPP: u32 = 1;
    const LBCC: u32 = 1 << 1;
    let mut b = vec![0u8; 4096];
    let mut set = |base: usize, opc: u8, v: u32| {
        let o = base + usize::from(opc) * 4;
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    for opc in [0x02, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18] {
        set(0, opc, CSUPP);
    }
    for (opc, v) in [
        (0x00, CSUPP),
        (0x01, CSUPP | LBCC),
        (0x02, CSUPP),
        (0x05, CSUPP),
        (0x08, CSUPP | LBCC),
        (0x09, CSUPP | LBCC),
        (0x0D, CSUPP),
        (0x0E, CSUPP),
        (0x11, CSUPP),
        (0x15, CSUPP),
    ] {
        set(1024, opc, v);
    }
    b
}

/// Asymmetric Namespace Access log: header (CHGCNT, NGRPS) and one descriptor per group
/// (ANAGRPID, NNSIDS, CHGCNT, state, NSIDs unless `groups_only`).
pub fn ana_log(subsys: &Subsystem, groups_only: bool) -> Vec<u8> {
    let mut groups: Vec<_> = subsys.ana_groups.iter().filter(|g| g.id != 0).collect();
    groups.sort_by_key(|g| g.id);
    groups.dedup_by_key(|g| g.id);
    let mut b = Vec::with_capacity(16 + groups.len() * 32);
    b.extend_from_slice(&subsys.ana_change_count.to_le_bytes());
    b.extend_from_slice(&(groups.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0; 6]);
    for g in groups {
        let mut nsids: Vec<u32> = if groups_only {
            Vec::new()
        } else {
            subsys
                .namespaces
                .iter()
                .filter(|n| n.ana_group == g.id)
                .map(|n| n.nsid)
                .collect()
        };
        nsids.sort_unstable();
        b.extend_from_slice(&g.id.to_le_bytes());
        b.extend_from_slice(&(nsids.len() as u32).to_le_bytes());
        b.extend_from_slice(&g.change_count.to_le_bytes());
        b.push(g.state.code());
        b.extend_from_slice(&[0; 15]);
        for n in nsids {
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numd_and_offset_decoding() {
        let req = LogRequest {
            lid: lid::ANA,
            lsp: 1,
            rae: true,
            len: 0x4_0000 * 4,
            offset: 0x1_0000_0400,
            csi: 0,
        };
        let sqe = req.encode(1, 0xFFFF_FFFF);
        // NUMDL in CDW10 bits 31:16, NUMDU in CDW11 bits 15:0, LPOL/LPOU in CDW12/13
        assert_eq!(sqe.cdw(10) >> 16, 0xFFFF);
        assert_eq!(sqe.cdw(11) & 0xFFFF, 0x3);
        assert_eq!(sqe.cdw(12), 0x400);
        assert_eq!(sqe.cdw(13), 1);
        assert_eq!(LogRequest::parse(&sqe), req);
    }

    #[test]
    fn window_checks_offset_alignment_and_length() {
        let page: Vec<u8> = (0..100u8).collect();
        let mut req = LogRequest {
            lid: 1,
            lsp: 0,
            rae: false,
            len: 8,
            offset: 96,
            csi: 0,
        };
        assert_eq!(
            req.window(&page, 4096).unwrap(),
            vec![96, 97, 98, 99, 0, 0, 0, 0]
        );
        req.offset = 2;
        assert!(req.window(&page, 4096).is_err());
        req.offset = 104;
        assert!(req.window(&page, 4096).is_err());
        req.offset = 0;
        req.len = 1 << 40;
        assert!(req.window(&page, 4096).is_err());
    }
}
