//! The node-wide association registry: subsystems, discovery information and live
//! controllers (CNTLID allocation from this node's range, which queues each controller has).
//!
//! A plain struct; the gateway wraps it in a mutex and consults it when a connection emits
//! [`crate::Event::Connect`]. Each node gets its own CNTLID range so CNTLIDs are unique
//! across all nodes exporting a subsystem, as native multipath requires.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::discovery::{DiscoveryEntry, DiscoveryLog, DISCOVERY_NQN};
use crate::fabrics::{
    connect_data_offset, connect_sqe_offset, invalid_param_dw0, Connect, CNTLID_DYNAMIC,
};
use crate::features::WriteCache;
use crate::status::Status;
use crate::subsystem::Subsystem;

/// A Connect the connection validated and now needs admitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectRequest {
    /// The decoded Connect.
    pub connect: Connect,
}

/// What a controller connection is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    /// An NVM subsystem.
    Io(Arc<Subsystem>),
    /// The discovery subsystem.
    Discovery(Arc<DiscoveryLog>),
}

/// The registry's decision on a Connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new controller (admin queue) with a freshly allocated CNTLID.
    Admin {
        /// Allocated controller id.
        cntlid: u16,
        /// What it serves.
        target: AdminTarget,
        /// The controller's write cache setting (shared with its I/O queues).
        write_cache: WriteCache,
    },
    /// An I/O queue of existing controller `cntlid`.
    Io {
        /// Controller id.
        cntlid: u16,
        /// Subsystem snapshot.
        subsystem: Arc<Subsystem>,
        /// The controller's write cache setting, as its admin queue sets it.
        write_cache: WriteCache,
    },
    /// Refused: complete the Connect with this status and DW0 (IATTR/IPO).
    Refused {
        /// Status (command specific, fabrics).
        status: Status,
        /// CQE DW0.
        dw0: u32,
    },
}

/// One live association (a controller and its queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub host_id: [u8; 16],
    /// Connected I/O queue ids.
    pub io_queues: BTreeSet<u16>,
    /// The controller's volatile write cache setting.
    pub write_cache: WriteCache,
}

/// Node-wide NVMe-oF state shared by all connections.
#[derive(Debug, Clone)]
pub struct Registry {
    cntlids: RangeInclusive<u16>,
    next: u16,
    associations: BTreeMap<u16, Association>,
    subsystems: BTreeMap<String, Arc<Subsystem>>,
    discovery_entries: Vec<DiscoveryEntry>,
    discovery: Arc<DiscoveryLog>,
    discovery_limit: usize,
}

fn refused(status: Status, in_data: bool, offset: u16) -> Admission {
    Admission::Refused {
        status: status.dnr(),
        dw0: invalid_param_dw0(in_data, offset),
    }
}

impl Registry {
    /// A registry allocating CNTLIDs from `cntlids` (a sub-range of 1..=0xFFEF unique to
    /// this node).
    pub fn new(cntlids: RangeInclusive<u16>) -> Self {
        let lo = (*cntlids.start()).max(1);
        let hi = (*cntlids.end()).min(0xFFEF);
        Registry {
            cntlids: lo..=hi,
            next: lo,
            associations: BTreeMap::new(),
            subsystems: BTreeMap::new(),
            discovery_entries: Vec::new(),
            discovery: Arc::new(DiscoveryLog {
                genctr: 1,
                ..DiscoveryLog::default()
            }),
            discovery_limit: usize::MAX,
        }
    }

    /// Adds or replaces a subsystem snapshot; returns the previous one.
    pub fn set_subsystem(&mut self, subsys: Arc<Subsystem>) -> Option<Arc<Subsystem>> {
        let old = self.subsystems.insert(subsys.nqn.clone(), subsys);
        self.rebuild_discovery();
        old
    }

    /// Removes a subsystem (existing controllers keep their snapshot until torn down).
    pub fn remove_subsystem(&mut self, nqn: &str) -> Option<Arc<Subsystem>> {
        let old = self.subsystems.remove(nqn);
        self.rebuild_discovery();
        old
    }

