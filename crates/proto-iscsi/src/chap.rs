//! Placeholder module; see the iSCSI issue.
