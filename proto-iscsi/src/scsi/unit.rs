//! The logical unit: per-LU state (capacity, ALUA groups, unit attentions per I_T nexus, the
//! volume's shared reservations) and the command pipeline UA -> ALUA -> reservation check ->
//! command.

use std::collections::{HashMap, VecDeque};

use block_core::{Registrant, SharedReservations};
use bytes::Bytes;

use super::alua::{self, AccessState, Alua, PortGroup};
use super::cdb::{self, Cdb};
use super::config::LuConfig;
use super::opcodes::{self, pr_class};
use super::pr::{notice_asc, registrant};
use super::pr_cmd::{self, PrOutError};
use super::sense::{
    Asc, Sense, SenseKey, ASC_ASYMMETRIC_ACCESS_STATE_CHANGED, ASC_CAPACITY_DATA_CHANGED,
    ASC_NO_ADDITIONAL_SENSE, ASC_POWER_ON_RESET, ASC_REPORTED_LUNS_DATA_CHANGED,
    ASC_THIN_PROVISIONING_SOFT_THRESHOLD,
};
use super::task::{Begun, BlockOp, BlockResult, Completion, Nexus, PendingTask, Step, TaskKind};
use super::{capacity, inquiry, luns, mode, rw};

/// Most unit attentions queued per I_T nexus; older distinct conditions are kept first.
const MAX_PENDING_UA: usize = 8;
/// What the LU remembers about one I_T nexus.
#[derive(Debug, Clone)]
struct NexusState {
    port: Registrant,
    unit_attentions: VecDeque<Asc>,
}

/// One emulated SCSI block device backed by a volume the caller owns.
#[derive(Debug, Clone)]
pub struct LogicalUnit {
    cfg: LuConfig,
    capacity: u64,
    groups: Vec<PortGroup>,
    luns: Vec<u16>,
    nexuses: HashMap<u64, NexusState>,
    pub(super) reserve6: Option<u64>,
    /// The volume's one reservation state, shared with every other front end of the volume.
    resv: SharedReservations,
}

impl LogicalUnit {
    /// A logical unit of `capacity` blocks with one active/optimized port group (id 1, port 1)
    /// and a LUN inventory of just LUN 0.
    pub fn new(cfg: LuConfig, capacity: u64) -> Self {
        LogicalUnit {
            cfg,
            capacity,
            groups: vec![PortGroup {
                id: 1,
                state: AccessState::Optimized,
                preferred: false,
                relative_ports: vec![1],
            }],
            luns: vec![0],
            nexuses: HashMap::new(),
            reserve6: None,
            resv: SharedReservations::new(),
        }
    }

    /// The same unit sharing `resv`, the reservation state of its volume (which the NVMe/TCP
    /// namespaces of the volume share too).
    pub fn with_reservations(mut self, resv: SharedReservations) -> Self {
        self.resv = resv;
        self
    }

    /// The volume's reservation state this unit works on.
    pub fn reservations(&self) -> &SharedReservations {
        &self.resv
    }

    /// The static configuration.
    pub fn config(&self) -> &LuConfig {
        &self.cfg
    }

    /// Current capacity in blocks.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Changes the capacity after a volume resize; every nexus gets UA CAPACITY DATA HAS CHANGED.
    pub fn set_capacity(&mut self, blocks: u64) {
        if blocks != self.capacity {
            self.capacity = blocks;
            self.raise_all(ASC_CAPACITY_DATA_CHANGED);
        }
    }

    /// Replaces the target port groups reported by REPORT TARGET PORT GROUPS.
    pub fn set_port_groups(&mut self, groups: Vec<PortGroup>) {
        self.groups = groups;
        self.raise_all(ASC_ASYMMETRIC_ACCESS_STATE_CHANGED);
    }

    /// The configured port groups.
    pub fn port_groups(&self) -> &[PortGroup] {
        &self.groups
    }