    /// The NQNs of the subsystems, in order.
    pub fn subsystem_nqns(&self) -> impl Iterator<Item = &str> + '_ {
        self.subsystems.keys().map(String::as_str)
    }

    /// The current snapshot of subsystem `nqn`.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems.get(nqn).cloned()
    }

    /// Replaces the discovery entries (every portal of every node for every subsystem).
    pub fn set_discovery_entries(&mut self, mut entries: Vec<DiscoveryEntry>) {
        entries.sort();
        entries.dedup();
        self.discovery_entries = entries;
        self.rebuild_discovery();
    }

    /// The current discovery snapshot.
    pub fn discovery(&self) -> Arc<DiscoveryLog> {
        Arc::clone(&self.discovery)
    }

    fn rebuild_discovery(&mut self) {
        let allowed = self
            .subsystems
            .values()
            .map(|s| (s.nqn.clone(), s.allowed_hosts.clone()))
            .collect();
        if self.discovery.entries == self.discovery_entries
            && self.discovery.allowed_hosts == allowed
        {
            return;
        }
        self.discovery = Arc::new(DiscoveryLog {
            genctr: self.discovery.genctr.wrapping_add(1),
            entries: self.discovery_entries.clone(),
            allowed_hosts: allowed,
        });
    }

    /// The live association with `cntlid`.
    pub fn association(&self, cntlid: u16) -> Option<&Association> {
        self.associations.get(&cntlid)
    }

    /// CNTLIDs of live controllers of subsystem `nqn` (to push snapshots to them).
    pub fn controllers_of<'a>(&'a self, nqn: &'a str) -> impl Iterator<Item = u16> + 'a {
        self.associations
            .iter()
            .filter(move |(_, a)| a.subnqn == nqn)
            .map(|(c, _)| *c)
    }

    fn allocate(&mut self) -> Option<u16> {
        let (lo, hi) = (*self.cntlids.start(), *self.cntlids.end());
        if lo > hi {
            return None;
        }
        let span = u32::from(hi - lo) + 1;
        for i in 0..span {
            let c = lo + ((u32::from(self.next.saturating_sub(lo)) + i) % span) as u16;
            if !self.associations.contains_key(&c) {
                self.next = if c == hi { lo } else { c + 1 };
                return Some(c);
            }
        }
        None
    }

    /// Caps the discovery controllers live at once (each takes a CNTLID of this node's
    /// range): beyond it a discovery Connect is refused with Controller Busy.
    pub fn set_discovery_limit(&mut self, limit: usize) {
        self.discovery_limit = limit;
    }

    /// Decides on a Connect: subsystem known, host allowed, CNTLID valid, queue not taken.
    pub fn admit(&mut self, req: &ConnectRequest) -> Admission {
        let c = &req.connect;
        let discovery = c.subnqn == DISCOVERY_NQN;
        let subsys = if discovery {
            None
        } else {
            match self.subsystems.get(&c.subnqn) {
                Some(s) => Some(Arc::clone(s)),
                None => {
                    return refused(
                        Status::CONNECT_INVALID_PARAM,
                        true,
                        connect_data_offset::SUBNQN,
                    )
                }
            }
        };
        if let Some(s) = &subsys {
            if !s.host_allowed(&c.hostnqn) {
                return refused(
                    Status::CONNECT_INVALID_HOST,
                    true,
                    connect_data_offset::HOSTNQN,
                );
            }
        }
        if c.qid == 0 {
            if c.cntlid != CNTLID_DYNAMIC {
                return refused(
                    Status::CONNECT_INVALID_PARAM,
                    true,
                    connect_data_offset::CNTLID,
                );
            }
            let discovering = || {
                self.associations
                    .values()
                    .filter(|a| a.subnqn == DISCOVERY_NQN)
                    .count()
            };
            if discovery && discovering() >= self.discovery_limit {
                return Admission::Refused {
                    status: Status::CONNECT_CTRL_BUSY,
                    dw0: 0,
                };
            }
            let Some(cntlid) = self.allocate() else {
                return Admission::Refused {
                    status: Status::CONNECT_CTRL_BUSY,
                    dw0: 0,
                };
            };
            self.associations.insert(
                cntlid,
                Association {
                    subnqn: c.subnqn.clone(),
                    hostnqn: c.hostnqn.clone(),
                    host_id: c.host_id,
                    io_queues: BTreeSet::new(),
                    write_cache: WriteCache::new(),
                },
            );
            let write_cache = self.associations[&cntlid].write_cache.clone();
            let target = match subsys {
                Some(s) => AdminTarget::Io(s),
                None => AdminTarget::Discovery(self.discovery()),
            };
            return Admission::Admin {
                cntlid,
                target,
                write_cache,
            };
        }
        let Some(subsys) = subsys else {
            return refused(
                Status::CONNECT_INVALID_PARAM,
                false,
                connect_sqe_offset::QID,
            );
        };
        match self.associations.get_mut(&c.cntlid) {
            Some(a) if a.subnqn == c.subnqn && a.hostnqn == c.hostnqn => {
                if a.host_id != c.host_id {
                    return refused(
                        Status::CONNECT_INVALID_PARAM,
                        true,
                        connect_data_offset::HOSTID,
                    );
                }
                if !a.io_queues.insert(c.qid) {
                    return refused(
                        Status::CONNECT_INVALID_PARAM,
                        false,
                        connect_sqe_offset::QID,
                    );
                }
                Admission::Io {
                    cntlid: c.cntlid,
                    subsystem: subsys,
                    write_cache: a.write_cache.clone(),
                }
            }
            _ => refused(
                Status::CONNECT_INVALID_PARAM,
                true,
                connect_data_offset::CNTLID,
            ),
        }
    }

    /// Ends association `cntlid` (admin queue gone, shutdown or keep-alive expiry).
    pub fn release(&mut self, cntlid: u16) -> Option<Association> {
        self.associations.remove(&cntlid)
    }

    /// Forgets I/O queue `qid` of `cntlid` (its connection closed).
    pub fn release_queue(&mut self, cntlid: u16, qid: u16) {
        if let Some(a) = self.associations.get_mut(&cntlid) {
            a.io_queues.remove(&qid);
        }
    }
}
