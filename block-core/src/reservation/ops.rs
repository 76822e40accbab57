//! The reservation operations (SPC-4 5.13 service actions), one rule set for both protocols.
//!
//! SCSI PERSISTENT RESERVE OUT maps onto these directly; NVMe's Register/Acquire/Release
//! requests ([`super::requests`]) are built from them, so a preempt or a release has one
//! meaning whoever sends it.

use super::state::{Registration, Reservation, ReservationState, Reservations};
use super::{Notice, Registrant, ReservationError, ReservationType, MAX_REGISTRATIONS};

/// What a successful operation did besides the state change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// The state changed and must be persisted before the command completes.
    pub changed: bool,
    /// Registrants whose commands must be aborted (preempt and abort).
    pub aborted: Vec<Registrant>,
}

impl Effect {
    fn changed() -> Self {
        Effect {
            changed: true,
            aborted: Vec::new(),
        }
    }
}

type OpResult = Result<Effect, ReservationError>;

impl Reservations {
    /// The registered key of `me`.
    pub fn key_of(&self, me: &Registrant) -> Option<u64> {
        self.state.registration(me).map(|r| r.key)
    }

    /// Checks that `me` is registered with `key` (every operation but register requires it).
    fn check_key(&self, me: &Registrant, key: u64) -> Result<(), ReservationError> {
        match self.key_of(me) {
            Some(k) if k == key => Ok(()),
            _ => Err(ReservationError::Conflict),
        }
    }

