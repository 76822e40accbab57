//! Asymmetric logical unit access (SPC-4 5.15): target port groups, their access states, which
//! commands each state admits, and REPORT TARGET PORT GROUPS.
//!
//! The gateway decides the states (it knows which node owns the volume); this module only
//! reports them and enforces what a non-optimized port may do.

use super::cdb::{self, Cdb};
use super::sense::{
    Asc, Sense, SenseKey, ASC_LU_NOT_ACCESSIBLE_STANDBY, ASC_LU_NOT_ACCESSIBLE_TRANSITIONING,
    ASC_LU_NOT_ACCESSIBLE_UNAVAILABLE,
};

pub use block_core::AccessState;

/// The SCSI form of an [`AccessState`]: its ALUA code and the NOT READY answer of a path that
/// cannot serve media access.
pub trait Alua {
    /// The 4-bit ASYMMETRIC ACCESS STATE code (SPC-4 table 173).
    fn code(self) -> u8;
    /// The NOT READY code a media-access command gets in this state.
    fn not_ready_asc(self) -> Option<Asc>;
    /// NOT READY sense for this state, None when the port is active.
    fn not_ready(self) -> Option<Sense>;
}

impl Alua for AccessState {
    fn code(self) -> u8 {
        match self {
            AccessState::Optimized => 0x0,
            AccessState::NonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xF,
        }
    }

    fn not_ready_asc(self) -> Option<Asc> {
        match self {
            AccessState::Optimized | AccessState::NonOptimized => None,
            AccessState::Standby => Some(ASC_LU_NOT_ACCESSIBLE_STANDBY),
            AccessState::Unavailable => Some(ASC_LU_NOT_ACCESSIBLE_UNAVAILABLE),
            AccessState::Transitioning => Some(ASC_LU_NOT_ACCESSIBLE_TRANSITIONING),
        }
    }

    fn not_ready(self) -> Option<Sense> {
        self.not_ready_asc()
            .map(|asc| Sense::new(SenseKey::NotReady, asc))
    }
}

/// One target port group as configured by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroup {
    /// Target port group identifier.
    pub id: u16,
    /// Current access state of every port in the group.
    pub state: AccessState,
    /// Whether this group is the preferred path (PREF bit).
    pub preferred: bool,
    /// Relative target port identifiers in the group.
    pub relative_ports: Vec<u16>,
}

/// Whether `cdb` may run through a port in `state` (SPC-4 5.15.2.4.4 to 5.15.2.4.6).
pub fn allowed_in_state(state: AccessState, cdb: &Cdb<'_>) -> bool {
    let op = cdb.opcode();
    let sa = cdb.service_action();
    let identification = matches!(op, cdb::INQUIRY | cdb::REPORT_LUNS | cdb::REQUEST_SENSE)
        || (op == cdb::MAINTENANCE_IN
            && matches!(
                sa,
                cdb::MI_REPORT_TARGET_PGS | cdb::MI_REPORT_SUPPORTED_OPCODES
            ));
    match state {
        AccessState::Optimized | AccessState::NonOptimized => true,
        AccessState::Unavailable | AccessState::Transitioning => identification,
        AccessState::Standby => {
            // READ CAPACITY too (as Linux's own target, LIO, answers it): a host sizes a path
            // when it logs in, and a standby path sized 0 could never carry I/O once its node
            // is promoted (the kernel re-reads the size only on a capacity-change unit
            // attention or a rescan), so dm-multipath would fail it.
            identification
                || op == cdb::READ_CAPACITY_10
                || (op == cdb::SERVICE_ACTION_IN_16 && sa == cdb::SAI_READ_CAPACITY_16)
                || matches!(
                    op,
                    cdb::MODE_SENSE_6
                        | cdb::MODE_SENSE_10
                        | cdb::MODE_SELECT_6
                        | cdb::MODE_SELECT_10
                        | cdb::PR_IN
                        | cdb::PR_OUT
                )
        }
    }
}

