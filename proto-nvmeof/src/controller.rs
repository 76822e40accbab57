//! One NVMe controller as seen through its admin queue: controller properties (CAP, VS,
//! CC, CSTS), features, keep-alive timer, and asynchronous events.
//!
//! The controller is sans-IO: [`Controller::handle`] takes a decoded admin command and the
//! current time and returns the responses to send; held Asynchronous Event Requests come
//! back later from [`Controller::update_subsystem`] / [`Controller::update_discovery`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cqe::Response;
use crate::discovery::DiscoveryLog;
use crate::fabrics::{property, Connect, PropertyAccess};
use crate::features::{Features, WriteCache};
use crate::identify::{OAES_ANA_CHANGE, OAES_DISC_CHANGE, OAES_NS_ATTR};
use crate::registry::AdminTarget;
use crate::resv_notice::{NoticeKind, Notices};
use crate::sqe::Sqe;
use crate::status::Status;
use crate::subsystem::{Subsystem, TargetConfig};

/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1 << 0;
/// CSTS.CFS (controller fatal status).
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST = shutdown processing complete.
pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// AER completion DW0 for an ANA change notice (type notice, info 03h, log 0Ch).
pub const AEN_ANA_CHANGE: u32 = 0x02 | (0x03 << 8) | (0x0C << 16);
/// AER completion DW0 for a namespace attribute notice (type notice, info 00h, log 04h).
pub const AEN_NS_CHANGED: u32 = 0x02 | (0x04 << 16);
/// AER completion DW0 for a discovery log change notice (type notice, info F0h, log 70h).
pub const AEN_DISC_CHANGE: u32 = 0x02 | (0xF0 << 8) | (0x70 << 16);
/// AER completion DW0 for available reservation notifications (type I/O command specific
/// status, info 00h, log 80h).
pub const AEN_RESV_LOG: u32 = 0x06 | (0x80 << 16);

/// What a controller serves.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Io(Arc<Subsystem>),
    Discovery(Arc<DiscoveryLog>),
}

/// An NVMe controller (one association), driven by its admin queue.
#[derive(Debug, Clone)]
pub struct Controller {
    pub(crate) cfg: Arc<TargetConfig>,
    pub(crate) cntlid: u16,
    pub(crate) hostnqn: String,
    pub(crate) host_id: [u8; 16],
    pub(crate) kind: Kind,
    pub(crate) cc: u32,
    pub(crate) csts: u32,
    pub(crate) features: Features,
    /// The Volatile Write Cache feature as the controller's I/O queues see it.
    pub(crate) write_cache: WriteCache,
    kato: Option<Duration>,
    last_keep_alive: Instant,
    expired: bool,
    pub(crate) aers: VecDeque<u16>,
    events: VecDeque<u32>,
    masked: BTreeSet<u32>,
    pub(crate) changed_ns: BTreeSet<u32>,
    pub(crate) resv: Notices,
}

impl Controller {
    /// A controller created by an admitted admin-queue Connect at time `now`.
    pub fn new(
        cfg: Arc<TargetConfig>,
        cntlid: u16,
        connect: &Connect,
        target: AdminTarget,
        write_cache: WriteCache,
        now: Instant,
    ) -> Self {
        let kind = match target {
            AdminTarget::Io(s) => Kind::Io(s),
            AdminTarget::Discovery(d) => Kind::Discovery(d),
        };
        let mut c = Controller {
            cfg,
            cntlid,
            hostnqn: connect.hostnqn.clone(),
            host_id: connect.host_id,
            kind,
            cc: 0,
            csts: 0,
            features: Features::default(),
            write_cache,
            kato: None,
            last_keep_alive: now,
            expired: false,
            aers: VecDeque::new(),
            events: VecDeque::new(),
            masked: BTreeSet::new(),
            changed_ns: BTreeSet::new(),
            resv: Notices::default(),
        };
        c.set_kato(connect.kato_ms);
        c
    }

