//! The Identify fields a host acts on, read from the 4096-byte structures at the offsets of
//! the NVMe base specification (the same as the Linux kernel's `nvme_id_ctrl` / `nvme_id_ns`).

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn text(b: &[u8], o: usize, len: usize) -> String {
    let s = b.get(o..o + len).unwrap_or_default();
    String::from_utf8_lossy(s)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn array<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(o..o + N) {
        a.copy_from_slice(s);
    }
    a
}

/// Identify Controller (CNS 01h), the fields hosts check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    /// Serial number (SN).
    pub serial: String,
    /// Model number (MN).
    pub model: String,
    /// Controller multi-path I/O and namespace sharing capabilities (CMIC).
    pub cmic: u8,
    /// Maximum data transfer size, a power of two of the minimum page size (MDTS).
    pub mdts: u8,
    /// Controller id.
    pub cntlid: u16,
    /// Optional asynchronous events supported (OAES).
    pub oaes: u32,
    /// Controller type (1 I/O, 2 discovery).
    pub cntrltype: u8,
    /// Keep-alive support granularity in 100 ms units (KAS).
    pub kas: u16,
    /// ANA transition time in seconds (ANATT).
    pub anatt: u8,
    /// ANA capabilities (ANACAP).
    pub anacap: u8,
    /// ANA group id maximum (ANAGRPMAX).
    pub anagrpmax: u32,
    /// Number of ANA group ids (NANAGRPID).
    pub nanagrpid: u32,
    /// Maximum outstanding commands (MAXCMD).
    pub maxcmd: u16,
    /// Number of namespaces (NN).
    pub nn: u32,
    /// Optional NVM command support (ONCS).
    pub oncs: u16,
    /// SGL support (SGLS).
    pub sgls: u32,
    /// Maximum number of allowed namespaces (MNAN).
    pub mnan: u32,
    /// Subsystem NQN.
    pub subnqn: String,
    /// I/O command capsule supported size in 16-byte units (IOCCSZ).
    pub ioccsz: u32,
    /// I/O response capsule supported size in 16-byte units (IORCSZ).
    pub iorcsz: u32,
    /// In-capsule data offset (ICDOFF).
    pub icdoff: u16,
}

impl IdentifyController {
    /// Parses the structure (short input reads as zeros).
    pub fn parse(b: &[u8]) -> Self {
        IdentifyController {
            serial: text(b, 4, 20),
            model: text(b, 24, 40),
            cmic: b.get(76).copied().unwrap_or(0),
            mdts: b.get(77).copied().unwrap_or(0),
            cntlid: le16(b, 78),
            oaes: le32(b, 92),
            cntrltype: b.get(111).copied().unwrap_or(0),
            kas: le16(b, 320),
            anatt: b.get(342).copied().unwrap_or(0),
            anacap: b.get(343).copied().unwrap_or(0),
            anagrpmax: le32(b, 344),
            nanagrpid: le32(b, 348),
            maxcmd: le16(b, 514),
            nn: le32(b, 516),
            oncs: le16(b, 520),
            sgls: le32(b, 536),
            mnan: le32(b, 540),
            subnqn: text(b, 768, 256),
            ioccsz: le32(b, 1792),
            iorcsz: le32(b, 1796),
            icdoff: le16(b, 1798),
        }
    }

    /// Write bytes that fit in an I/O command capsule.
    pub fn in_capsule_bytes(&self) -> u32 {
        (self.ioccsz * 16).saturating_sub(64)
    }

    /// Largest transfer in bytes (MDTS with 4 KiB pages; 0 means no limit).
    pub fn max_transfer(&self) -> Option<u32> {
        (self.mdts != 0).then(|| {
            4096u32
                .checked_shl(u32::from(self.mdts))
                .unwrap_or(u32::MAX)
        })
    }
}

/// Identify Namespace (CNS 00h), the fields hosts check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Namespace size in logical blocks (NSZE).
    pub nsze: u64,
    /// Namespace multi-path I/O and sharing capabilities (NMIC).
    pub nmic: u8,
    /// Reservation capabilities (RESCAP).
    pub rescap: u8,
    /// ANA group id (ANAGRPID).
    pub anagrpid: u32,
    /// Namespace globally unique identifier (NGUID).
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier (EUI64).
    pub eui64: [u8; 8],
    /// Logical block size in bytes (from LBAF0's LBADS).
    pub block_size: u32,
}

impl IdentifyNamespace {
    /// Parses the structure (short input reads as zeros).
    pub fn parse(b: &[u8]) -> Self {
        let flbas = usize::from(b.get(26).copied().unwrap_or(0) & 0xF);
        let lbads = b.get(128 + flbas * 4 + 2).copied().unwrap_or(9);
        IdentifyNamespace {
            nsze: le64(b, 0),
            nmic: b.get(30).copied().unwrap_or(0),
            rescap: b.get(31).copied().unwrap_or(0),
            anagrpid: le32(b, 92),
            nguid: array(b, 104),
            eui64: array(b, 120),
            block_size: 1u32.checked_shl(u32::from(lbads)).unwrap_or(0),
        }
    }
}

/// One Namespace Identification Descriptor (CNS 03h): type (1 EUI-64, 2 NGUID, 3 UUID,
/// 4 CSI) and value.
pub fn parse_ns_descriptors(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut o = 0usize;
    while let (Some(&nidt), Some(&nidl)) = (b.get(o), b.get(o + 1)) {
        if nidt == 0 {
            break;
        }
        let Some(v) = b.get(o + 4..o + 4 + usize::from(nidl)) else {
            break;
        };
        out.push((nidt, v.to_vec()));
        o += 4 + usize::from(nidl);
    }
    out
}

/// One group descriptor of the ANA log page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaGroupDesc {
    /// ANA group id.
    pub id: u32,
    /// Group change count.
    pub change_count: u64,
    /// State (1 optimized, 2 non-optimized, 3 inaccessible, 4 persistent loss, 0xF change).
    pub state: u8,
    /// Namespaces in the group.
    pub nsids: Vec<u32>,
}

/// The ANA log page (LID 0Ch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaLog {
    /// Change count of the whole log.
    pub change_count: u64,
    /// Group descriptors.
    pub groups: Vec<AnaGroupDesc>,
}

impl AnaLog {
    /// Parses the page (stops at the first descriptor that does not fit).
    pub fn parse(b: &[u8]) -> Self {
        let n = le16(b, 8);
        let mut groups = Vec::new();
        let mut o = 16usize;
        for _ in 0..n {
            if b.len() < o + 32 {
                break;
            }
            let nn = le32(b, o + 4) as usize;
            let nsids = (0..nn)
                .map_while(|i| {
                    b.get(o + 32 + i * 4..o + 36 + i * 4)
                        .map(|_| le32(b, o + 32 + i * 4))
                })
                .collect();
            groups.push(AnaGroupDesc {
                id: le32(b, o),
                change_count: le64(b, o + 8),
                state: b.get(o + 16).copied().unwrap_or(0),
                nsids,
            });
            o = o.saturating_add(32).saturating_add(nn.saturating_mul(4));
        }
        AnaLog {
            change_count: le64(b, 0),
            groups,
        }
    }
}
