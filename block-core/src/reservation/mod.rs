//! One reservation model for both protocols.
//!
//! The NVMe base specification defines its reservations as SCSI persistent reservations
//! (section 8.19), so a volume exported over iSCSI and NVMe/TCP keeps ONE reservation state:
//! registrants of either protocol, one reservation, one generation. This module holds that
//! state ([`ReservationState`], persisted with the volume by [`codec`]), the rules of every
//! operation on it ([`Reservations`]: SPC-4 service actions and the host-level requests NVMe
//! uses), the access check both protocols run before media access, and the [`Notice`]s a change
//! raises for the registrants it affects. Each protocol crate maps its commands to these
//! operations and the results and notices to its own wire form (sense data and unit
//! attentions; NVMe status, log page 80h and its event).

mod codec;
mod ops;
mod requests;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};

pub use codec::DecodeError;
pub use ops::Effect;
pub use requests::{
    AcquireAction, AcquireRequest, RegisterAction, RegisterRequest, ReleaseRequest,
};
pub use state::{Registration, Reservation, ReservationState, Reservations};

/// Most registrations kept; more is refused with [`ReservationError::NoResources`].
pub const MAX_REGISTRATIONS: usize = 256;
/// Longest registrant name accepted (iSCSI name 223 bytes plus ",i,0x" and ISID; an NVMe
/// host NQN is at most 223 bytes plus the host identifier tag).
pub const MAX_NAME: usize = 255;

/// Reservation type (SPC-4 table 209; NVMe base 2.0 figure 549 defines the same six).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationType {
    /// Write Exclusive.
    WriteExclusive,
    /// Exclusive Access.
    ExclusiveAccess,
    /// Write Exclusive, Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access, Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive, All Registrants.
    WriteExclusiveAllRegistrants,
    /// Exclusive Access, All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl ReservationType {
    /// Every type, in the NVMe RTYPE order (1..=6).
    pub const ALL: [ReservationType; 6] = [
        ReservationType::WriteExclusive,
        ReservationType::ExclusiveAccess,
        ReservationType::WriteExclusiveRegistrantsOnly,
        ReservationType::ExclusiveAccessRegistrantsOnly,
        ReservationType::WriteExclusiveAllRegistrants,
        ReservationType::ExclusiveAccessAllRegistrants,
    ];

    /// All-registrants types: every registrant is a reservation holder.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            ReservationType::WriteExclusiveAllRegistrants
                | ReservationType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants-only types (not all-registrants).
    pub fn registrants_only(self) -> bool {
        matches!(
            self,
            ReservationType::WriteExclusiveRegistrantsOnly
                | ReservationType::ExclusiveAccessRegistrantsOnly
        )
    }

    /// Registrants-only or all-registrants: registrants get access too.
    pub fn registrants_access(self) -> bool {
        !matches!(
            self,
            ReservationType::WriteExclusive | ReservationType::ExclusiveAccess
        )
    }

    /// Write-exclusive family: non-holders may still read.
    pub fn write_exclusive(self) -> bool {
        matches!(
            self,
            ReservationType::WriteExclusive
                | ReservationType::WriteExclusiveRegistrantsOnly
                | ReservationType::WriteExclusiveAllRegistrants
        )
    }
}

/// Who holds a registration: a SCSI I_T nexus identity or an NVMe host.
///
/// Typed so that each protocol recognises its own registrants (to deliver notices, report
/// TransportIDs or Host Identifiers) without parsing names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Registrant {
    /// A SCSI initiator port seen through one relative target port (an I_T nexus identity
    /// that survives reconnects).
    Scsi {
        /// SCSI initiator port name (iSCSI: `iqn...,i,0x<ISID>`).
        initiator_port: String,
        /// Relative target port identifier (1 or more).
        relative_port: u16,
    },
    /// An NVMe host: all its controllers and paths are one registrant, as NVMe requires.
    Nvme {
        /// The host NQN from the Connect data.
        host_nqn: String,
        /// The 128-bit Host Identifier from the Connect data.
        host_id: [u8; 16],
    },
}

impl Registrant {
    /// Whether this registrant is reached over SCSI.
    pub fn is_scsi(&self) -> bool {
        matches!(self, Registrant::Scsi { .. })
    }

    /// The NVMe Host Identifier, None for SCSI registrants.
    pub fn host_id(&self) -> Option<[u8; 16]> {
        match self {
            Registrant::Nvme { host_id, .. } => Some(*host_id),
            Registrant::Scsi { .. } => None,
        }
    }
}

/// How a command touches the medium, for the reservation check (SPC-4 table 66, SBC-3 table
/// 13; NVMe base 2.0 figure 550 classes its commands the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Never conflicts (identification, capacity, reservation commands themselves).
    Allowed,
    /// Reads the medium or its state: conflicts only under exclusive-access types.
    Read,
    /// Modifies the medium or its state: conflicts under every type for non-holders.
    Write,
}

/// What a change did to a registrant that did not make it; each protocol delivers it its own
/// way (SCSI unit attention 2A/05, 2A/04, 2A/03; NVMe Reservation Notification log page types
/// 1, 2, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The registrant's registration was removed by another's preempt or clear.
    RegistrationsPreempted,
    /// The reservation was released by its holder.
    ReservationsReleased,
    /// The reservation was preempted or cleared by another registrant.
    ReservationsPreempted,
}

/// Why an operation on the reservation state was refused; each protocol maps it to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReservationError {
    /// Key mismatch, not a registrant, or the reservation is held otherwise (SCSI RESERVATION
    /// CONFLICT, NVMe Reservation Conflict).
    #[error("reservation conflict")]
    Conflict,
    /// No room for another registration (SCSI INSUFFICIENT REGISTRATION RESOURCES).
    #[error("no room for another registration")]
    NoResources,
    /// A release named a type other than the one held (SCSI 26/04 INVALID RELEASE).
    #[error("release of a reservation type not held")]
    WrongType,
    /// A preempt named key zero where a key is required (SCSI invalid parameter at byte 8).
    #[error("preempt of key zero")]
    ZeroPreemptKey,
    /// A register request gave zero as the new key.
    #[error("zero reservation key")]
    ZeroKey,
}

/// The reservation state of one volume as both protocol cores share it.
///
/// A plain mutex: every operation is a short synchronous step, never held across I/O.
#[derive(Debug, Clone, Default)]
pub struct SharedReservations(Arc<Mutex<Reservations>>);

impl SharedReservations {
    /// A fresh, empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state for one step (a poisoned lock is taken over: the state is plain data,
    /// valid after any completed step).
    pub fn lock(&self) -> MutexGuard<'_, Reservations> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
