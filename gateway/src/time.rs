//! Wall-clock helpers for the operator view.
//!
//! Sessions and controllers record when they connected so that `tandem status` can show their
//! age. Both front ends and the status table need the same clock reading; it lives here rather
//! than in one front end so that neither imports the other for it.

use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it), for the operator view.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
