//! Host-level reservation requests (register, acquire, release with a current key and an
//! "ignore existing key" flag), as NVMe Reservation Register/Acquire/Release express them,
//! carried out through the same operations as SCSI PERSISTENT RESERVE OUT.

use super::ops::Effect;
use super::state::Reservations;
use super::{Registrant, ReservationError, ReservationType};

/// What a register request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterAction {
    /// Register with this key; registering again with the same key is a no-op.
    Register {
        /// The new reservation key (non-zero).
        new_key: u64,
    },
    /// Remove the registration (and the reservation it holds).
    Unregister,
    /// Replace the registered key.
    Replace {
        /// The new reservation key (non-zero).
        new_key: u64,
    },
}

/// A register, unregister or replace request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterRequest {
    /// What to do.
    pub action: RegisterAction,
    /// The key the requester believes it holds (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check.
    pub ignore_key: bool,
    /// New Persist Through Power Loss state, when the request changes it.
    pub ptpl: Option<bool>,
}

/// What an acquire request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcquireAction {
    /// Create the reservation (or confirm the one held, same type).
    Acquire,
    /// Remove the registrants holding `key`, taking their reservation.
    Preempt {
        /// Key of the registrants to preempt.
        key: u64,
    },
    /// Preempt, and abort the victims' commands.
    PreemptAndAbort {
        /// Key of the registrants to preempt.
        key: u64,
    },
}

/// An acquire or preempt request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcquireRequest {
    /// What to do.
    pub action: AcquireAction,
    /// Reservation type to hold.
    pub kind: ReservationType,
    /// The requester's key (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check (the requester must be registered).
    pub ignore_key: bool,
}

/// A release or clear request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReleaseRequest {
    /// Clear the reservation and every registration instead of releasing.
    pub clear: bool,
    /// Type of the reservation being released (must match the one held).
    pub kind: Option<ReservationType>,
    /// The requester's key (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check (the requester must be registered).
    pub ignore_key: bool,
}

impl Reservations {
    /// The registered key of `who`, checked against `current_key` unless `ignore_key`.
    fn requester_key(
        &self,
        who: &Registrant,
        current_key: u64,
        ignore_key: bool,
    ) -> Result<u64, ReservationError> {
        match self.key_of(who) {
            Some(k) if ignore_key || k == current_key => Ok(k),
            _ => Err(ReservationError::Conflict),
        }
    }

    /// Registers, unregisters or replaces the key of `who`. Returns what it did.
    pub fn apply_register(
        &mut self,
        who: &Registrant,
        req: RegisterRequest,
    ) -> Result<Effect, ReservationError> {
        let aptpl = req.ptpl.unwrap_or(self.state.aptpl);
        let mine = self.key_of(who);
        let new_key = match req.action {
            RegisterAction::Register { new_key } => {
                if new_key == 0 {
                    return Err(ReservationError::ZeroKey);
                }
                match mine {
                    Some(k) if k == new_key => {
                        return Ok(Effect {
                            changed: self.set_aptpl(aptpl),
                            aborted: Vec::new(),
                        });
                    }
                    Some(_) => return Err(ReservationError::Conflict),
                    None => new_key,
                }
            }
            RegisterAction::Unregister => {
                self.requester_key(who, req.current_key, req.ignore_key)?;
                0
            }
            RegisterAction::Replace { new_key } => {
                self.requester_key(who, req.current_key, req.ignore_key)?;
                if new_key == 0 {
                    return Err(ReservationError::ZeroKey);
                }
                new_key
            }
        };
        self.register(who, None, new_key, aptpl)
    }

    /// Acquires or preempts on behalf of `who`. Preempt-and-abort reports the registrants
    /// whose commands the caller must abort.
    pub fn apply_acquire(
        &mut self,
        who: &Registrant,
        req: AcquireRequest,
    ) -> Result<Effect, ReservationError> {
        let key = self.requester_key(who, req.current_key, req.ignore_key)?;
        match req.action {
            AcquireAction::Acquire => self.reserve(who, key, req.kind),
            AcquireAction::Preempt { key: victim } => {
                self.preempt(who, key, victim, req.kind, false)
            }
            AcquireAction::PreemptAndAbort { key: victim } => {
                self.preempt(who, key, victim, req.kind, true)
            }
        }
    }

    /// Releases or clears on behalf of `who`. Releasing a reservation one does not hold
    /// succeeds without effect; a release must name the type held.
    pub fn apply_release(
        &mut self,
        who: &Registrant,
        req: ReleaseRequest,
    ) -> Result<Effect, ReservationError> {
        let key = self.requester_key(who, req.current_key, req.ignore_key)?;
        if req.clear {
            return self.clear(who, key);
        }
        match (req.kind, &self.state.reservation) {
            (Some(kind), _) => self.release(who, key, kind),
            // No type given: only "nothing held by me" can succeed.
            (None, Some(_)) if self.state.is_holder(who) => Err(ReservationError::WrongType),
            (None, _) => Ok(Effect::default()),
        }
    }
}
