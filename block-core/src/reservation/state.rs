//! The reservation state of a volume and the access check both protocols run.

use std::collections::VecDeque;

use super::{Access, Notice, Registrant, ReservationType};

/// Most notices kept for registrants until their protocol takes them; beyond this the oldest
/// are dropped.
const MAX_NOTICES: usize = 1024;

/// One registration and its reservation key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registration {
    /// Who registered.
    pub who: Registrant,
    /// The registered reservation key (never zero).
    pub key: u64,
}

/// The reservation, if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// Reservation type.
    pub kind: ReservationType,
    /// Holder for types other than all-registrants; None for all-registrants types.
    pub holder: Option<Registrant>,
}

/// Everything that must persist about a volume's reservations (SPC-4 5.13; NVMe base 8.19).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReservationState {
    /// Generation counter (SCSI PRGENERATION, NVMe GEN).
    pub generation: u32,
    /// Persist Through Power Loss, as last set by a register.
    pub aptpl: bool,
    /// Registrants of both protocols.
    pub registrations: Vec<Registration>,
    /// The reservation, if one exists.
    pub reservation: Option<Reservation>,
}

impl ReservationState {
    /// The registration of `who`, if registered.
    pub fn registration(&self, who: &Registrant) -> Option<&Registration> {
        self.registrations.iter().find(|r| &r.who == who)
    }

    /// Whether `who` holds the reservation (any registrant does for all-registrants types).
    pub fn is_holder(&self, who: &Registrant) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if r.kind.all_registrants() => self.registration(who).is_some(),
            Some(r) => r.holder.as_ref() == Some(who),
        }
    }

    /// Whether a command of class `access` from `who` conflicts with the reservation
    /// (SPC-4 table 66, SBC-3 table 13, NVMe base figure 550).
    pub fn conflicts(&self, who: &Registrant, access: Access) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        if access == Access::Allowed || self.is_holder(who) {
            return false;
        }
        if res.kind.registrants_access() && self.registration(who).is_some() {
            return false;
        }
        !(res.kind.write_exclusive() && access == Access::Read)
    }

    /// Every registrant except `me`.
    pub(super) fn others(&self, me: &Registrant) -> Vec<Registrant> {
        self.registrations
            .iter()
            .filter(|r| &r.who != me)
            .map(|r| r.who.clone())
            .collect()
    }
}

/// A volume's live reservation state: what persists, plus what does not (a SCSI RESERVE(6)
/// held, notices not yet delivered).
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    pub(super) state: ReservationState,
    legacy_reserved: bool,
    notices: VecDeque<(Registrant, Notice)>,
}

impl Reservations {
    /// The persistent part (to report, or to store with [`ReservationState::to_bytes`]).
    pub fn state(&self) -> &ReservationState {
        &self.state
    }

    /// Replaces the persistent part, e.g. with the state stored with the volume.
    pub fn restore(&mut self, state: ReservationState) {
        self.state = state;
    }

    /// Records whether a SCSI RESERVE(6) is held by some I_T nexus: such a reservation excludes
    /// every registrant of the persistent model (the SCSI logical unit tracks which nexus).
    pub fn set_legacy_reserved(&mut self, held: bool) {
        self.legacy_reserved = held;
    }

    /// The one reservation check for media access: whether a command of class `access` from
    /// `who` may run. False means the command completes with a reservation conflict. (A SCSI
    /// nexus holding a RESERVE(6) is let through by the SCSI logical unit before this check.)
    pub fn allows(&self, who: &Registrant, access: Access) -> bool {
        if access == Access::Allowed {
            return true;
        }
        !self.legacy_reserved && !self.state.conflicts(who, access)
    }

    /// Queues a notice for `who`.
    pub(super) fn notify(&mut self, who: Registrant, notice: Notice) {
        if self.notices.len() == MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back((who, notice));
    }

    /// Takes the undelivered notices whose registrant `mine` selects (each protocol takes its
    /// own), oldest first.
    pub fn take_notices(
        &mut self,
        mine: impl Fn(&Registrant) -> bool,
    ) -> Vec<(Registrant, Notice)> {
        let (taken, kept): (VecDeque<_>, VecDeque<_>) =
            self.notices.drain(..).partition(|(who, _)| mine(who));
        self.notices = kept;
        taken.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scsi(n: &str) -> Registrant {
        Registrant::Scsi {
            initiator_port: n.into(),
            relative_port: 1,
        }
    }

    #[test]
    fn conflict_table() {
        let a = scsi("a");
        let b = scsi("b");
        let c = scsi("c");
        let mut s = ReservationState {
            registrations: vec![
                Registration {
                    who: a.clone(),
                    key: 1,
                },
                Registration {
                    who: b.clone(),
                    key: 2,
                },
            ],
            ..Default::default()
        };
        let set = |s: &mut ReservationState, kind: ReservationType| {
            s.reservation = Some(Reservation {
                kind,
                holder: (!kind.all_registrants()).then(|| a.clone()),
            })
        };
        set(&mut s, ReservationType::WriteExclusive);
        assert!(!s.conflicts(&a, Access::Write));
        assert!(s.conflicts(&b, Access::Write));
        assert!(!s.conflicts(&b, Access::Read));
        assert!(!s.conflicts(&c, Access::Read));
        set(&mut s, ReservationType::ExclusiveAccess);
        assert!(s.conflicts(&b, Access::Read));
        assert!(!s.conflicts(&c, Access::Allowed));
        set(&mut s, ReservationType::WriteExclusiveRegistrantsOnly);
        assert!(!s.conflicts(&b, Access::Write));
        assert!(s.conflicts(&c, Access::Write));
        assert!(!s.conflicts(&c, Access::Read));
        set(&mut s, ReservationType::ExclusiveAccessAllRegistrants);
        assert!(s.is_holder(&b));
        assert!(s.conflicts(&c, Access::Read));
    }

    #[test]
    fn notices_are_taken_by_protocol_oldest_first() {
        let mut r = Reservations::default();
        let n = Registrant::Nvme {
            host_nqn: "nqn.h".into(),
            host_id: [1; 16],
        };
        r.notify(scsi("a"), Notice::ReservationsReleased);
        r.notify(n.clone(), Notice::RegistrationsPreempted);
        r.notify(scsi("b"), Notice::ReservationsPreempted);
        let s = r.take_notices(Registrant::is_scsi);
        assert_eq!(
            s,
            vec![
                (scsi("a"), Notice::ReservationsReleased),
                (scsi("b"), Notice::ReservationsPreempted)
            ]
        );
        assert_eq!(
            r.take_notices(|_| true),
            vec![(n, Notice::RegistrationsPreempted)]
        );
        assert!(r.take_notices(|_| true).is_empty());
    }

    #[test]
    fn a_legacy_reserve_excludes_media_access_only() {
        let mut r = Reservations::default();
        let a = scsi("a");
        assert!(r.allows(&a, Access::Write));
        r.set_legacy_reserved(true);
        assert!(!r.allows(&a, Access::Read));
        assert!(r.allows(&a, Access::Allowed));
    }
}
