//! What a node does about one volume, given what etcd holds and the local role: a pure
//! function, so every rule is tested without etcd or a clock.

use blockstore::Role;

/// What etcd holds for a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeView {
    /// The leader key: (node id, lease id), if present.
    pub leader: Option<(String, i64)>,
    /// The epoch (0 when the key is absent) and its mod revision (0: absent).
    pub epoch: u64,
    /// The epoch key's mod revision (0 when absent): the transactions' guard.
    pub epoch_rev: i64,
    /// The in-sync set (empty when absent or malformed).
    pub in_sync: Vec<String>,
    /// The in-sync key's mod revision (0 when absent).
    pub in_sync_rev: i64,
}

/// The local side: this node and the volume's role here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// This node's id.
    pub node_id: String,
    /// This node's lease, when it holds a live one.
    pub lease: Option<i64>,
    /// The persisted role.
    pub role: Role,
    /// The persisted epoch.
    pub epoch: u64,
    /// A role change is in progress, or the primary is fenced by a newer epoch.
    pub busy: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do now (and this node does not lead the volume).
    Wait,
    /// This node leads the volume under its live lease: it may serve until the lease's
    /// deadline.
    Lead,
    /// A newer epoch exists in etcd: a primary here is stale and must stop serving.
    Fence(u64),
    /// A primary here without a leader in etcd: take the leader key, storing its own epoch
    /// (not older than etcd's).
    Claim(u64),
    /// A standby in the in-sync set with no leader in etcd: take the leader key raising the
    /// epoch to this value, then promote.
    Promote(u64),
}

/// Decides for one volume.
pub fn decide(local: &Local, view: &VolumeView) -> Action {
    if local.busy {
        return Action::Wait;
    }
    let Some(lease) = local.lease else {
        return Action::Wait;
    };
    match local.role {
        Role::Primary => {
            if view.epoch > local.epoch {
                return Action::Fence(view.epoch);
            }
            match &view.leader {
                Some((node, l)) if *node == local.node_id && *l == lease => {
                    if view.epoch == local.epoch {
                        Action::Lead
                    } else {
                        // Led at an older epoch than ours: not ours to serve until etcd
                        // holds our term (never happens through this module).
                        Action::Wait
                    }
                }
                Some(_) => Action::Wait,
                None => Action::Claim(local.epoch),
            }
        }
        Role::Standby => {
            if view.leader.is_some() || !view.in_sync.contains(&local.node_id) {
                return Action::Wait;
            }
            match view.epoch.max(local.epoch).checked_add(1) {
                Some(next) => Action::Promote(next),
                None => Action::Wait,
            }
        }
        Role::None | Role::Rebuilding | Role::Stale => Action::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(role: Role, epoch: u64) -> Local {
        Local {
            node_id: "a".into(),
            lease: Some(7),
            role,
            epoch,
            busy: false,
        }
    }

    fn view(leader: Option<(&str, i64)>, epoch: u64, in_sync: &[&str]) -> VolumeView {
        VolumeView {
            leader: leader.map(|(n, l)| (n.to_string(), l)),
            epoch,
            epoch_rev: 3,
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
            in_sync_rev: 4,
        }
    }

    #[test]
    fn a_primary_claims_leads_and_is_fenced_by_a_newer_epoch() {
        let p = local(Role::Primary, 5);
        assert_eq!(decide(&p, &view(None, 0, &[])), Action::Claim(5));
        assert_eq!(decide(&p, &view(None, 5, &[])), Action::Claim(5));
        assert_eq!(decide(&p, &view(Some(("a", 7)), 5, &[])), Action::Lead);
        // Its key under an older lease of its own: not led now.
        assert_eq!(decide(&p, &view(Some(("a", 6)), 5, &[])), Action::Wait);
        assert_eq!(decide(&p, &view(Some(("b", 9)), 5, &[])), Action::Wait);
        assert_eq!(decide(&p, &view(Some(("b", 9)), 6, &[])), Action::Fence(6));
        assert_eq!(decide(&p, &view(None, 6, &[])), Action::Fence(6));
    }

    #[test]
    fn only_an_in_sync_standby_is_promoted_and_only_without_a_leader() {
        let s = local(Role::Standby, 5);
        assert_eq!(decide(&s, &view(None, 5, &["a", "b"])), Action::Promote(6));
        assert_eq!(decide(&s, &view(None, 8, &["a"])), Action::Promote(9));
        assert_eq!(decide(&s, &view(None, 5, &["b"])), Action::Wait);
        assert_eq!(decide(&s, &view(None, 5, &[])), Action::Wait);
        assert_eq!(decide(&s, &view(None, u64::MAX, &["a"])), Action::Wait);
        assert_eq!(
            decide(&s, &view(Some(("b", 9)), 5, &["a", "b"])),
            Action::Wait
        );
    }

    #[test]
    fn nothing_without_a_lease_or_during_a_change_or_in_other_roles() {
        let mut s = local(Role::Standby, 5);
        s.lease = None;
        assert_eq!(decide(&s, &view(None, 5, &["a"])), Action::Wait);
        let mut p = local(Role::Primary, 5);
        p.busy = true;
        assert_eq!(decide(&p, &view(None, 5, &[])), Action::Wait);
        for r in [Role::None, Role::Rebuilding, Role::Stale] {
            assert_eq!(decide(&local(r, 5), &view(None, 5, &["a"])), Action::Wait);
        }
    }
}
