//! Identify data structures (NVMe base 2.0 section 5.17, NVM command set 1.0 section 4.1.5).
//!
//! Every builder returns the full 4096-byte structure; the transport truncates to the
//! host's transfer length. Field offsets follow `struct nvme_id_ctrl` / `nvme_id_ns` of the
//! Linux kernel, which match the specification figures.

use crate::discovery::DISCOVERY_NQN;
use crate::ident::namespace_ids;
use crate::padded::{ascii_padded, nul_padded};
use crate::status::Status;
use crate::subsystem::{Namespace, Subsystem, TargetConfig};

/// Size of every Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;

/// CNS values.
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NS_DESCRIPTORS: u8 = 0x03;
    /// I/O Command Set specific Identify Namespace.
    pub const CS_NAMESPACE: u8 = 0x05;
    /// I/O Command Set specific Identify Controller.
    pub const CS_CONTROLLER: u8 = 0x06;
    /// I/O Command Set specific Active Namespace ID list.
    pub const CS_ACTIVE_NS_LIST: u8 = 0x07;
    /// I/O Command Set Independent Identify Namespace.
    pub const CS_INDEPENDENT_NS: u8 = 0x08;
}

/// Command set identifier of the NVM command set.
pub const CSI_NVM: u8 = 0;

/// OAES bit: Namespace Attribute Notices.
pub const OAES_NS_ATTR: u32 = 1 << 8;
/// OAES bit: ANA Change Notices.
pub const OAES_ANA_CHANGE: u32 = 1 << 11;
/// OAES bit: Discovery Log Page Change Notices.
pub const OAES_DISC_CHANGE: u32 = 1 << 31;
/// ONCS: Compare, Dataset Management, Write Zeroes, Reservations.
pub const ONCS: u16 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5);
/// ONCS bit 5: Reservations (cleared when a subsystem offers none).
pub const ONCS_RESERVATIONS: u16 = 1 << 5;
/// Asynchronous events outstanding at once, 0's based (Identify AERL).
pub const AERL: u8 = 3;
/// Abort commands outstanding at once, 0's based (Identify ACL).
pub const ACL: u8 = 3;

/// What kind of controller is being identified.
#[derive(Debug, Clone, Copy)]
pub enum ControllerKind<'a> {
    /// An I/O controller of this subsystem.
    Io(&'a Subsystem),
    /// The discovery controller.
    Discovery,
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Identify Controller (CNS 01h).
pub fn identify_controller(cfg: &TargetConfig, cntlid: u16, kind: ControllerKind<'_>) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let (serial, model, fw, company, nqn) = match kind {
        ControllerKind::Io(s) => (
            s.serial.as_str(),
            s.model.as_str(),
            s.firmware.as_str(),
            s.ieee_company_id,
            s.nqn.as_str(),
        ),
        ControllerKind::Discovery => (
            "tandem-discovery",
            "Tandem Discovery",
            "0.1",
            0,
            DISCOVERY_NQN,
        ),
    };
    put(&mut b, 0, &cfg.vendor_id.to_le_bytes());
    put(&mut b, 2, &cfg.vendor_id.to_le_bytes());
    put(&mut b, 4, &ascii_padded(serial, 20));
    put(&mut b, 24, &ascii_padded(model, 40));
    put(&mut b, 64, &ascii_padded(fw, 8));
    b[72] = 6; // RAB
    put(&mut b, 73, &company.to_le_bytes()[..3]);
    put(&mut b, 78, &cntlid.to_le_bytes());
    put(&mut b, 80, &cfg.version.to_le_bytes());
    put(&mut b, 96, &1u32.to_le_bytes()); // CTRATT: 128-bit host identifier
    b[258] = ACL;
    b[259] = AERL;
    b[260] = 0x03; // FRMW: slot 1 read-only, one slot
    put(&mut b, 320, &cfg.kas.to_le_bytes());
    put(&mut b, 514, &cfg.max_queue_entries.to_le_bytes()); // MAXCMD
    put(&mut b, 536, &(1u32 | (1 << 20)).to_le_bytes()); // SGLS: supported, offsets
    put(&mut b, 768, &nul_padded(nqn, 256));
    put(&mut b, 1792, &cfg.ioccsz().to_le_bytes());
    put(&mut b, 1796, &1u32.to_le_bytes()); // IORCSZ: 16-byte CQE
                                            // Bytes 1800-1801 ICDOFF stay 0 (the Linux TCP host refuses anything else), 1802 FCATT.
    b[1803] = 1; // MSDBD
    match kind {
        ControllerKind::Io(s) => {
            let mut cmic = (1 << 0) | (1 << 1); // multi-port, multi-controller
            let mut oaes = OAES_NS_ATTR;
            if s.ana_enabled {
                cmic |= 1 << 3;
                oaes |= OAES_ANA_CHANGE;
                b[342] = cfg.anatt;
                b[343] = 0x1F; // ANACAP: all five states reported
                put(&mut b, 344, &cfg.anagrpmax.to_le_bytes());
                put(&mut b, 348, &cfg.anagrpmax.to_le_bytes());
            }
            b[76] = cmic;
            b[77] = cfg.mdts;
            put(&mut b, 92, &oaes.to_le_bytes());
            b[111] = 1; // CNTRLTYPE: I/O controller
            b[261] = (1 << 1) | (1 << 2); // LPA: command effects, extended data
            b[512] = 0x66; // SQES
            b[513] = 0x44; // CQES
            put(&mut b, 516, &cfg.max_nsid.to_le_bytes());
            let oncs = if s.reservations {
                ONCS
            } else {
                ONCS & !ONCS_RESERVATIONS
            };
            put(&mut b, 520, &oncs.to_le_bytes());
            b[525] = 0x05; // VWC present; broadcast flush not supported
            put(&mut b, 540, &cfg.mnan.min(cfg.max_nsid).to_le_bytes());
        }
        ControllerKind::Discovery => {
            put(&mut b, 92, &OAES_DISC_CHANGE.to_le_bytes());
            b[111] = 2; // CNTRLTYPE: discovery controller
            b[261] = 1 << 2; // LPA: extended data (offsets)
        }
    }
    b
}

