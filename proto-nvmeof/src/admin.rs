//! Admin command dispatch of a [`Controller`]: Identify, Get Log Page, Get/Set Features,
//! Asynchronous Event Request, Keep Alive and Abort, for I/O and discovery controllers.

use std::time::Instant;

use bytes::Bytes;

use crate::controller::{Controller, Kind, CSTS_RDY};
use crate::cqe::Response;
use crate::features::{fid, FeatureEffect};
use crate::identify::{self, cns, identify_controller, ControllerKind, AERL};
use crate::logpage::{self, lid, LogRequest, ANA_LSP_RGO};
use crate::sqe::Sqe;
use crate::status::Status;

/// Admin opcodes.
pub(crate) mod opcode {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0A;
    pub const ASYNC_EVENT: u8 = 0x0C;
    pub const KEEP_ALIVE: u8 = 0x18;
}

impl Controller {
    /// Executes one admin command received at `now` with its host-to-controller `data`.
    /// Returns the responses to send: usually one, none while an AER is held, and more
    /// when an AER completes immediately with a pending event.
    pub fn handle(&mut self, now: Instant, sqe: &Sqe, data: &Bytes) -> Vec<Response> {
        let _ = data;
        self.touch(now);
        let cid = sqe.cid();
        if self.csts & CSTS_RDY == 0 {
            return vec![Response::status(cid, Status::COMMAND_SEQUENCE_ERROR.dnr())];
        }
        let result = match sqe.opcode() {
            opcode::IDENTIFY => self.identify(sqe),
            opcode::GET_LOG_PAGE => self.get_log_page(sqe),
            opcode::SET_FEATURES => self.set_features(sqe),
            opcode::GET_FEATURES => self.get_features(sqe),
            opcode::KEEP_ALIVE => Ok(Response::status(cid, Status::SUCCESS)),
            opcode::ABORT if !self.is_discovery() => Ok(Response::dw0(cid, 1)),
            opcode::ASYNC_EVENT => {
                if self.aers.len() > usize::from(AERL) {
                    Err(Status::ASYNC_LIMIT)
                } else {
                    self.aers.push_back(cid);
                    return self.deliver();
                }
            }
            _ => Err(Status::INVALID_OPCODE.dnr()),
        };
        let mut out = vec![result.unwrap_or_else(|s| Response::status(cid, s))];
        // Reading a log page can make its event reportable again (reservation notices left).
        out.extend(self.deliver());
        out
    }

    fn identify(&self, sqe: &Sqe) -> Result<Response, Status> {
        let cns_value = sqe.cdw(10) as u8;
        let csi = (sqe.cdw(11) >> 24) as u8;
        let data = match &self.kind {
            Kind::Io(s) => {
                identify::identify_io(&self.cfg, self.cntlid, s, cns_value, sqe.nsid(), csi)?
            }
            Kind::Discovery(_) if cns_value == cns::CONTROLLER => {
                identify_controller(&self.cfg, self.cntlid, ControllerKind::Discovery)
            }
            Kind::Discovery(_) => return Err(Status::INVALID_FIELD.dnr()),
        };
        Ok(Response::data(sqe.cid(), data))
    }

