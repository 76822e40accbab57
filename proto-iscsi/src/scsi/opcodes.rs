//! The table of commands this logical unit implements: REPORT SUPPORTED OPERATION CODES
//! (SPC-4 6.35) is generated from it, and reservation checks classify commands with it.

use super::cdb::*;
use super::sense::Sense;
use block_core::Access;

/// One implemented command: opcode, optional service action and its CDB usage bitmap.
#[derive(Debug, Clone, Copy)]
pub struct CommandInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for opcodes that have them.
    pub service_action: Option<u8>,
    /// CDB USAGE DATA: byte 0 is the opcode, then a mask of the bits we evaluate.
    pub usage: &'static [u8],
}

const fn c(opcode: u8, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: None,
        usage,
    }
}

const fn sa(opcode: u8, sa: u8, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: Some(sa),
        usage,
    }
}

const F: u8 = 0xFF;

/// Every command we implement, ordered by opcode then service action.
pub const COMMANDS: &[CommandInfo] = &[
    c(TEST_UNIT_READY, &[0x00, 0, 0, 0, 0, 0]),
    c(REQUEST_SENSE, &[0x03, 0x01, 0, 0, F, 0]),
    c(READ_6, &[0x08, 0x1F, F, F, F, 0]),
    c(WRITE_6, &[0x0A, 0x1F, F, F, F, 0]),
    c(INQUIRY, &[0x12, 0x01, F, F, F, 0]),
    c(MODE_SELECT_6, &[0x15, 0x11, 0, 0, F, 0]),
    c(RESERVE_6, &[0x16, 0, 0, 0, 0, 0]),
    c(RELEASE_6, &[0x17, 0, 0, 0, 0, 0]),
    c(MODE_SENSE_6, &[0x1A, 0x08, F, F, F, 0]),
    c(START_STOP_UNIT, &[0x1B, 0x01, 0, 0x0F, 0xF7, 0]),
    c(PREVENT_ALLOW, &[0x1E, 0, 0, 0, 0x03, 0]),
    c(READ_CAPACITY_10, &[0x25, 0, F, F, F, F, 0, 0, 0x01, 0]),
    c(READ_10, &[0x28, 0x18, F, F, F, F, 0x1F, F, F, 0]),
    c(WRITE_10, &[0x2A, 0x18, F, F, F, F, 0x1F, F, F, 0]),
    c(VERIFY_10, &[0x2F, 0x16, F, F, F, F, 0x1F, F, F, 0]),
    c(SYNC_CACHE_10, &[0x35, 0x02, F, F, F, F, 0x1F, F, F, 0]),
    c(WRITE_SAME_10, &[0x41, 0x08, F, F, F, F, 0x1F, F, F, 0]),
    c(UNMAP, &[0x42, 0, 0, 0, 0, 0, 0x1F, F, F, 0]),
    c(MODE_SELECT_10, &[0x55, 0x11, 0, 0, 0, 0, 0, F, F, 0]),
    c(MODE_SENSE_10, &[0x5A, 0x18, F, F, 0, 0, 0, F, F, 0]),
    sa(PR_IN, 0x00, &[0x5E, 0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    sa(PR_IN, 0x01, &[0x5E, 0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    sa(PR_IN, 0x02, &[0x5E, 0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    sa(PR_IN, 0x03, &[0x5E, 0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    sa(PR_OUT, 0x00, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x01, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x02, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x03, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x04, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x05, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    sa(PR_OUT, 0x06, &[0x5F, 0x1F, F, 0, 0, F, F, F, F, 0]),
    c(
        READ_16,
        &[0x88, 0x18, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0],
    ),
    c(
        COMPARE_AND_WRITE,
        &[0x89, 0x18, F, F, F, F, F, F, F, F, 0, 0, 0, F, 0x1F, 0],
    ),
    c(
        WRITE_16,
        &[0x8A, 0x18, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0],
    ),
    c(
        VERIFY_16,
        &[0x8F, 0x16, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0],
    ),
    c(
        SYNC_CACHE_16,
        &[0x91, 0x02, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0],
    ),
    c(
        WRITE_SAME_16,
        &[0x93, 0x09, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0],
    ),
    sa(
        SERVICE_ACTION_IN_16,
        SAI_READ_CAPACITY_16,
        &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0],
    ),
    sa(
        SERVICE_ACTION_IN_16,
        SAI_GET_LBA_STATUS,
        &[0x9E, 0x12, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0],
    ),
    c(REPORT_LUNS, &[0xA0, 0, F, 0, 0, 0, F, F, F, F, 0, 0]),
    sa(
        MAINTENANCE_IN,
        MI_REPORT_TARGET_PGS,
        &[0xA3, 0xEA, 0, 0, 0, 0, F, F, F, F, 0, 0],
    ),
    sa(
        MAINTENANCE_IN,
        MI_REPORT_SUPPORTED_OPCODES,
        &[0xA3, 0x0C, 0x87, F, F, F, F, F, F, F, 0, 0],
    ),
    c(READ_12, &[0xA8, 0x18, F, F, F, F, F, F, F, F, 0x1F, 0]),
    c(WRITE_12, &[0xAA, 0x18, F, F, F, F, F, F, F, F, 0x1F, 0]),
    c(VERIFY_12, &[0xAF, 0x16, F, F, F, F, F, F, F, F, 0x1F, 0]),
];

/// True when `opcode` has service actions in our table.
fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.opcode == opcode && c.service_action.is_some())
}

/// Looks up an implemented command by opcode and service action.
pub fn lookup(opcode: u8, service_action: u8) -> Option<&'static CommandInfo> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && c.service_action.is_none_or(|s| s == service_action))
}

/// Command timeouts descriptor (SPC-4 table 230): no command-specific timeouts.
fn timeouts(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x0A, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes()); // nominal: not specified
    out.extend_from_slice(&30u32.to_be_bytes()); // recommended seconds
}

/// REPORT SUPPORTED OPERATION CODES, all reporting options (000b-011b), truncated.
pub fn report_supported_opcodes(cdb: &Cdb<'_>) -> Result<Vec<u8>, Sense> {
    let rctd = cdb.bit(2, 7);
    let option = cdb.u8(2) & 0x07;
    let req_op = cdb.u8(3);
    let req_sa = cdb.u16(4);
    let alloc = cdb.u32(6) as usize;
    let mut out = Vec::new();
    let one = |info: Option<&CommandInfo>, out: &mut Vec<u8>| {
        match info {
            Some(i) => {
                out.push(0);
                out.push(if rctd { 0x80 | 0x03 } else { 0x03 }); // CTDP, SUPPORT=011b
                out.extend_from_slice(&(i.usage.len() as u16).to_be_bytes());
                out.extend_from_slice(i.usage);
                if rctd {
                    timeouts(out);
                }
            }
            None => out.extend_from_slice(&[0, 0x01, 0, 0]), // SUPPORT=001b: not supported
        }
    };
    match option {
        0 => {
            out.extend_from_slice(&[0; 4]);
            for i in COMMANDS {
                out.push(i.opcode);
                out.push(0);
                out.extend_from_slice(&u16::from(i.service_action.unwrap_or(0)).to_be_bytes());
                out.push(0);
                let mut flags = if i.service_action.is_some() { 0x01 } else { 0 };
                if rctd {
                    flags |= 0x02;
                }
                out.push(flags);
                out.extend_from_slice(&(i.usage.len() as u16).to_be_bytes());
                if rctd {
                    timeouts(&mut out);
                }
            }
            let len = (out.len() - 4) as u32;
            out[0..4].copy_from_slice(&len.to_be_bytes());
        }
        1 => {
            if has_service_actions(req_op) {
                return Err(Sense::invalid_cdb(2, Some(2)));
            }
            one(lookup(req_op, 0), &mut out);
        }
        2 => {
            if !has_service_actions(req_op) {
                return Err(Sense::invalid_cdb(2, Some(2)));
            }
            let found = u8::try_from(req_sa).ok().and_then(|s| {
                COMMANDS
                    .iter()
                    .find(|c| c.opcode == req_op && c.service_action == Some(s))
            });
            one(found, &mut out);
        }
        3 => {
            let found = if has_service_actions(req_op) {
                u8::try_from(req_sa).ok().and_then(|s| {
                    COMMANDS
                        .iter()
                        .find(|c| c.opcode == req_op && c.service_action == Some(s))
                })
            } else if req_sa == 0 {
                lookup(req_op, 0)
            } else {
                None
            };
            one(found, &mut out);
        }
        _ => return Err(Sense::invalid_cdb(2, Some(2))),
    }
    out.truncate(alloc);
    Ok(out)
}

/// Classifies `cdb` per SPC-4 table 66 / SBC-3 table 13.
pub fn pr_class(cdb: &Cdb<'_>) -> Access {
    match cdb.opcode() {
        TEST_UNIT_READY | REQUEST_SENSE | INQUIRY | RESERVE_6 | RELEASE_6 | READ_CAPACITY_10
        | REPORT_LUNS | PR_IN | PR_OUT => Access::Allowed,
        PREVENT_ALLOW if cdb.u8(4) & 0x03 == 0 => Access::Allowed,
        SERVICE_ACTION_IN_16 if cdb.service_action() == SAI_READ_CAPACITY_16 => Access::Allowed,
        MAINTENANCE_IN if cdb.service_action() == MI_REPORT_TARGET_PGS => Access::Allowed,
        READ_6 | READ_10 | READ_12 | READ_16 | VERIFY_10 | VERIFY_12 | VERIFY_16 | MODE_SENSE_6
        | MODE_SENSE_10 | SERVICE_ACTION_IN_16 | MAINTENANCE_IN => Access::Read,
        _ => Access::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsoc(option: u8, op: u8, sa: u16, alloc: u32) -> Result<Vec<u8>, Sense> {
        let mut raw = [0u8; 12];
        raw[0] = MAINTENANCE_IN;
        raw[1] = MI_REPORT_SUPPORTED_OPCODES;
        raw[2] = option;
        raw[3] = op;
        raw[4..6].copy_from_slice(&sa.to_be_bytes());
        raw[6..10].copy_from_slice(&alloc.to_be_bytes());
        report_supported_opcodes(&Cdb::parse(&raw).unwrap())
    }

    #[test]
    fn usage_lengths_match_groups_and_opcode() {
        for i in COMMANDS {
            assert_eq!(
                Some(i.usage.len()),
                cdb_len_for(i.opcode),
                "{:02x}",
                i.opcode
            );
            assert_eq!(i.usage[0], i.opcode);
        }
    }

    #[test]
    fn all_commands_listing() {
        let d = rsoc(0, 0, 0, 65535).unwrap();
        let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        assert_eq!(len, COMMANDS.len() * 8);
        // READ CAPACITY(16) has SERVACTV set and SA 10h
        let found = d[4..]
            .chunks(8)
            .any(|e| e[0] == 0x9E && e[3] == 0x10 && e[5] & 1 == 1);
        assert!(found);
        let d = rsoc(0x80, 0, 0, 65535).unwrap();
        assert_eq!(d.len(), 4 + COMMANDS.len() * 20);
        assert_eq!(d[4 + 5] & 0x02, 0x02, "CTDP");
    }

    #[test]
    fn one_command_options() {
        let d = rsoc(1, READ_10, 0, 512).unwrap();
        assert_eq!(d[1] & 7, 3);
        assert_eq!(u16::from_be_bytes([d[2], d[3]]), 10);
        assert_eq!(d[4], READ_10);
        // opcode with service actions under option 1 is invalid
        assert!(rsoc(1, SERVICE_ACTION_IN_16, 0x10, 512).is_err());
        // option 2 needs service actions
        assert!(rsoc(2, READ_10, 0, 512).is_err());
        let d = rsoc(2, SERVICE_ACTION_IN_16, 0x10, 512).unwrap();
        assert_eq!(d[1] & 7, 3);
        assert_eq!(&d[4..6], &[0x9E, 0x10]);
        // option 3 (used by Linux) either way; unsupported reports 001b
        assert_eq!(rsoc(3, WRITE_SAME_16, 0, 512).unwrap()[1] & 7, 3);
        assert_eq!(rsoc(3, 0xC0, 0, 512).unwrap()[1] & 7, 1);
        assert!(rsoc(5, 0, 0, 512).is_err());
    }
}
