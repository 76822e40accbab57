//! Discovery log page (LID 70h, NVMe-oF 1.1 section 5.3) served by the discovery controller.
//!
//! The gateway lists every portal of every node for every subsystem; the registry turns that
//! into a [`DiscoveryLog`] snapshot whose GENCTR changes whenever the list (or a subsystem's
//! host allow-list) changes, which libnvme relies on to detect a log that changed while it
//! was reading it in pieces.

use std::collections::BTreeMap;

use crate::padded::nul_padded;

/// Well-known NQN of the discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Length of the discovery log header.
pub const DISC_HEADER_LEN: usize = 1024;
/// Length of one discovery log entry.
pub const DISC_ENTRY_LEN: usize = 1024;
/// TRTYPE of NVMe/TCP.
pub const TRTYPE_TCP: u8 = 3;
/// TREQ: SQ flow control disable supported (secure channel not specified).
pub const TREQ: u8 = 1 << 2;
/// Admin queue size advertised in entries (ASQSZ).
pub const ASQSZ: u16 = 32;

/// Address family of a portal (ADRFAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl AddressFamily {
    /// ADRFAM code.
    pub fn code(self) -> u8 {
        match self {
            AddressFamily::Ipv4 => 1,
            AddressFamily::Ipv6 => 2,
        }
    }
}

/// One NVMe/TCP listening address of one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Portal {
    /// Address family.
    pub adrfam: AddressFamily,
    /// Address hosts can reach (never a wildcard address).
    pub traddr: String,
    /// TCP port as decimal text (TRSVCID), e.g. "4420".
    pub trsvcid: String,
    /// NVM subsystem port id, unique per portal across the cluster.
    pub portid: u16,
}

/// Subsystem type of a discovery entry (SUBTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubsystemType {
    /// An NVM subsystem (2).
    Nvme,
    /// The current discovery subsystem (3).
    CurrentDiscovery,
}

impl SubsystemType {
    /// SUBTYPE code.
    pub fn code(self) -> u8 {
        match self {
            SubsystemType::Nvme => 2,
            SubsystemType::CurrentDiscovery => 3,
        }
    }
}

/// One record of the discovery log: a subsystem reachable through a portal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryEntry {
    /// Subsystem type.
    pub subtype: SubsystemType,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Where to connect.
    pub portal: Portal,
}

/// A snapshot of the discovery information served to discovery controllers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryLog {
    /// Generation counter: changes whenever the entries or allow-lists change.
    pub genctr: u64,
    /// All entries, unfiltered.
    pub entries: Vec<DiscoveryEntry>,
    /// Host allow-list per subsystem NQN (absent or None: any host).
    pub allowed_hosts: BTreeMap<String, Option<Vec<String>>>,
}

impl DiscoveryLog {
    /// Entries `hostnqn` may see: NVM subsystems it is allowed into, plus discovery entries.
    pub fn entries_for<'a>(&'a self, hostnqn: &'a str) -> impl Iterator<Item = &'a DiscoveryEntry> {
        self.entries.iter().filter(move |e| {
            e.subtype != SubsystemType::Nvme
                || match self.allowed_hosts.get(&e.subnqn) {
                    Some(Some(hosts)) => hosts.iter().any(|h| h == hostnqn),
                    _ => true,
                }
        })
    }

    /// The whole log page as `hostnqn` sees it (header plus entries).
    pub fn page_for(&self, hostnqn: &str) -> Vec<u8> {
        let entries: Vec<&DiscoveryEntry> = self.entries_for(hostnqn).collect();
        let mut b = vec![0u8; DISC_HEADER_LEN + entries.len() * DISC_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.genctr.to_le_bytes());
        b[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        // RECFMT 0 at 16..18
        for (i, e) in entries.iter().enumerate() {
            let o = DISC_HEADER_LEN + i * DISC_ENTRY_LEN;
            if let Some(rec) = b.get_mut(o..o + DISC_ENTRY_LEN) {
                encode_entry(e, rec);
            }
        }
        b
    }
}

fn encode_entry(e: &DiscoveryEntry, rec: &mut [u8]) {
    let mut put = |off: usize, bytes: &[u8]| {
        if let Some(d) = rec.get_mut(off..off + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    };
    put(
        0,
        &[TRTYPE_TCP, e.portal.adrfam.code(), e.subtype.code(), TREQ],
    );
    put(4, &e.portal.portid.to_le_bytes());
    put(6, &0xFFFFu16.to_le_bytes()); // dynamic controllers only
    put(8, &ASQSZ.to_le_bytes());
    put(32, &nul_padded(&e.portal.trsvcid, 32));
    put(256, &nul_padded(&e.subnqn, 256));
    put(512, &nul_padded(&e.portal.traddr, 256));
    // TSAS for TCP: SECTYPE 0 (no security) at 768
}