    /// Sets the access state of group `id`; raises ASYMMETRIC ACCESS STATE CHANGED once per
    /// nexus when it changed. Returns false when no such group exists.
    pub fn set_access_state(&mut self, id: u16, state: AccessState) -> bool {
        let Some(g) = self.groups.iter_mut().find(|g| g.id == id) else {
            return false;
        };
        if g.state != state {
            g.state = state;
            self.raise_all(ASC_ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
        true
    }

    /// Access state seen through port group `tpg`; ports of unknown groups count as optimized.
    pub fn access_state(&self, tpg: u16) -> AccessState {
        self.groups
            .iter()
            .find(|g| g.id == tpg)
            .map_or(AccessState::Optimized, |g| g.state)
    }

    /// Sets the LUN inventory that REPORT LUNS returns.
    pub fn set_luns(&mut self, luns: Vec<u16>) {
        self.luns = luns;
    }

    /// The I_T nexus is gone: forget its unit attentions and release its RESERVE(6).
    pub fn nexus_lost(&mut self, id: u64) {
        self.nexuses.remove(&id);
        if self.reserve6 == Some(id) {
            self.set_reserve6(None);
        }
    }

    /// Records the RESERVE(6) holder, and in the shared state whether one is held (it
    /// excludes registrants of other protocols too).
    fn set_reserve6(&mut self, holder: Option<u64>) {
        self.reserve6 = holder;
        self.resv.lock().set_legacy_reserved(holder.is_some());
    }

    /// LOGICAL UNIT RESET: releases RESERVE(6) and raises a reset UA on every nexus.
    pub fn reset(&mut self) {
        self.set_reserve6(None);
        for n in self.nexuses.values_mut() {
            n.unit_attentions.clear();
            n.unit_attentions.push_back(ASC_POWER_ON_RESET);
        }
    }

    /// Reports that the storage under the unit reached its thin-provisioning soft threshold
    /// (SBC-3 4.7.3.7): every I_T nexus gets UNIT ATTENTION, THIN PROVISIONING SOFT THRESHOLD
    /// REACHED (06/38/07) before the writes that no longer fit fail with 07/27/07. The caller
    /// raises it once per crossing.
    pub fn soft_threshold_reached(&mut self) {
        self.raise_all(ASC_THIN_PROVISIONING_SOFT_THRESHOLD);
    }

    /// The LUN inventory of a target this unit is a LUN of changed (a LUN added or removed
    /// live) for I_T nexus `id`: it gets UNIT ATTENTION REPORTED LUNS DATA HAS CHANGED (3F/0E)
    /// on its next command here (SPC-4 6.37: a REPORT LUNS clears it). A nexus that has not
    /// used this unit yet starts with its power-on unit attention anyway.
    pub fn reported_luns_changed(&mut self, id: u64) {
        if let Some(n) = self.nexuses.get_mut(&id) {
            push_ua(&mut n.unit_attentions, ASC_REPORTED_LUNS_DATA_CHANGED);
        }
    }

    fn raise_all(&mut self, asc: Asc) {
        for n in self.nexuses.values_mut() {
            push_ua(&mut n.unit_attentions, asc);
        }
    }

    /// Turns the reservation notices raised for SCSI registrants (by a change made over either
    /// protocol) into unit attentions on their nexuses. Notices for registrants of other
    /// protocols stay in the shared state for their front end.
    pub fn deliver_reservation_notices(&mut self) {
        let notices = self.resv.lock().take_notices(Registrant::is_scsi);
        for (who, notice) in notices {
            let asc = notice_asc(notice);
            for n in self.nexuses.values_mut().filter(|n| n.port == who) {
                push_ua(&mut n.unit_attentions, asc);
            }
        }
    }

    /// Starts a command received on `nexus`. `data_out_len` is the initiator's expected
    /// data-out length (0 for commands without data-out).
    pub fn start(&mut self, nexus: &Nexus, cdb: &[u8], data_out_len: u32) -> Step {
        match self.start_inner(nexus, cdb, data_out_len) {
            Ok(step) => step,
            Err(Fail::Check(s)) => Step::Done(Completion::check(s)),
            Err(Fail::Conflict) => Step::Done(Completion::conflict()),
        }
    }

    fn start_inner(&mut self, nexus: &Nexus, raw: &[u8], data_out_len: u32) -> Result<Step, Fail> {
        self.nexuses.entry(nexus.id).or_insert_with(|| NexusState {
            port: registrant(nexus),
            unit_attentions: VecDeque::from([ASC_POWER_ON_RESET]),
        });
        self.deliver_reservation_notices();
        let Some(state) = self.nexuses.get_mut(&nexus.id) else {
            return Err(Fail::Check(Sense::internal()));
        };
        state.port = registrant(nexus);
        let opcode = raw.first().copied().unwrap_or(0xFF);
        if opcode == cdb::REPORT_LUNS {
            // The initiator reads the new inventory: the change is reported.
            state
                .unit_attentions
                .retain(|a| *a != ASC_REPORTED_LUNS_DATA_CHANGED);
        }
        if !matches!(opcode, cdb::INQUIRY | cdb::REPORT_LUNS | cdb::REQUEST_SENSE) {
            if let Some(asc) = state.unit_attentions.pop_front() {
                return Err(Fail::Check(Sense::unit_attention(asc)));
            }
        }
        let c = Cdb::parse(raw)?;
        let access = self.access_state(nexus.target_port_group);
        if !alua::allowed_in_state(access, &c) {
            return Err(Fail::Check(access.not_ready().unwrap_or(Sense::internal())));
        }
        self.check_reservations(nexus, &c)?;
        // The one place write protection is decided for SCSI: nothing that would change a
        // write-protected medium reaches the volume.
        if self.cfg.write_protected && rw::changes_medium(&c) {
            return Err(Fail::Check(Sense::write_protected()));
        }
        let id = nexus.id;
        let done = |d: Vec<u8>| Ok(Step::Done(Completion::good_data(d, usize::MAX)));
        match c.opcode() {
            cdb::TEST_UNIT_READY | cdb::START_STOP_UNIT | cdb::PREVENT_ALLOW => {
                Ok(Step::Done(Completion::good()))
            }
            cdb::REQUEST_SENSE => done(self.request_sense(&c, nexus)?),
            cdb::INQUIRY => done(inquiry::inquiry(&c, &self.cfg, nexus)?),
            cdb::MODE_SENSE_6 => done(mode::mode_sense(&c, false, &self.cfg, self.capacity)?),
            cdb::MODE_SENSE_10 => done(mode::mode_sense(&c, true, &self.cfg, self.capacity)?),
            op @ (cdb::MODE_SELECT_6 | cdb::MODE_SELECT_10) => {
                let ten = op == cdb::MODE_SELECT_10;
                let len = mode::mode_select_len(&c, ten)?.min(data_out_len);
                if len == 0 {
                    return Ok(Step::Done(Completion::good()));
                }
                Ok(need(len, id, TaskKind::ModeSelectData { ten }))
            }
            cdb::RESERVE_6 => {
                if c.u8(1) & 0x1F != 0 {
                    return Err(Sense::invalid_cdb(1, None).into());
                }
                {
                    let resv = self.resv.lock();
                    let st = resv.state();
                    if !st.registrations.is_empty() || st.reservation.is_some() {
                        return Err(Fail::Conflict);
                    }
                }
                self.set_reserve6(Some(id));
                Ok(Step::Done(Completion::good()))
            }
            cdb::RELEASE_6 => {
                if self.reserve6 == Some(id) {
                    self.set_reserve6(None);
                }
                Ok(Step::Done(Completion::good()))
            }
            cdb::READ_CAPACITY_10 => {
                done(capacity::read_capacity_10(&c, &self.cfg, self.capacity)?)
            }
            cdb::SERVICE_ACTION_IN_16 => match c.service_action() {
                cdb::SAI_READ_CAPACITY_16 => {
                    done(capacity::read_capacity_16(&c, &self.cfg, self.capacity)?)
                }
                cdb::SAI_GET_LBA_STATUS => Ok(rw::start(&c, &self.cfg, self.capacity, id, 0)?),
                _ => Err(Sense::invalid_cdb(1, Some(4)).into()),
            },
            cdb::REPORT_LUNS => done(luns::report_luns(&c, &self.luns)?),
            cdb::MAINTENANCE_IN => match c.service_action() {
                cdb::MI_REPORT_TARGET_PGS => done(alua::report_target_port_groups(
                    &c,
                    &self.groups,
                    self.cfg.implicit_transition_secs,
                )?),
                cdb::MI_REPORT_SUPPORTED_OPCODES => done(opcodes::report_supported_opcodes(&c)?),
                _ => Err(Sense::invalid_cdb(1, Some(4)).into()),
            },
            cdb::PR_IN => done(pr_cmd::pr_in(&c, self.resv.lock().state())?),
            cdb::PR_OUT => {
                let len = pr_cmd::pr_out_len(&c)?;
                if data_out_len < len {
                    return Err(Sense::param_list_length().into());
                }
                let kind = TaskKind::PrOutData {
                    sa: c.service_action(),
                    scope_type: c.u8(2),
                };
                Ok(need(len, id, kind))
            }
            _ if rw::is_media_command(&c) => {
                Ok(rw::start(&c, &self.cfg, self.capacity, id, data_out_len)?)
            }
            _ => Err(Sense::invalid_opcode().into()),
        }
    }

    fn check_reservations(&self, nexus: &Nexus, c: &Cdb<'_>) -> Result<(), Fail> {
        if let Some(holder) = self.reserve6 {
            let exempt = matches!(
                c.opcode(),
                cdb::INQUIRY | cdb::REPORT_LUNS | cdb::REQUEST_SENSE | cdb::RELEASE_6
            ) || (c.opcode() == cdb::MAINTENANCE_IN
                && matches!(
                    c.service_action(),
                    cdb::MI_REPORT_TARGET_PGS | cdb::MI_REPORT_SUPPORTED_OPCODES
                ));
            if holder != nexus.id && !exempt {
                return Err(Fail::Conflict);
            }
        }
        if self
            .resv
            .lock()
            .state()
            .conflicts(&registrant(nexus), pr_class(c))
        {
            return Err(Fail::Conflict);
        }
        Ok(())
    }

    fn request_sense(&mut self, c: &Cdb<'_>, nexus: &Nexus) -> Result<Vec<u8>, Sense> {
        if c.bit(1, 0) {
            return Err(Sense::invalid_cdb(1, Some(0))); // descriptor format not supported
        }
        let alloc = usize::from(c.u8(4));
        let pending = self
            .nexuses
            .get_mut(&nexus.id)
            .and_then(|n| n.unit_attentions.pop_front());
        let sense = match pending {
            Some(asc) => Sense::unit_attention(asc),
            None => self
                .access_state(nexus.target_port_group)
                .not_ready()
                .unwrap_or(Sense::new(SenseKey::NoSense, ASC_NO_ADDITIONAL_SENSE)),
        };
        let mut d = sense.to_fixed().to_vec();
        d.truncate(alloc);
        Ok(d)
    }

    /// Starts a command whose data-out buffer is already gathered (as an iSCSI connection hands
    /// it over): feeds the buffer to every data-out step, so the caller only ever sees a
    /// finished command or one block operation to perform. Returns that and the data-out length
    /// the command's residual is measured against: for a write, the CDB's transfer length even
    /// when only part of it was sent (and written); otherwise the bytes the command used.
    pub fn start_with_data(
        &mut self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &Bytes,
        expected_out: u32,
    ) -> (Begun, u32) {
        let transfer = rw::write_transfer_bytes(cdb, self.cfg.block_size)
            .map(|b| b.min(u64::from(u32::MAX)) as u32);
        let mut used = 0u32;
        let mut step = self.start(nexus, cdb, expected_out);
        loop {
            match step {
                Step::Done(c) => return (Begun::Done(c), transfer.unwrap_or(used)),
                Step::Io { op, task } => return (Begun::Io { op, task }, transfer.unwrap_or(used)),
                Step::NeedDataOut { len, task } => {
                    used = len;
                    let data = data_out.slice(..(len as usize).min(data_out.len()));
                    step = self.data_out(nexus, task, data);
                }
            }
        }
    }

    /// Continues a command after the caller gathered its data-out buffer.
    pub fn data_out(&mut self, nexus: &Nexus, task: PendingTask, data: Bytes) -> Step {
        let id = task.nexus;
        let result = match task.kind {
            TaskKind::ModeSelectData { ten } => mode::mode_select(&data, ten, &self.cfg)
                .map(|_| Step::Done(Completion::good()))
                .map_err(Fail::Check),
            TaskKind::PrOutData { sa, scope_type } => self.pr_out(nexus, sa, scope_type, &data),
            kind => rw::data_out(kind, id, data, &self.cfg, self.capacity).map_err(Fail::Check),
        };
        match result {
            Ok(s) => s,
            Err(Fail::Check(s)) => Step::Done(Completion::check(s)),
            Err(Fail::Conflict) => Step::Done(Completion::conflict()),
        }
    }

    fn pr_out(&mut self, nexus: &Nexus, sa: u8, st: u8, data: &[u8]) -> Result<Step, Fail> {
        let me = registrant(nexus);
        let result = pr_cmd::pr_out(&mut self.resv.lock(), &me, sa, st, data);
        let fx = match result {
            Ok(fx) => fx,
            Err(PrOutError::Conflict) => return Err(Fail::Conflict),
            Err(PrOutError::Check(s)) => return Err(Fail::Check(s)),
        };
        self.deliver_reservation_notices();
        let mut aborts: Vec<u64> = self
            .nexuses
            .iter()
            .filter(|(nid, n)| **nid != nexus.id && fx.aborted.contains(&n.port))
            .map(|(nid, _)| *nid)
            .collect();
        aborts.sort_unstable();
        let victims: Vec<_> = fx.aborted.into_iter().filter(|v| *v != me).collect();
        if fx.changed {
            return Ok(Step::Io {
                op: BlockOp::PersistReservations,
                task: PendingTask {
                    nexus: nexus.id,
                    kind: TaskKind::PrPersist { aborts, victims },
                },
            });
        }
        Ok(Step::Done(Completion {
            abort_nexuses: aborts,
            abort_registrants: victims,
            ..Completion::good()
        }))
    }

    /// Completes a command after the caller performed its [`BlockOp`].
    pub fn io_done(&mut self, task: PendingTask, result: BlockResult) -> Completion {
        match task.kind {
            TaskKind::PrPersist { aborts, victims } => match result {
                BlockResult::Ok => Completion {
                    abort_nexuses: aborts,
                    abort_registrants: victims,
                    ..Completion::good()
                },
                r => Completion::check(rw::result_sense(&r, true)),
            },
            kind => rw::io_done(kind, result, self.capacity),
        }
    }
}

/// Internal failure of a command: CHECK CONDITION or RESERVATION CONFLICT.
#[derive(Debug)]
enum Fail {
    Check(Sense),
    Conflict,
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

fn need(len: u32, nexus: u64, kind: TaskKind) -> Step {
    Step::NeedDataOut {
        len,
        task: PendingTask { nexus, kind },
    }
}

/// Queues a UA unless an equivalent one (or a reset, which supersedes all) is already queued.
fn push_ua(q: &mut VecDeque<Asc>, asc: Asc) {
    if q.contains(&asc) || q.contains(&ASC_POWER_ON_RESET) || q.len() >= MAX_PENDING_UA {
        return;
    }
    q.push_back(asc);
}
