//! The identity of this node's paths: its ALUA target port group, its relative target port
//! ids and its NVMe controller id range, all derived from `[node] path_group`.
//!
//! Hosts see one logical unit / namespace through both nodes of a replicated volume (the same
//! NAA designator, serial, NGUID, EUI-64 and UUID, all derived from the volume UUID), so what
//! tells the paths apart must differ between the nodes: the port group (one per node, since a
//! node's portals share its role), the relative target port ids (unique per port across the
//! nodes) and the controller ids (native NVMe multipath refuses a second controller with the
//! same CNTLID in one subsystem).

use std::ops::RangeInclusive;

/// Relative target port ids each path group owns: group `g` numbers its portals from
/// `(g - 1) * 256 + 1`, so path group 1 keeps the ids a single node always had (1..=n).
pub const PORTS_PER_GROUP: u32 = 256;
/// Highest path group: its relative port ids still fit 16 bits.
pub const MAX_PATH_GROUP: u16 = 256;
/// Controller ids each path group's default range spans.
pub const CNTLIDS_PER_GROUP: u16 = 0x1000;
/// Highest controller id an NVMe controller may have (0xFFF0 and above are reserved).
pub const MAX_CNTLID: u16 = 0xFFEF;

/// Checks `[node] path_group` and the number of iSCSI portals against the id space.
pub fn check(path_group: u16, iscsi_portals: usize) -> Result<(), String> {
    if path_group == 0 || path_group > MAX_PATH_GROUP {
        return Err(format!(
            "[node] path_group = {path_group} must lie within 1..={MAX_PATH_GROUP}"
        ));
    }
    if iscsi_portals >= PORTS_PER_GROUP as usize {
        return Err(format!(
            "{iscsi_portals} iSCSI portals: at most {} fit one path group",
            PORTS_PER_GROUP - 1
        ));
    }
    Ok(())
}

/// The relative target port id of portal `index` (0-based, in configuration order) of path
/// group `path_group`; never 0 (reserved). Out-of-range inputs (refused by [`check`]) saturate.
pub fn relative_port(path_group: u16, index: usize) -> u16 {
    let base = u32::from(path_group.max(1) - 1) * PORTS_PER_GROUP;
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    u16::try_from(base.saturating_add(index).saturating_add(1)).unwrap_or(u16::MAX)
}

/// The relative target port ids of a path group with `portals` portals.
pub fn relative_ports(path_group: u16, portals: usize) -> Vec<u16> {
    (0..portals).map(|i| relative_port(path_group, i)).collect()
}

/// The default controller id range of a path group: 4096 ids per group (group 1: 1..=4095,
/// group 2: 4097..=8191, ...; 0 and the multiples of 4096 stay unused); the ranges repeat
/// after 16 groups, where `[nvme] cntlid_min/max` must be set explicitly.
pub fn cntlid_range(path_group: u16) -> RangeInclusive<u16> {
    let slot = (path_group.max(1) - 1) % 16;
    let start = slot * CNTLIDS_PER_GROUP + 1;
    let end = (start + (CNTLIDS_PER_GROUP - 2)).min(MAX_CNTLID);
    start..=end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_one_keeps_the_single_node_ids() {
        assert_eq!(relative_ports(1, 3), vec![1, 2, 3]);
        assert_eq!(cntlid_range(1), 1..=4095);
    }

    #[test]
    fn groups_are_disjoint() {
        assert_eq!(relative_ports(2, 2), vec![257, 258]);
        assert_eq!(relative_port(MAX_PATH_GROUP, 254), u16::MAX);
        assert_eq!(cntlid_range(2), 4097..=8191);
        assert_eq!(cntlid_range(16), 61441..=65519);
        for a in 1..=16u16 {
            for b in (a + 1)..=16 {
                let (x, y) = (cntlid_range(a), cntlid_range(b));
                assert!(x.end() < y.start() || y.end() < x.start(), "{a} {b}");
            }
        }
    }

    #[test]
    fn out_of_range_groups_and_portals_are_refused() {
        assert!(check(0, 1).is_err());
        assert!(check(257, 1).is_err());
        assert!(check(2, 256).is_err());
        assert!(check(2, 255).is_ok());
        assert!(check(256, 254).is_ok());
    }
}