    /// Controller id.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// Host identifier from the Connect data (the reservation owner identity).
    pub fn host_id(&self) -> [u8; 16] {
        self.host_id
    }

    /// Host NQN from the Connect data.
    pub fn hostnqn(&self) -> &str {
        &self.hostnqn
    }

    /// Whether this is a discovery controller.
    pub fn is_discovery(&self) -> bool {
        matches!(self.kind, Kind::Discovery(_))
    }

    /// Current CSTS value.
    pub fn csts(&self) -> u32 {
        self.csts
    }

    pub(crate) fn set_kato(&mut self, ms: u32) {
        let ms = match ms {
            0 if self.is_discovery() => self.cfg.discovery_kato_ms,
            // An I/O association nobody keeps alive must still end some day.
            0 => self.cfg.io_kato_default_ms,
            ms => ms,
        };
        self.features.kato_ms = ms;
        self.kato = (ms != 0).then(|| Duration::from_millis(u64::from(ms)));
    }

    /// Restarts the keep-alive timer (Keep Alive, or any admin command).
    pub(crate) fn touch(&mut self, now: Instant) {
        if now > self.last_keep_alive {
            self.last_keep_alive = now;
        }
    }

    /// When the association expires unless a Keep Alive arrives first (None: no timeout).
    pub fn kato_deadline(&self) -> Option<Instant> {
        self.kato.map(|k| self.last_keep_alive + k)
    }

    /// Whether the keep-alive timer has expired at `now`; once true it stays true and the
    /// caller must tear the association down (all its queues).
    pub fn poll_timeout(&mut self, now: Instant) -> bool {
        if let Some(deadline) = self.kato_deadline() {
            if now >= deadline {
                self.expired = true;
            }
        }
        self.expired
    }

    /// Async event notices this controller can raise (OAES).
    pub(crate) fn supported_aens(&self) -> u32 {
        match &self.kind {
            Kind::Io(s) if s.ana_enabled => OAES_NS_ATTR | OAES_ANA_CHANGE,
            Kind::Io(_) => OAES_NS_ATTR,
            Kind::Discovery(_) => OAES_DISC_CHANGE,
        }
    }

    fn cap(&self) -> u64 {
        let mqes = u64::from(self.cfg.max_queue_entries.max(2) - 1);
        mqes | (u64::from(self.cfg.cap_timeout) << 24) | (1 << 37)
    }

    /// Property Get.
    pub fn property_get(&self, sqe: &Sqe) -> Response {
        let p = PropertyAccess::parse(sqe);
        let value = match (p.eight_bytes, p.offset) {
            (true, property::CAP) => self.cap(),
            (false, property::VS) => u64::from(self.cfg.version),
            (false, property::CC) => u64::from(self.cc),
            (false, property::CSTS) => u64::from(self.csts),
            _ => return Response::status(sqe.cid(), Status::INVALID_FIELD.dnr()),
        };
        Response {
            cid: sqe.cid(),
            result: value,
            ..Response::default()
        }
    }

    /// Property Set (only CC is writable).
    pub fn property_set(&mut self, sqe: &Sqe) -> Response {
        let p = PropertyAccess::parse(sqe);
        if p.eight_bytes || p.offset != property::CC {
            return Response::status(sqe.cid(), Status::INVALID_FIELD.dnr());
        }
        self.write_cc(p.value as u32);
        Response::status(sqe.cid(), Status::SUCCESS)
    }

