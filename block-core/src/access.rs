//! The access state of a path to a volume: the one value from which ALUA and ANA states are
//! both derived.

/// What a path to the volume on this node may do, from the volume's role on the node.
///
/// proto-iscsi maps it to an ALUA asymmetric access state (and its NOT READY sense), and
/// proto-nvmeof to an ANA state (and its path-related status), so both protocols always show
/// hosts the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessState {
    /// The path serves every command (ALUA active/optimized, ANA optimized).
    Optimized,
    /// The path serves every command but another is preferred (ALUA active/non-optimized, ANA
    /// non-optimized).
    NonOptimized,
    /// The node holds the volume as a standby: no media access (ALUA standby, ANA
    /// inaccessible).
    Standby,
    /// The node cannot serve the volume (ALUA unavailable, ANA inaccessible).
    Unavailable,
    /// The role is changing; retry shortly (ALUA transitioning, ANA change).
    Transitioning,
}

impl AccessState {
    /// Whether media access is served on a path in this state.
    pub fn serves_io(self) -> bool {
        matches!(self, AccessState::Optimized | AccessState::NonOptimized)
    }
}
