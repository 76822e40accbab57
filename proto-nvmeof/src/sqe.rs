//! The 64-byte submission queue entry (NVMe base 2.0 figure 88) and its fabrics SGL
//! descriptor (NVMe/TCP uses SGLs only; PSDT is ignored on fabrics).
//!
//! The entry is kept as raw bytes so that every command-specific layout (I/O, admin,
//! fabrics) can read its own fields without a lossy intermediate form.

/// Length of an SQE.
pub const SQE_LEN: usize = 64;

/// Opcode of every fabrics command.
pub const OPC_FABRICS: u8 = 0x7F;

/// SGL descriptor identifier: data block, offset subtype (in-capsule data).
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL descriptor identifier: transport SGL data block, transport-specific subtype
/// (data moved by R2T/H2CData or C2HData).
pub const SGL_TRANSPORT: u8 = 0x5A;

/// One submission queue entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sqe(pub [u8; SQE_LEN]);

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqe")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("sgl", &self.sgl())
            .field("cdw10", &format_args!("{:#010x}", self.cdw(10)))
            .finish()
    }
}

/// The SGL descriptor in the SQE's data pointer (bytes 24..40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sgl {
    /// Address (for in-capsule data: offset from the capsule data start; must be 0 here).
    pub addr: u64,
    /// Length of the data in bytes.
    pub length: u32,
    /// Descriptor identifier: type in bits 7:4, subtype in bits 3:0.
    pub ident: u8,
}

/// How a command's data travels, derived from its SGL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataPlacement {
    /// No data (length 0).
    None,
    /// Inside the command capsule, `len` bytes.
    InCapsule(u32),
    /// By R2T/H2CData (writes) or C2HData (reads), `len` bytes.
    Transport(u32),
}

impl Sqe {
    /// An all-zero SQE with the given opcode and CID.
    pub fn new(opcode: u8, cid: u16) -> Self {
        let mut s = Sqe([0; SQE_LEN]);
        s.0[0] = opcode;
        s.set_cid(cid);
        s
    }

    /// Copies an SQE out of `bytes` (None when shorter than 64 bytes).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let raw: [u8; SQE_LEN] = bytes.get(..SQE_LEN)?.try_into().ok()?;
        Some(Sqe(raw))
    }

    /// Little-endian u16 at byte `off` (within the SQE, so never out of range for callers
    /// passing constants below 63).
    pub fn u16_at(&self, off: usize) -> u16 {
        let b = |i: usize| self.0.get(i).copied().unwrap_or(0);
        u16::from_le_bytes([b(off), b(off + 1)])
    }

    /// Little-endian u32 at byte `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from(self.u16_at(off)) | (u32::from(self.u16_at(off + 2)) << 16)
    }

    /// Little-endian u64 at byte `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from(self.u32_at(off)) | (u64::from(self.u32_at(off + 4)) << 32)
    }

    /// Writes `bytes` at `off` (ignored where it would overflow).
    pub fn put(&mut self, off: usize, bytes: &[u8]) {
        if let Some(dst) = self.0.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Opcode (byte 0).
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// FUSE and PSDT flags (byte 1).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.u16_at(2)
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.put(2, &cid.to_le_bytes());
    }

    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.u32_at(4)
    }

    /// Sets the namespace identifier.
    pub fn set_nsid(&mut self, nsid: u32) {
        self.put(4, &nsid.to_le_bytes());
    }

    /// Command dword `n` (0..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.u32_at(n * 4)
    }

    /// Sets command dword `n` (0..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        self.put(n * 4, &v.to_le_bytes());
    }

    /// Fabrics command type (byte 4) of a fabrics command.
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// The SGL descriptor.
    pub fn sgl(&self) -> Sgl {
        Sgl {
            addr: self.u64_at(24),
            length: self.u32_at(32),
            ident: self.0[39],
        }
    }

    /// Sets the SGL descriptor.
    pub fn set_sgl(&mut self, sgl: Sgl) {
        self.put(24, &sgl.addr.to_le_bytes());
        self.put(32, &sgl.length.to_le_bytes());
        self.put(36, &[0, 0, 0, sgl.ident]);
    }

    /// Where the command's data is, or None when the SGL type is not one NVMe/TCP allows.
    pub fn placement(&self) -> Option<DataPlacement> {
        let sgl = self.sgl();
        if sgl.length == 0 {
            return Some(DataPlacement::None);
        }
        match sgl.ident {
            SGL_IN_CAPSULE if sgl.addr == 0 => Some(DataPlacement::InCapsule(sgl.length)),
            SGL_TRANSPORT => Some(DataPlacement::Transport(sgl.length)),
            _ => None,
        }
    }

    /// Data transfer direction from the opcode (bits 1:0), or for fabrics commands from the
    /// fctype (bit 0 set = host to controller).
    pub fn direction(&self) -> Direction {
        let bits = if self.opcode() == OPC_FABRICS {
            if self.fctype() & 1 != 0 {
                1
            } else {
                2
            }
        } else {
            self.opcode() & 3
        };
        match bits {
            1 => Direction::HostToController,
            2 => Direction::ControllerToHost,
            3 => Direction::Bidirectional,
            _ => Direction::None,
        }
    }
}

/// Data transfer direction of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// No data transfer.
    None,
    /// Host to controller (writes).
    HostToController,
    /// Controller to host (reads).
    ControllerToHost,
    /// Both (not supported on NVMe/TCP).
    Bidirectional,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_match_nvme_command() {
        let mut s = Sqe::new(0x01, 0xBEEF);
        s.set_nsid(7);
        s.set_sgl(Sgl {
            addr: 0,
            length: 4096,
            ident: SGL_IN_CAPSULE,
        });
        s.set_cdw(10, 0x1122_3344);
        assert_eq!(s.0[0], 0x01);
        assert_eq!(&s.0[2..4], &[0xEF, 0xBE]);
        assert_eq!(&s.0[4..8], &[7, 0, 0, 0]);
        assert_eq!(&s.0[32..36], &4096u32.to_le_bytes());
        assert_eq!(s.0[39], 0x01);
        assert_eq!(&s.0[40..44], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(s.placement(), Some(DataPlacement::InCapsule(4096)));
        assert_eq!(s.direction(), Direction::HostToController);
    }

    #[test]
    fn fabrics_direction_from_fctype() {
        let mut s = Sqe::new(OPC_FABRICS, 1);
        s.0[4] = 0x01; // connect: host to controller
        assert_eq!(s.direction(), Direction::HostToController);
        s.0[4] = 0x04; // property get
        assert_eq!(s.direction(), Direction::ControllerToHost);
    }

    #[test]
    fn keyed_sgl_rejected() {
        let mut s = Sqe::new(0x02, 1);
        s.set_sgl(Sgl {
            addr: 0,
            length: 512,
            ident: 0x40,
        });
        assert_eq!(s.placement(), None);
    }
}