    fn get_log_page(&mut self, sqe: &Sqe) -> Result<Response, Status> {
        let req = LogRequest::parse(sqe);
        let max = self.cfg.max_transfer();
        let page = match (&self.kind, req.lid) {
            (Kind::Discovery(d), lid::DISCOVERY) => d.page_for(&self.hostnqn),
            (Kind::Discovery(_), _) => return Err(Status::INVALID_FIELD.dnr()),
            (Kind::Io(_), lid::SUPPORTED) => logpage::supported_logs(),
            (Kind::Io(_), lid::ERROR) => logpage::error_log(),
            (Kind::Io(_), lid::SMART) => logpage::smart_log(),
            (Kind::Io(s), lid::FW_SLOT) => logpage::fw_slot_log(&s.firmware),
            (Kind::Io(_), lid::CHANGED_NS) => {
                let list: Vec<u32> = self.changed_ns.iter().copied().collect();
                logpage::changed_ns_log(&list)
            }
            (Kind::Io(_), lid::CMD_EFFECTS) if req.csi == identify::CSI_NVM => {
                logpage::cmd_effects_log()
            }
            (Kind::Io(s), lid::ANA) if s.ana_enabled => {
                // The log's size is what a host computes from Identify Controller (header,
                // NANAGRPID group descriptors, MNAN NSIDs): libnvme (`nvme ana-log`) reads that
                // much in 4 KiB pieces at increasing offsets, and an offset past the bytes in
                // use must not fail the read. The unused tail reads as zeros.
                let mut page = logpage::ana_log(s, req.lsp & ANA_LSP_RGO != 0);
                let groups = self.cfg.anagrpmax as usize;
                let nsids = self.cfg.mnan.min(self.cfg.max_nsid) as usize;
                page.resize(page.len().max(16 + 32 * groups + 4 * nsids), 0);
                page
            }
            (Kind::Io(_), lid::RESERVATION) => self.resv.take_page(),
            _ => return Err(Status::INVALID_FIELD.dnr()),
        };
        let out = req.window(&page, max)?;
        if !req.rae {
            self.unmask_log(req.lid);
            if req.lid == lid::CHANGED_NS {
                self.changed_ns.clear();
            }
            if req.lid == lid::RESERVATION && !self.resv.is_empty() {
                self.queue_event(crate::controller::AEN_RESV_LOG);
            }
        }
        Ok(Response::data(sqe.cid(), out))
    }

    fn io_queues(&self) -> u16 {
        self.cfg.max_io_queues
    }

    fn feature_allowed(&self, f: u8) -> bool {
        !self.is_discovery() || matches!(f, fid::KATO | fid::ASYNC_EVENT)
    }

    fn set_features(&mut self, sqe: &Sqe) -> Result<Response, Status> {
        let cdw10 = sqe.cdw(10);
        let f = cdw10 as u8;
        if !self.feature_allowed(f) {
            return Err(Status::INVALID_FIELD.dnr());
        }
        if f == fid::RESV_NOTIF_MASK {
            return self.set_resv_mask(sqe);
        }
        let supported = self.supported_aens();
        let io_queues = self.io_queues();
        let (dw0, effect) =
            self.features
                .set(f, sqe.cdw(11), cdw10 >> 31 != 0, supported, io_queues)?;
        if let FeatureEffect::Kato(ms) = effect {
            self.set_kato(ms);
        }
        self.write_cache.set(self.features.write_cache);
        Ok(Response::dw0(sqe.cid(), dw0))
    }

    fn get_features(&self, sqe: &Sqe) -> Result<Response, Status> {
        let cdw10 = sqe.cdw(10);
        let f = cdw10 as u8;
        if !self.feature_allowed(f) {
            return Err(Status::INVALID_FIELD.dnr());
        }
        if f == fid::RESV_NOTIF_MASK {
            return self.get_resv_mask(sqe);
        }
        let dw0 = self
            .features
            .get(f, sqe.cdw(11), ((cdw10 >> 8) & 7) as u8, self.io_queues())?;
        Ok(Response::dw0(sqe.cid(), dw0))
    }

    /// The namespace a Reservation Notification Mask command names: one of the subsystem's,
    /// or FFFFFFFFh (all) where `all_ok`.
    fn resv_mask_nsid(&self, sqe: &Sqe, all_ok: bool) -> Result<u32, Status> {
        let nsid = sqe.nsid();
        match &self.kind {
            Kind::Io(_) if nsid == u32::MAX && all_ok => Ok(nsid),
            Kind::Io(s) if s.namespace(nsid).is_some() => Ok(nsid),
            Kind::Io(_) => Err(Status::INVALID_NS.dnr()),
            Kind::Discovery(_) => Err(Status::INVALID_FIELD.dnr()),
        }
    }

    fn set_resv_mask(&mut self, sqe: &Sqe) -> Result<Response, Status> {
        if sqe.cdw(10) >> 31 != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE.dnr());
        }
        let nsid = self.resv_mask_nsid(sqe, true)?;
        self.resv.set_mask(nsid, sqe.cdw(11))?;
        Ok(Response::dw0(sqe.cid(), 0))
    }

    fn get_resv_mask(&self, sqe: &Sqe) -> Result<Response, Status> {
        let nsid = self.resv_mask_nsid(sqe, false)?;
        Ok(Response::dw0(sqe.cid(), self.resv.mask(nsid)))
    }
}
