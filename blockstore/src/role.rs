//! The volume's role on this node and the access state both protocols derive from it.
//!
//! The role and epoch are persisted (in the superblock); the lease is timed on the monotonic
//! clock. [`access_state`] is the one function that turns them into what hosts see: SCSI hosts as
//! ALUA states, NVMe hosts as ANA states. Front ends never apply role rules themselves.

use std::time::Instant;

/// What this node is for the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not part of any replication arrangement and not serving.
    None,
    /// Serves I/O (while its lease, if any, is valid).
    Primary,
    /// Receives the primary's writes; refuses host I/O.
    Standby,
    /// Catching up from a primary; refuses host I/O.
    Rebuilding,
    /// Known to be behind or fenced off; refuses host I/O.
    Stale,
}

impl Role {
    /// Stable on-disk code.
    pub fn to_u8(self) -> u8 {
        match self {
            Role::None => 0,
            Role::Primary => 1,
            Role::Standby => 2,
            Role::Rebuilding => 3,
            Role::Stale => 4,
        }
    }

    /// Parses the on-disk code.
    pub fn from_u8(v: u8) -> Option<Role> {
        Some(match v {
            0 => Role::None,
            1 => Role::Primary,
            2 => Role::Standby,
            3 => Role::Rebuilding,
            4 => Role::Stale,
            _ => return None,
        })
    }

    /// Lower-case name used by the CLI, config and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Rebuilding => "rebuilding",
            Role::Stale => "stale",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Role::None,
            "primary" => Role::Primary,
            "standby" => Role::Standby,
            "rebuilding" => Role::Rebuilding,
            "stale" => Role::Stale,
            other => return Err(format!("unknown role {other:?}")),
        })
    }
}

/// What hosts are told about this path to the volume: the protocol-neutral access state that
/// proto-iscsi shows as ALUA and proto-nvmeof as ANA (standby 04/0B and 0x302, transitioning
/// 04/0A and 0x303, unavailable 04/0C and 0x302). A role never yields `NonOptimized`.
pub use block_core::AccessState;

/// The role-related state the engine keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleState {
    /// The persisted role.
    pub role: Role,
    /// The persisted epoch.
    pub epoch: u64,
    /// When the lease ends, if the volume runs under a lease.
    pub lease_until: Option<Instant>,
    /// Set while a role change is being persisted or drained.
    pub transitioning: bool,
}

/// The single rule mapping role, lease and transitions to an access state.
pub fn access_state(st: &RoleState, now: Instant) -> AccessState {
    if st.transitioning {
        return AccessState::Transitioning;
    }
    match st.role {
        Role::Primary => match st.lease_until {
            Some(until) if now >= until => AccessState::Transitioning,
            _ => AccessState::Optimized,
        },
        Role::Standby => AccessState::Standby,
        Role::None | Role::Rebuilding | Role::Stale => AccessState::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn st(role: Role, lease: Option<Instant>) -> RoleState {
        RoleState {
            role,
            epoch: 1,
            lease_until: lease,
            transitioning: false,
        }
    }

    #[test]
    fn the_role_table() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(
            access_state(&st(Role::Primary, None), now),
            AccessState::Optimized
        );
        assert_eq!(
            access_state(&st(Role::Primary, Some(later)), now),
            AccessState::Optimized
        );
        assert_eq!(
            access_state(&st(Role::Primary, Some(now)), now),
            AccessState::Transitioning
        );
        assert_eq!(
            access_state(&st(Role::Standby, None), now),
            AccessState::Standby
        );
        for r in [Role::None, Role::Rebuilding, Role::Stale] {
            assert_eq!(access_state(&st(r, None), now), AccessState::Unavailable);
        }
        let mut t = st(Role::Primary, None);
        t.transitioning = true;
        assert_eq!(access_state(&t, now), AccessState::Transitioning);
    }

    #[test]
    fn role_codes_round_trip() {
        for r in [
            Role::None,
            Role::Primary,
            Role::Standby,
            Role::Rebuilding,
            Role::Stale,
        ] {
            assert_eq!(Role::from_u8(r.to_u8()), Some(r));
            assert_eq!(r.name().parse::<Role>().unwrap(), r);
        }
        assert_eq!(Role::from_u8(9), None);
    }
}