    /// REGISTER (`current` = Some(the key the requester holds, 0 if none)) or REGISTER AND
    /// IGNORE EXISTING KEY (`current` = None): registers `new_key`, replaces the key, or with
    /// `new_key` 0 unregisters. Sets Persist Through Power Loss to `aptpl`.
    pub fn register(
        &mut self,
        me: &Registrant,
        current: Option<u64>,
        new_key: u64,
        aptpl: bool,
    ) -> OpResult {
        let mine = self.key_of(me);
        if let Some(res_key) = current {
            match mine {
                None if res_key != 0 => return Err(ReservationError::Conflict),
                Some(k) if k != res_key => return Err(ReservationError::Conflict),
                _ => {}
            }
        }
        match (mine, new_key) {
            (None, 0) => {}
            (None, k) => {
                if self.state.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(ReservationError::NoResources);
                }
                self.state.registrations.push(Registration {
                    who: me.clone(),
                    key: k,
                });
            }
            (Some(_), 0) => self.unregister(me),
            (Some(_), k) => {
                if let Some(r) = self.state.registrations.iter_mut().find(|r| &r.who == me) {
                    r.key = k;
                }
            }
        }
        self.state.aptpl = aptpl;
        self.bump();
        Ok(Effect::changed())
    }

    /// Sets Persist Through Power Loss alone; returns whether it changed.
    pub fn set_aptpl(&mut self, aptpl: bool) -> bool {
        let changed = self.state.aptpl != aptpl;
        self.state.aptpl = aptpl;
        changed
    }

    /// RESERVE: creates a reservation of `kind` for `me` (registered with `key`), or confirms
    /// the one `me` already holds with the same type.
    pub fn reserve(&mut self, me: &Registrant, key: u64, kind: ReservationType) -> OpResult {
        self.check_key(me, key)?;
        match &self.state.reservation {
            None => {
                self.state.reservation = Some(Reservation {
                    kind,
                    holder: (!kind.all_registrants()).then(|| me.clone()),
                });
                Ok(Effect::changed())
            }
            Some(r) if self.state.is_holder(me) && r.kind == kind => Ok(Effect::default()),
            Some(_) => Err(ReservationError::Conflict),
        }
    }

    /// RELEASE: drops the reservation `me` holds (of type `kind`); releasing one that `me`
    /// does not hold succeeds without effect.
    pub fn release(&mut self, me: &Registrant, key: u64, kind: ReservationType) -> OpResult {
        self.check_key(me, key)?;
        let Some(r) = self.state.reservation.clone() else {
            return Ok(Effect::default());
        };
        if !self.state.is_holder(me) {
            return Ok(Effect::default());
        }
        if r.kind != kind {
            return Err(ReservationError::WrongType);
        }
        self.state.reservation = None;
        if r.kind.registrants_access() {
            for p in self.state.others(me) {
                self.notify(p, Notice::ReservationsReleased);
            }
        }
        Ok(Effect::changed())
    }

    /// CLEAR: drops the reservation and every registration.
    pub fn clear(&mut self, me: &Registrant, key: u64) -> OpResult {
        self.check_key(me, key)?;
        for p in self.state.others(me) {
            self.notify(p, Notice::ReservationsPreempted);
        }
        self.state.registrations.clear();
        self.state.reservation = None;
        self.bump();
        Ok(Effect::changed())
    }

    /// PREEMPT (and, with `abort`, PREEMPT AND ABORT): removes the registrations holding
    /// `victim_key` and takes their reservation as `kind` (SPC-4 5.13.11.4).
    pub fn preempt(
        &mut self,
        me: &Registrant,
        key: u64,
        victim_key: u64,
        kind: ReservationType,
        abort: bool,
    ) -> OpResult {
        self.check_key(me, key)?;
        let removed;
        match self.state.reservation.clone() {
            Some(res) if res.kind.all_registrants() && victim_key == 0 => {
                removed = self.state.others(me);
                self.state.registrations.retain(|r| &r.who == me);
                self.take_reservation(me, kind);
            }
            Some(res) if !res.kind.all_registrants() => {
                let holder_key = res
                    .holder
                    .as_ref()
                    .and_then(|h| self.state.registration(h))
                    .map(|r| r.key);
                if holder_key == Some(victim_key) {
                    removed = remove_key(&mut self.state, me, victim_key).1;
                    self.take_reservation(me, kind);
                } else {
                    removed = remove_victims(&mut self.state, me, victim_key)?;
                }
            }
            _ => {
                removed = remove_victims(&mut self.state, me, victim_key)?;
                if let Some(r) = &self.state.reservation {
                    if r.kind.all_registrants() && self.state.registrations.is_empty() {
                        self.state.reservation = None;
                    }
                }
            }
        }
        for p in &removed {
            self.notify(p.clone(), Notice::RegistrationsPreempted);
        }
        self.bump();
        Ok(Effect {
            changed: true,
            aborted: if abort { removed } else { Vec::new() },
        })
    }

    fn take_reservation(&mut self, me: &Registrant, kind: ReservationType) {
        self.state.reservation = Some(Reservation {
            kind,
            holder: (!kind.all_registrants()).then(|| me.clone()),
        });
    }

    fn bump(&mut self) {
        self.state.generation = self.state.generation.wrapping_add(1);
    }

    /// Removes `me`'s registration, releasing the reservation when it goes with it.
    fn unregister(&mut self, me: &Registrant) {
        let was_holder = self.state.is_holder(me);
        self.state.registrations.retain(|r| &r.who != me);
        if let Some(r) = self.state.reservation.clone() {
            let release = if r.kind.all_registrants() {
                self.state.registrations.is_empty()
            } else {
                was_holder
            };
            if release {
                self.state.reservation = None;
                if r.kind.registrants_only() {
                    for p in self.state.others(me) {
                        self.notify(p, Notice::ReservationsReleased);
                    }
                }
            }
        }
    }
}

/// Removes the registrations of `victim_key` that a preempt without the reservation takes away:
/// key zero is refused, and a key nobody holds is a conflict.
fn remove_victims(
    st: &mut ReservationState,
    me: &Registrant,
    victim_key: u64,
) -> Result<Vec<Registrant>, ReservationError> {
    if victim_key == 0 {
        return Err(ReservationError::ZeroPreemptKey);
    }
    match remove_key(st, me, victim_key) {
        (true, gone) => Ok(gone),
        (false, _) => Err(ReservationError::Conflict),
    }
}

/// Removes every registration with `key` except `me`'s; returns whether any registration had
/// the key, and who was removed.
fn remove_key(st: &mut ReservationState, me: &Registrant, key: u64) -> (bool, Vec<Registrant>) {
    let victims: Vec<Registrant> = st
        .registrations
        .iter()
        .filter(|r| r.key == key && &r.who != me)
        .map(|r| r.who.clone())
        .collect();
    let found = st.registrations.iter().any(|r| r.key == key);
    st.registrations.retain(|r| r.key != key || &r.who == me);
    (found, victims)
}
