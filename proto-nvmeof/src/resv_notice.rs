//! Reservation notifications (NVMe base 2.0, 8.19 and 5.16.1.x): what one controller keeps so
//! its host learns that another host (over NVMe or SCSI) preempted its registration, released
//! or preempted the reservation: the Reservation Notification log page (LID 80h), read one
//! notice at a time, and the Reservation Notification Mask feature (FID 82h) per namespace.

use std::collections::{BTreeMap, VecDeque};

use crate::status::Status;

/// What happened (the log page's Reservation Notification Log Page Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// The host's registration was removed by another host's preempt.
    RegistrationPreempted = 1,
    /// The reservation was released by its holder.
    ReservationReleased = 2,
    /// The reservation was preempted or cleared by another host.
    ReservationPreempted = 3,
}

impl From<block_core::Notice> for NoticeKind {
    fn from(n: block_core::Notice) -> Self {
        match n {
            block_core::Notice::RegistrationsPreempted => NoticeKind::RegistrationPreempted,
            block_core::Notice::ReservationsReleased => NoticeKind::ReservationReleased,
            block_core::Notice::ReservationsPreempted => NoticeKind::ReservationPreempted,
        }
    }
}

/// Unread notices a controller keeps; beyond this the oldest are dropped (the log page's
/// Number of Available Log Pages saturates at 255 anyway).
pub const MAX_PENDING: usize = 256;

/// Length of the Reservation Notification log page.
pub const PAGE_LEN: usize = 64;

/// The Reservation Notification Mask bits that can be set (REGPRE, RESREL, RESPRE).
pub const MASK_BITS: u32 = 0b1110;

/// The notices of one controller and its masks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    queue: VecDeque<(u64, NoticeKind, u32)>,
    count: u64,
    /// Mask for namespaces without one of their own.
    default_mask: u32,
    masks: BTreeMap<u32, u32>,
}

impl Notices {
    /// Records a notice for namespace `nsid` unless its type is masked there. Returns whether a
    /// log page was created.
    pub fn push(&mut self, kind: NoticeKind, nsid: u32) -> bool {
        if self.mask(nsid) & (1 << kind as u32) != 0 {
            return false;
        }
        // The count runs from 1 and wraps to 1: 0 means an empty page.
        self.count = if self.count == u64::MAX {
            1
        } else {
            self.count + 1
        };
        if self.queue.len() == MAX_PENDING {
            self.queue.pop_front();
        }
        self.queue.push_back((self.count, kind, nsid));
        true
    }

    /// Whether no notice is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The log page for one read: the oldest notice, which the read consumes, or an empty page
    /// (all zeros) when none is waiting.
    pub fn take_page(&mut self) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_LEN];
        if let Some((count, kind, nsid)) = self.queue.pop_front() {
            p[0..8].copy_from_slice(&count.to_le_bytes());
            p[8] = kind as u8;
            p[9] = self.queue.len().min(255) as u8;
            p[12..16].copy_from_slice(&nsid.to_le_bytes());
        }
        p
    }

    /// The mask in force for `nsid`.
    pub fn mask(&self, nsid: u32) -> u32 {
        self.masks.get(&nsid).copied().unwrap_or(self.default_mask)
    }

    /// Set Features 82h: `nsid` FFFFFFFFh sets every namespace's mask.
    pub fn set_mask(&mut self, nsid: u32, cdw11: u32) -> Result<(), Status> {
        if nsid == 0 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        let m = cdw11 & MASK_BITS;
        if nsid == u32::MAX {
            self.default_mask = m;
            self.masks.clear();
        } else {
            self.masks.insert(nsid, m);
        }
        Ok(())
    }

    /// Forgets everything (controller reset): the count starts again.
    pub fn reset(&mut self) {
        *self = Notices::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_oldest_first_with_counts_and_then_empty() {
        let mut n = Notices::default();
        assert!(n.push(NoticeKind::RegistrationPreempted, 1));
        assert!(n.push(NoticeKind::ReservationReleased, 2));
        let p = n.take_page();
        assert_eq!(u64::from_le_bytes(p[0..8].try_into().unwrap()), 1);
        assert_eq!((p[8], p[9]), (1, 1));
        assert_eq!(u32::from_le_bytes(p[12..16].try_into().unwrap()), 1);
        let p = n.take_page();
        assert_eq!(u64::from_le_bytes(p[0..8].try_into().unwrap()), 2);
        assert_eq!((p[8], p[9]), (2, 0));
        assert_eq!(u32::from_le_bytes(p[12..16].try_into().unwrap()), 2);
        assert_eq!(n.take_page(), vec![0u8; PAGE_LEN]);
    }

    #[test]
    fn masks_per_namespace_and_for_all() {
        let mut n = Notices::default();
        n.set_mask(u32::MAX, 1 << 2).unwrap();
        assert!(!n.push(NoticeKind::ReservationReleased, 3));
        assert!(n.push(NoticeKind::ReservationPreempted, 3));
        n.set_mask(3, 0).unwrap();
        assert!(n.push(NoticeKind::ReservationReleased, 3));
        assert!(!n.push(NoticeKind::ReservationReleased, 4));
        assert_eq!(n.mask(3), 0);
        assert_eq!(n.mask(4), 1 << 2);
        assert!(n.set_mask(0, 0).is_err());
    }

    #[test]
    fn the_queue_is_bounded_and_the_count_wraps_to_one() {
        let mut n = Notices::default();
        for _ in 0..MAX_PENDING + 10 {
            n.push(NoticeKind::ReservationPreempted, 1);
        }
        let p = n.take_page();
        assert_eq!(u64::from_le_bytes(p[0..8].try_into().unwrap()), 11);
        assert_eq!(p[9], 255);
        n.count = u64::MAX;
        n.push(NoticeKind::ReservationPreempted, 1);
        assert_eq!(n.queue.back().map(|e| e.0), Some(1));
    }
}
