//! What the gateway tells the protocol about the node and its subsystems: node-wide
//! transport/controller limits ([`TargetConfig`]) and per-subsystem identity, namespaces,
//! host allow-list and ANA groups ([`Subsystem`]).
//!
//! Subsystems are shared as `Arc<Subsystem>` snapshots: the gateway builds a new snapshot
//! when something changes and hands it to every connection, which diffs old against new to
//! raise asynchronous events (ANA change, namespace attribute change).

use crate::status::Status;
use std::sync::Arc;

/// ANA state of a group (NVMe base 2.0 section 8.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnaState {
    /// ANA Optimized.
    Optimized,
    /// ANA Non-Optimized.
    NonOptimized,
    /// ANA Inaccessible.
    Inaccessible,
    /// ANA Persistent Loss.
    PersistentLoss,
    /// ANA Change (transition in progress).
    Change,
}

impl AnaState {
    /// The state code in the ANA log page group descriptor.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => 0x01,
            AnaState::NonOptimized => 0x02,
            AnaState::Inaccessible => 0x03,
            AnaState::PersistentLoss => 0x04,
            AnaState::Change => 0x0F,
        }
    }

    /// The path-related status an I/O command gets in this state (DNR clear so the host
    /// fails over), or None when the path serves I/O.
    pub fn io_status(self) -> Option<Status> {
        match self {
            AnaState::Optimized | AnaState::NonOptimized => None,
            AnaState::Inaccessible => Some(Status::ANA_INACCESSIBLE),
            AnaState::PersistentLoss => Some(Status::ANA_PERSISTENT_LOSS),
            AnaState::Change => Some(Status::ANA_TRANSITION),
        }
    }
}

impl From<block_core::AccessState> for AnaState {
    /// The ANA state NVMe hosts see for the volume's access state on this node (the role table
    /// of docs/architecture.md): standby and unavailable are inaccessible (0x302), a transition
    /// is "change" (0x303); both answer I/O with DNR clear so the host fails over.
    fn from(s: block_core::AccessState) -> Self {
        use block_core::AccessState as A;
        match s {
            A::Optimized => AnaState::Optimized,
            A::NonOptimized => AnaState::NonOptimized,
            A::Standby | A::Unavailable => AnaState::Inaccessible,
            A::Transitioning => AnaState::Change,
        }
    }
}

/// One ANA group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnaGroup {
    /// ANA group identifier (non-zero, <= ANAGRPMAX).
    pub id: u32,
    /// Current state on this node's controllers.
    pub state: AnaState,
    /// Per-group change count (ANA log group descriptor CHGCNT).
    pub change_count: u64,
}

/// One namespace backed by one volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Namespace identifier (1..=NN).
    pub nsid: u32,
    /// Volume UUID: the source of NGUID, EUI-64 and UUID.
    pub volume_uuid: [u8; 16],
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Size in logical blocks.
    pub blocks: u64,
    /// ANA group the namespace belongs to.
    pub ana_group: u32,
    /// Write protected (a read-only view of a snapshot): Identify Namespace NSATTR bit 0, and
    /// every command that would change it answered Namespace Is Write Protected.
    pub write_protected: bool,
}

impl Namespace {
    /// log2 of the block size (LBADS).
    pub fn lbads(&self) -> u8 {
        self.block_size.max(1).trailing_zeros() as u8
    }
}

/// An NVM subsystem as exported by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsystem {
    /// Subsystem NQN (identical on every node exporting it).
    pub nqn: String,
    /// Serial number, stable per subsystem (Identify SN, 20 ASCII bytes).
    pub serial: String,
    /// Model number (Identify MN, 40 ASCII bytes).
    pub model: String,
    /// Firmware revision (Identify FR, 8 ASCII bytes).
    pub firmware: String,
    /// IEEE OUI / company id (24 bits) used in Identify IEEE and the EUI-64.
    pub ieee_company_id: u32,
    /// Host NQNs allowed to connect; None allows any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Hosts that must authenticate with DH-HMAC-CHAP, by host NQN, with their secrets.
    pub dhchap: std::collections::BTreeMap<String, Arc<crate::auth::DhchapPolicy>>,
    /// Namespaces, any order.
    pub namespaces: Vec<Namespace>,
    /// Whether ANA is advertised (CMIC bit 3, ANA log, path statuses).
    pub ana_enabled: bool,
    /// ANA groups.
    pub ana_groups: Vec<AnaGroup>,
    /// ANA log header CHGCNT: bumped on every ANA change.
    pub ana_change_count: u64,
    /// Whether reservations are offered (ONCS bit 5, RESCAP, the reservation opcodes). A
    /// gateway without a reservation store turns this off so hosts see the commands as
    /// unsupported instead of failing at run time.
    pub reservations: bool,
}