/// Supported-states byte of a descriptor: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
const SUPPORTED_STATES: u8 = 0x80 | 0x08 | 0x04 | 0x02 | 0x01;

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN 0Ah) response, truncated to the allocation length.
pub fn report_target_port_groups(
    cdb: &Cdb<'_>,
    groups: &[PortGroup],
    transition_secs: u8,
) -> Result<Vec<u8>, Sense> {
    let format = cdb.u8(1) >> 5;
    if format > 1 {
        return Err(Sense::invalid_cdb(1, Some(7)));
    }
    let alloc = cdb.u32(6) as usize;
    let mut out = vec![0u8; 4];
    if format == 1 {
        out.extend_from_slice(&[0x10, transition_secs, 0, 0]);
    }
    for g in groups {
        let mut b0 = g.state.code();
        if g.preferred {
            b0 |= 0x80;
        }
        out.push(b0);
        out.push(SUPPORTED_STATES);
        out.extend_from_slice(&g.id.to_be_bytes());
        out.push(0); // reserved
        out.push(0); // status code: no status available
        out.push(0); // vendor specific
        out.push(g.relative_ports.len().min(255) as u8);
        for p in g.relative_ports.iter().take(255) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out.truncate(alloc);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<PortGroup> {
        vec![
            PortGroup {
                id: 1,
                state: AccessState::Optimized,
                preferred: true,
                relative_ports: vec![1],
            },
            PortGroup {
                id: 2,
                state: AccessState::Standby,
                preferred: false,
                relative_ports: vec![2, 3],
            },
        ]
    }

    fn rtpg(byte1: u8, alloc: u32) -> Vec<u8> {
        let mut raw = [0u8; 12];
        raw[0] = cdb::MAINTENANCE_IN;
        raw[1] = byte1 | cdb::MI_REPORT_TARGET_PGS;
        raw[6..10].copy_from_slice(&alloc.to_be_bytes());
        let c = Cdb::parse(&raw).unwrap();
        report_target_port_groups(&c, &groups(), 7).unwrap()
    }

    #[test]
    fn length_only_format() {
        let d = rtpg(0, 1024);
        // two descriptors: 8 + 4 and 8 + 2*4
        assert_eq!(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), 12 + 16);
        assert_eq!(d[4], 0x80); // PREF | active/optimized
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 1);
        assert_eq!(d[11], 1);
        assert_eq!(u16::from_be_bytes([d[14], d[15]]), 1);
        assert_eq!(d[16], 0x02); // standby
        assert_eq!(u16::from_be_bytes([d[18], d[19]]), 2);
        assert_eq!(d[23], 2);
        assert_eq!(u16::from_be_bytes([d[30], d[31]]), 3);
    }

    #[test]
    fn extended_header() {
        let d = rtpg(0x20, 1024);
        assert_eq!(d[4], 0x10);
        assert_eq!(d[5], 7);
        assert_eq!(
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize,
            d.len() - 4
        );
        assert_eq!(d[8], 0x80);
    }

    #[test]
    fn truncated_to_alloc() {
        assert_eq!(rtpg(0, 6).len(), 6);
    }

    #[test]
    fn standby_rejects_reads_allows_inquiry() {
        let read = [cdb::READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let inq = [cdb::INQUIRY, 0, 0, 0, 36, 0];
        let c = Cdb::parse(&read).unwrap();
        assert!(!allowed_in_state(AccessState::Standby, &c));
        assert!(allowed_in_state(AccessState::NonOptimized, &c));
        let c = Cdb::parse(&inq).unwrap();
        assert!(allowed_in_state(AccessState::Unavailable, &c));
        assert_eq!(
            AccessState::Standby.not_ready().unwrap().asc,
            ASC_LU_NOT_ACCESSIBLE_STANDBY
        );
    }

    #[test]
    fn a_standby_path_answers_read_capacity_an_unavailable_one_does_not() {
        let rc10 = [cdb::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut rc16 = [0u8; 16];
        rc16[0] = cdb::SERVICE_ACTION_IN_16;
        rc16[1] = cdb::SAI_READ_CAPACITY_16;
        rc16[13] = 32;
        for raw in [&rc10[..], &rc16[..]] {
            let c = Cdb::parse(raw).unwrap();
            assert!(allowed_in_state(AccessState::Standby, &c), "{raw:?}");
            assert!(!allowed_in_state(AccessState::Unavailable, &c), "{raw:?}");
            assert!(!allowed_in_state(AccessState::Transitioning, &c), "{raw:?}");
        }
    }
}
