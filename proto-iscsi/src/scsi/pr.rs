//! Persistent reservations in SCSI terms.
//!
//! A volume has one reservation state for both protocols ([`block_core::reservation`]); this
//! module gives it its SCSI form: the PR TYPE codes (SPC-4 table 209), the registrant identity
//! of an I_T nexus, and the unit attention each reservation notice becomes.

use block_core::{Notice, Registrant, ReservationType};

use super::sense::{
    Asc, ASC_REGISTRATIONS_PREEMPTED, ASC_RESERVATIONS_PREEMPTED, ASC_RESERVATIONS_RELEASED,
};
use super::task::Nexus;

/// Decodes the 4-bit PR TYPE field.
pub fn type_from_code(code: u8) -> Option<ReservationType> {
    Some(match code {
        1 => ReservationType::WriteExclusive,
        3 => ReservationType::ExclusiveAccess,
        5 => ReservationType::WriteExclusiveRegistrantsOnly,
        6 => ReservationType::ExclusiveAccessRegistrantsOnly,
        7 => ReservationType::WriteExclusiveAllRegistrants,
        8 => ReservationType::ExclusiveAccessAllRegistrants,
        _ => return None,
    })
}

/// The 4-bit PR TYPE field of a reservation type.
pub fn type_code(t: ReservationType) -> u8 {
    match t {
        ReservationType::WriteExclusive => 1,
        ReservationType::ExclusiveAccess => 3,
        ReservationType::WriteExclusiveRegistrantsOnly => 5,
        ReservationType::ExclusiveAccessRegistrantsOnly => 6,
        ReservationType::WriteExclusiveAllRegistrants => 7,
        ReservationType::ExclusiveAccessAllRegistrants => 8,
    }
}

/// The registrant identity of an I_T nexus: its initiator port through its relative target
/// port (what survives a reconnect).
pub fn registrant(n: &Nexus) -> Registrant {
    Registrant::Scsi {
        initiator_port: n.initiator_port.clone(),
        relative_port: n.relative_port,
    }
}

/// The unit attention a reservation notice becomes for a SCSI registrant (SPC-4 5.13).
pub fn notice_asc(n: Notice) -> Asc {
    match n {
        Notice::RegistrationsPreempted => ASC_REGISTRATIONS_PREEMPTED,
        Notice::ReservationsReleased => ASC_RESERVATIONS_RELEASED,
        Notice::ReservationsPreempted => ASC_RESERVATIONS_PREEMPTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_its_spc4_code() {
        for t in ReservationType::ALL {
            assert_eq!(type_from_code(type_code(t)), Some(t));
        }
        for code in [0, 2, 4, 9, 15] {
            assert_eq!(type_from_code(code), None);
        }
    }
}