/// RESCAP: everything when the subsystem offers reservations, nothing otherwise.
fn rescap(subsys: &Subsystem) -> u8 {
    if subsys.reservations {
        0xFF
    } else {
        0
    }
}

/// Identify Namespace (CNS 00h) of `ns`.
pub fn identify_namespace(ns: &Namespace, subsys: &Subsystem) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let ids = namespace_ids(&ns.volume_uuid, subsys.ieee_company_id);
    put(&mut b, 0, &ns.blocks.to_le_bytes()); // NSZE
    put(&mut b, 8, &ns.blocks.to_le_bytes()); // NCAP
    put(&mut b, 16, &ns.blocks.to_le_bytes()); // NUSE
    b[24] = 1; // NSFEAT: thin provisioning
    b[25] = 0; // NLBAF: one format
    b[26] = 0; // FLBAS: format 0, no metadata
    b[30] = 1; // NMIC: shared namespace
    b[31] = rescap(subsys); // RESCAP: PTPL, all six types, IEKEY
    b[33] = 0x01 | (1 << 3); // DLFEAT: deallocated reads zeros; Write Zeroes DEAC
    if subsys.ana_enabled {
        put(&mut b, 92, &ns.ana_group.to_le_bytes());
    }
    // NSATTR bit 0: write protected (Linux sets the disk read-only).
    b[99] = u8::from(ns.write_protected);
    put(&mut b, 104, &ids.nguid);
    put(&mut b, 120, &ids.eui64);
    b[130] = ns.lbads(); // LBAF0: MS 0, LBADS, RP 0
    b
}

/// I/O Command Set Independent Identify Namespace (CNS 08h).
pub fn identify_cs_independent(ns: &Namespace, subsys: &Subsystem) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    b[0] = 1; // NSFEAT thin
    b[1] = 1; // NMIC shared
    b[2] = rescap(subsys); // RESCAP
    if subsys.ana_enabled {
        put(&mut b, 4, &ns.ana_group.to_le_bytes());
    }
    b[14] = 1; // NSTAT: namespace ready
    b
}

/// Active Namespace ID list (CNS 02h): NSIDs greater than `after`, ascending, at most 1024.
pub fn active_namespaces(subsys: &Subsystem, after: u32) -> Result<Vec<u8>, Status> {
    if after >= 0xFFFF_FFFE {
        return Err(Status::INVALID_NS.dnr());
    }
    let mut ids: Vec<u32> = subsys
        .namespaces
        .iter()
        .map(|n| n.nsid)
        .filter(|&n| n > after)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, id) in ids.iter().take(1024).enumerate() {
        put(&mut b, i * 4, &id.to_le_bytes());
    }
    Ok(b)
}

