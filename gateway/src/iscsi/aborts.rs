//! The iSCSI front end as an abort sink of the volumes it exports: a preempt-and-abort on a
//! volume (from either protocol) reaches the iSCSI sessions of the preempted initiators, which
//! abort their tasks on the LUNs exporting that volume.

use std::sync::Arc;

use block_core::Registrant;
use tokio::sync::oneshot;

use super::shared::IscsiShared;

impl crate::aborts::AbortSink for IscsiShared {
    fn abort(&self, volume: &str, victims: &[Registrant]) -> Vec<oneshot::Receiver<()>> {
        let victims: Vec<Registrant> = victims.iter().filter(|v| v.is_scsi()).cloned().collect();
        if victims.is_empty() {
            return Vec::new();
        }
        self.live.abort(&victims, |target| {
            self.target(target).map_or_else(Vec::new, |t| {
                t.luns
                    .iter()
                    .filter(|(_, lu)| lu.volume.name == volume)
                    .map(|(id, _)| *id)
                    .collect()
            })
        })
    }
}

/// Registers the iSCSI front end as an abort sink of a volume (every served one, exported or
/// not yet: the control plane may export it later). The sink finds the LUNs exporting the
/// volume when a preemption happens.
pub fn add_abort_sink(shared: &Arc<IscsiShared>, target: &crate::target::VolumeTarget) {
    let weak: std::sync::Weak<IscsiShared> = Arc::downgrade(shared);
    let sink: std::sync::Weak<dyn crate::aborts::AbortSink> = weak;
    target.add_abort_sink(sink);
}