impl Subsystem {
    /// A subsystem with no namespaces, ANA enabled with group 1 optimized.
    pub fn new(nqn: &str, serial: &str) -> Self {
        Subsystem {
            nqn: nqn.to_string(),
            serial: serial.to_string(),
            model: "Tandem Volume".to_string(),
            firmware: "0.1".to_string(),
            ieee_company_id: crate::ident::DEFAULT_COMPANY_ID,
            allowed_hosts: None,
            dhchap: std::collections::BTreeMap::new(),
            namespaces: Vec::new(),
            ana_enabled: true,
            ana_groups: vec![AnaGroup {
                id: 1,
                state: AnaState::Optimized,
                change_count: 1,
            }],
            ana_change_count: 1,
            reservations: true,
        }
    }

    /// The namespace with `nsid`.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }

    /// Sets the size of namespace `nsid` (a volume was resized). Returns whether anything
    /// changed; a controller given the new snapshot ([`crate::Connection::update_subsystem`])
    /// then lists the namespace in its Changed Namespace List log and raises the Namespace
    /// Attribute Changed event, and Identify Namespace reports the new size.
    pub fn set_namespace_blocks(&mut self, nsid: u32, blocks: u64) -> bool {
        match self.namespaces.iter_mut().find(|n| n.nsid == nsid) {
            Some(n) if n.blocks != blocks => {
                n.blocks = blocks;
                true
            }
            _ => false,
        }
    }

    /// The ANA state of `group` (Optimized when ANA is off or the group is unknown).
    pub fn ana_state(&self, group: u32) -> AnaState {
        if !self.ana_enabled {
            return AnaState::Optimized;
        }
        self.ana_groups
            .iter()
            .find(|g| g.id == group)
            .map_or(AnaState::Optimized, |g| g.state)
    }

    /// Sets the state of `group`, bumping the change counts when it changes. Returns whether
    /// anything changed.
    pub fn set_ana_state(&mut self, group: u32, state: AnaState) -> bool {
        let next = self.ana_change_count.wrapping_add(1).max(1);
        match self.ana_groups.iter_mut().find(|g| g.id == group) {
            Some(g) if g.state == state => return false,
            Some(g) => {
                g.state = state;
                g.change_count = next;
            }
            None => self.ana_groups.push(AnaGroup {
                id: group,
                state,
                change_count: next,
            }),
        }
        self.ana_change_count = next;
        true
    }

    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        match &self.allowed_hosts {
            None => true,
            // An anonymous host (empty Host NQN) is never on a list.
            Some(_) if hostnqn.is_empty() => false,
            Some(hosts) => hosts.iter().any(|h| h == hostnqn),
        }
    }
}