/// Namespace Identification Descriptor list (CNS 03h): EUI-64, NGUID, UUID, CSI.
pub fn namespace_descriptors(ns: &Namespace, subsys: &Subsystem) -> Vec<u8> {
    let ids = namespace_ids(&ns.volume_uuid, subsys.ieee_company_id);
    let mut b = Vec::with_capacity(IDENTIFY_LEN);
    for (nidt, nid) in [
        (1u8, &ids.eui64[..]),
        (2, &ids.nguid[..]),
        (3, &ids.uuid[..]),
        (4, &[CSI_NVM][..]),
    ] {
        b.extend_from_slice(&[nidt, nid.len() as u8, 0, 0]);
        b.extend_from_slice(nid);
    }
    b.resize(IDENTIFY_LEN, 0);
    b
}

/// Handles one Identify command for an I/O controller: `cns`, `nsid`, `csi` from the SQE.
pub fn identify_io(
    cfg: &TargetConfig,
    cntlid: u16,
    subsys: &Subsystem,
    cns_value: u8,
    nsid: u32,
    csi: u8,
) -> Result<Vec<u8>, Status> {
    let lookup = |nsid: u32| -> Result<Option<&Namespace>, Status> {
        if nsid == 0 || nsid > cfg.max_nsid {
            return Err(Status::INVALID_NS.dnr());
        }
        Ok(subsys.namespace(nsid))
    };
    match cns_value {
        cns::CONTROLLER => Ok(identify_controller(cfg, cntlid, ControllerKind::Io(subsys))),
        cns::NAMESPACE => Ok(match lookup(nsid)? {
            Some(ns) => identify_namespace(ns, subsys),
            None => vec![0; IDENTIFY_LEN],
        }),
        cns::ACTIVE_NS_LIST => active_namespaces(subsys, nsid),
        cns::CS_ACTIVE_NS_LIST if csi == CSI_NVM => active_namespaces(subsys, nsid),
        cns::NS_DESCRIPTORS => match lookup(nsid)? {
            Some(ns) => Ok(namespace_descriptors(ns, subsys)),
            None => Err(Status::INVALID_NS.dnr()),
        },
        cns::CS_INDEPENDENT_NS => Ok(match lookup(nsid)? {
            Some(ns) => identify_cs_independent(ns, subsys),
            None => vec![0; IDENTIFY_LEN],
        }),
        // NVM command set specific structures: nothing beyond the defaults to report.
        cns::CS_NAMESPACE if csi == CSI_NVM => {
            lookup(nsid)?;
            Ok(vec![0; IDENTIFY_LEN])
        }
        cns::CS_CONTROLLER if csi == CSI_NVM => Ok(vec![0; IDENTIFY_LEN]),
        _ => Err(Status::INVALID_FIELD.dnr()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le16(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn le32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    #[test]
    fn io_controller_fields_at_nvme_id_ctrl_offsets() {
        let cfg = TargetConfig::default();
        let s = Subsystem::new("nqn.2024-01.io.tandem:a", "SER1");
        let b = identify_controller(&cfg, 0x21, ControllerKind::Io(&s));
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[4..8], b"SER1");
        assert_eq!(b[23], b' ', "SN space padded");
        assert_eq!(b[76] & 0b1010, 0b1010, "CMIC multi-controller and ANA");
        assert_eq!(b[77], cfg.mdts);
        assert_eq!(le16(&b, 78), 0x21);
        assert_eq!(le32(&b, 80), 0x0001_0400);
        assert_eq!(le32(&b, 92) & ((1 << 11) | (1 << 8)), (1 << 11) | (1 << 8));
        assert_eq!(le32(&b, 96) & (1 << 6), 0, "no traffic based keep alive");
        assert_eq!(b[111], 1);
        assert_eq!(b[259], 3);
        assert_eq!(b[261] & 0b110, 0b110);
        assert_ne!(le16(&b, 320), 0, "KAS");
        assert_ne!(b[342], 0, "ANATT");
        assert_eq!(b[343] & 0x1F, 0x1F, "ANACAP");
        assert_eq!(le32(&b, 344), cfg.anagrpmax);
        assert_eq!(le32(&b, 348), cfg.anagrpmax);
        assert_eq!((b[512], b[513]), (0x66, 0x44));
        assert_eq!(le16(&b, 514), cfg.max_queue_entries);
        let nn = le32(&b, 516);
        assert_eq!(
            le16(&b, 520),
            0x2D,
            "ONCS compare, DSM, write zeroes, reservations"
        );
        assert_eq!(b[525] & 1, 1, "VWC present");
        assert_eq!(le32(&b, 536) & 0x3, 1, "SGLS supported");
        assert_ne!(le32(&b, 536) & (1 << 20), 0, "SGL offsets");
        let mnan = le32(&b, 540);
        assert!(mnan != 0 && mnan <= nn);
        assert_eq!(&b[768..768 + 23], b"nqn.2024-01.io.tandem:a");
        assert!(le32(&b, 1792) >= 4);
        assert!(le32(&b, 1796) >= 1);
        // ICDOFF (1800-1801) must be 0: Linux nvme-tcp fails the controller ("icdoff is not
        // supported") otherwise; MSDBD is byte 1803 (struct nvme_id_ctrl).
        assert_eq!(le16(&b, 1800), 0, "ICDOFF");
        assert_eq!(b[1803], 1, "MSDBD");
        // the host disables ANA when the log it would read exceeds MDTS
        let ana_log_size = 16 + 32 * u64::from(le32(&b, 348)) + 4 * u64::from(mnan);
        assert!(ana_log_size <= u64::from(cfg.max_transfer()));
    }

    #[test]
    fn namespace_fields_at_nvme_id_ns_offsets() {
        let mut s = Subsystem::new("nqn.x", "s");
        s.namespaces.push(Namespace {
            nsid: 3,
            volume_uuid: [5; 16],
            block_size: 4096,
            blocks: 1000,
            ana_group: 2,
            write_protected: false,
        });
        let b = identify_namespace(&s.namespaces[0], &s);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1000);
        assert_eq!(b[25], 0);
        assert_eq!(b[30], 1);
        assert_eq!(b[33] & 0x7, 1, "deallocated blocks read as zeros");
        assert_eq!(le32(&b, 92), 2);
        assert_eq!(b[130], 12, "LBADS for 4096");
        assert_eq!(b[99], 0, "NSATTR: writable");
        s.namespaces[0].write_protected = true;
        let wp = identify_namespace(&s.namespaces[0], &s);
        assert_eq!(wp[99] & 1, 1, "NSATTR bit 0: write protected");
        let ids = crate::ident::namespace_ids(&[5; 16], 0);
        assert_eq!(&b[104..120], &ids.nguid);
        assert_eq!(&b[120..128], &ids.eui64);
        assert_eq!(
            identify_io(&TargetConfig::default(), 1, &s, 0x05, 3, 1),
            Err(Status::INVALID_FIELD.dnr()),
            "CNS 05h for an unknown command set"
        );
        assert!(identify_io(&TargetConfig::default(), 1, &s, 0x06, 0, 0).is_ok());
    }

    #[test]
    fn reservations_off_clears_oncs_and_rescap() {
        let mut s = Subsystem::new("nqn.x", "s");
        s.reservations = false;
        s.namespaces.push(Namespace {
            nsid: 1,
            volume_uuid: [5; 16],
            block_size: 512,
            blocks: 8,
            ana_group: 1,
            write_protected: false,
        });
        let c = identify_controller(&TargetConfig::default(), 1, ControllerKind::Io(&s));
        assert_eq!(le16(&c, 520) & (1 << 5), 0, "ONCS reservations");
        assert_eq!(
            le16(&c, 520) & 0xD,
            0xD,
            "compare, DSM, write zeroes still offered"
        );
        assert_eq!(identify_namespace(&s.namespaces[0], &s)[31], 0, "RESCAP");
        assert_eq!(identify_cs_independent(&s.namespaces[0], &s)[2], 0);
    }

    #[test]
    fn discovery_controller_type() {
        let b = identify_controller(&TargetConfig::default(), 1, ControllerKind::Discovery);
        assert_eq!(b[111], 2);
        assert_eq!(&b[768..768 + DISCOVERY_NQN.len()], DISCOVERY_NQN.as_bytes());
        assert_ne!(le16(&b, 320), 0);
    }
}