    fn write_cc(&mut self, new: u32) {
        let old = self.cc;
        self.cc = new;
        let en = new & 1 != 0;
        if en && old & 1 == 0 {
            let field = |shift: u32, mask: u32| (new >> shift) & mask;
            let valid = field(4, 7) == 0
                && field(7, 0xF) == 0
                && field(11, 7) == 0
                && field(16, 0xF) == 6
                && field(20, 0xF) == 4;
            self.csts = if valid { CSTS_RDY } else { CSTS_CFS };
        } else if !en && old & 1 != 0 {
            self.csts = 0;
            self.aers.clear();
            self.events.clear();
            self.resv.reset();
        }
        if (new >> 14) & 3 != 0 && (old >> 14) & 3 == 0 {
            self.csts = (self.csts & !(3 << 2)) | CSTS_SHST_COMPLETE;
        }
    }

    /// Queues an async event unless disabled, masked until its log is read, or pending.
    pub(crate) fn raise(&mut self, aec_bit: u32, dw0: u32) {
        if self.features.async_events & aec_bit != 0 {
            self.queue_event(dw0);
        }
    }

    /// Queues an async event that has no enable bit (I/O command set specific ones) unless
    /// it is masked until its log is read, or already pending.
    pub(crate) fn queue_event(&mut self, dw0: u32) {
        if !self.masked.contains(&dw0) && !self.events.contains(&dw0) {
            self.events.push_back(dw0);
        }
    }

    /// Another host (over either protocol) changed this host's reservation state on namespace
    /// `nsid`: records a Reservation Notification log page unless masked, raises the
    /// event, and returns the AERs that complete because of it.
    pub fn reservation_notice(&mut self, kind: NoticeKind, nsid: u32) -> Vec<Response> {
        let Kind::Io(s) = &self.kind else {
            return Vec::new();
        };
        if s.namespace(nsid).is_none() || !self.resv.push(kind, nsid) {
            return Vec::new();
        }
        self.queue_event(AEN_RESV_LOG);
        self.deliver()
    }

    /// Completes outstanding AERs with pending events.
    pub(crate) fn deliver(&mut self) -> Vec<Response> {
        let mut out = Vec::new();
        while !self.aers.is_empty() && !self.events.is_empty() {
            if let (Some(cid), Some(ev)) = (self.aers.pop_front(), self.events.pop_front()) {
                self.masked.insert(ev);
                out.push(Response::dw0(cid, ev));
            }
        }
        out
    }

    /// The host read log page `lid` without RAE: its event may be reported again.
    pub(crate) fn unmask_log(&mut self, lid: u8) {
        self.masked.retain(|ev| (ev >> 16) as u8 != lid);
    }

    /// Installs a new snapshot of the subsystem; raises ANA change and namespace attribute
    /// notices and returns the AERs that complete because of them.
    pub fn update_subsystem(&mut self, new: Arc<Subsystem>) -> Vec<Response> {
        let Kind::Io(old) = &self.kind else {
            return Vec::new();
        };
        let old = Arc::clone(old);
        if new.ana_enabled && old.ana_change_count != new.ana_change_count {
            self.raise(OAES_ANA_CHANGE, AEN_ANA_CHANGE);
        }
        let mut changed = Vec::new();
        for ns in &new.namespaces {
            if old.namespace(ns.nsid) != Some(ns) {
                changed.push(ns.nsid);
            }
        }
        for ns in &old.namespaces {
            if new.namespace(ns.nsid).is_none() {
                changed.push(ns.nsid);
            }
        }
        if !changed.is_empty() {
            self.changed_ns.extend(changed);
            self.raise(OAES_NS_ATTR, AEN_NS_CHANGED);
        }
        self.kind = Kind::Io(new);
        self.deliver()
    }

    /// Installs a new discovery snapshot; raises a discovery change notice when GENCTR
    /// moved and returns the AERs that complete.
    pub fn update_discovery(&mut self, new: Arc<DiscoveryLog>) -> Vec<Response> {
        let Kind::Discovery(old) = &self.kind else {
            return Vec::new();
        };
        if old.genctr != new.genctr {
            self.raise(OAES_DISC_CHANGE, AEN_DISC_CHANGE);
        }
        self.kind = Kind::Discovery(new);
        self.deliver()
    }
}