/// Node-wide limits and identity shared by every controller on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// PCI vendor id reported in Identify (0 for none).
    pub vendor_id: u16,
    /// NVMe version reported in VS and Identify VER (e.g. 0x0001_0400 for 1.4.0).
    pub version: u32,
    /// Maximum data transfer size as a power of two of 4 KiB pages (Identify MDTS).
    pub mdts: u8,
    /// In-capsule data bytes accepted on I/O queues (IOCCSZ = (64 + this) / 16).
    pub io_in_capsule: u32,
    /// In-capsule data bytes accepted on the admin queue (Linux sends up to 8 KiB).
    pub admin_in_capsule: u32,
    /// MAXH2CDATA advertised in ICResp (multiple of 4, >= 4096).
    pub maxh2cdata: u32,
    /// Largest range requested by one R2T.
    pub max_r2t_len: u32,
    /// Commands per connection that may hold an R2T write buffer at once.
    pub max_r2t_commands: usize,
    /// Largest C2HData payload per PDU (reads are split into PDUs of this size).
    pub max_c2h_data: u32,
    /// Maximum queue entries (CAP.MQES + 1, Identify MAXCMD).
    pub max_queue_entries: u16,
    /// I/O queues granted per controller (Set Features Number of Queues).
    pub max_io_queues: u16,
    /// Identify NN: highest namespace identifier.
    pub max_nsid: u32,
    /// Identify MNAN: maximum number of namespaces (<= NN).
    pub mnan: u32,
    /// Identify ANAGRPMAX and NANAGRPID.
    pub anagrpmax: u32,
    /// Identify ANATT: seconds an ANA transition may take.
    pub anatt: u8,
    /// Identify KAS: keep-alive granularity in 100 ms units.
    pub kas: u16,
    /// KATO used by a discovery controller whose host asked for none (milliseconds).
    pub discovery_kato_ms: u32,
    /// KATO used by an I/O controller whose host asked for none (milliseconds): an
    /// association nobody keeps alive still ends, and its CNTLID is released.
    pub io_kato_default_ms: u32,
    /// Time from a connection's start until its Connect must have been admitted
    /// (milliseconds): a peer that opens a connection and sends no ICReq or no Connect is
    /// dropped ([`crate::CloseReason::ConnectTimeout`]).
    pub connect_timeout_ms: u32,
    /// CAP.TO: worst-case ready time in 500 ms units.
    pub cap_timeout: u8,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            vendor_id: 0,
            version: 0x0001_0400,
            mdts: 9,
            io_in_capsule: 16384,
            admin_in_capsule: 8192,
            maxh2cdata: 1 << 20,
            max_r2t_len: 1 << 20,
            max_r2t_commands: 8,
            max_c2h_data: 1 << 20,
            max_queue_entries: 1024,
            max_io_queues: 64,
            max_nsid: 1024,
            mnan: 1024,
            anagrpmax: 128,
            anatt: 10,
            kas: 10,
            discovery_kato_ms: 120_000,
            io_kato_default_ms: 120_000,
            connect_timeout_ms: 15_000,
            cap_timeout: 15,
        }
    }
}

impl TargetConfig {
    /// Largest data transfer in bytes (MDTS with 4 KiB pages).
    pub fn max_transfer(&self) -> u32 {
        4096u32
            .checked_shl(u32::from(self.mdts))
            .unwrap_or(u32::MAX)
    }

    /// Identify IOCCSZ: I/O command capsule size in 16-byte units (SQE included).
    pub fn ioccsz(&self) -> u32 {
        (64 + self.io_in_capsule).div_ceil(16)
    }

    /// Largest PLEN a connection will accept from a host.
    pub fn max_host_plen(&self) -> u32 {
        let capsule = 72 + 4 + self.io_in_capsule.max(self.admin_in_capsule) + 4;
        let data = 24 + 4 + self.maxh2cdata + 4;
        capsule.max(data).saturating_add(256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ana_change_bumps_counters() {
        let mut s = Subsystem::new("nqn.x", "sn");
        let before = s.ana_change_count;
        assert!(!s.set_ana_state(1, AnaState::Optimized));
        assert_eq!(s.ana_change_count, before);
        assert!(s.set_ana_state(1, AnaState::Inaccessible));
        assert!(s.ana_change_count > before);
        assert_eq!(s.ana_groups[0].change_count, s.ana_change_count);
        assert_eq!(s.ana_state(1), AnaState::Inaccessible);
    }

    #[test]
    fn an_anonymous_host_is_admitted_only_where_any_host_is() {
        let mut s = Subsystem::new("nqn.x", "sn");
        assert!(s.host_allowed(""));
        s.allowed_hosts = Some(vec!["nqn.h".into()]);
        assert!(!s.host_allowed(""));
        assert!(s.host_allowed("nqn.h"));
        s.allowed_hosts = Some(vec![String::new()]);
        assert!(!s.host_allowed(""), "an empty entry admits nobody");
    }

    #[test]
    fn default_in_capsule_fits_16k_writes() {
        let c = TargetConfig::default();
        assert!(c.ioccsz() * 16 - 64 >= 16384);
        assert!(c.maxh2cdata % 4 == 0 && c.maxh2cdata >= 4096);
    }
}
