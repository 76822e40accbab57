//! The daemon's answers to the questions an iSCSI connection asks its driver: who may log in
//! to which target and how it authenticates, session handles, and the SendTargets list.

use proto_iscsi::login::Refusal;
use proto_iscsi::session::{Answer, Question};

use super::shared::IscsiShared;

impl IscsiShared {
    /// The answer to `q` from the configured targets.
    pub(super) fn answer(&self, q: Question) -> Answer {
        match q {
            // Sessions have one connection: a login naming a TSIH is refused either way.
            Question::SessionExists { .. } => Answer::SessionExists(false),
            Question::Admit { target: None, .. } => {
                Answer::Admit(Ok(self.exports().discovery_auth.clone()))
            }
            Question::Admit {
                target: Some(t),
                initiator,
            } => Answer::Admit(match self.target(&t) {
                None => Err(Refusal::NotFound),
                Some(t) if !t.admits(&initiator) => {
                    tracing::warn!(%initiator, target = %t.iqn, "iSCSI initiator not on the target's allowed_initiators");
                    Err(Refusal::NotAuthorized)
                }
                Some(t) => Ok(t.auth.clone()),
            }),
            // The connection answers this itself once the old session is gone
            // (`super::live`); asked here, there is no live session to close.
            Question::Reinstate { .. } => Answer::Reinstated,
            Question::AllocateTsih => Answer::Tsih(Some(self.next_tsih())),
            // Discovery lists only the targets this initiator may log in to.
            Question::SendTargets { initiator } => {
                let e = self.exports();
                Answer::SendTargets(
                    e.send_targets
                        .iter()
                        .filter(|d| e.targets.get(&d.name).is_some_and(|t| t.admits(&initiator)))
                        .cloned()
                        .collect(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_iscsi::login::TargetAuth;

    #[test]
    fn unknown_targets_are_refused_and_tsihs_are_never_zero() {
        let shared = IscsiShared::for_tests(TargetAuth::None);
        let q = Question::Admit {
            initiator: "iqn.x".into(),
            target: Some("iqn.none".into()),
        };
        assert_eq!(shared.answer(q), Answer::Admit(Err(Refusal::NotFound)));
        let q = Question::Admit {
            initiator: "iqn.x".into(),
            target: None,
        };
        assert_eq!(shared.answer(q), Answer::Admit(Ok(TargetAuth::None)));
        for _ in 0..3 {
            assert!(!matches!(
                shared.answer(Question::AllocateTsih),
                Answer::Tsih(Some(0) | None)
            ));
        }
    }

    #[test]
    fn initiators_off_the_list_neither_log_in_nor_discover() {
        let shared = IscsiShared::for_tests(TargetAuth::None);
        let mut exports = super::super::shared::Exports::default();
        for (iqn, acl) in [
            ("iqn.t:open", None),
            ("iqn.t:closed", Some(vec!["IQN.h:Allowed".to_string()])),
        ] {
            exports.targets.insert(
                iqn.into(),
                std::sync::Arc::new(super::super::Target {
                    iqn: iqn.into(),
                    auth: TargetAuth::None,
                    allowed_initiators: acl,
                    luns: Default::default(),
                }),
            );
            exports
                .send_targets
                .push(proto_iscsi::login::DiscoveredTarget {
                    name: iqn.into(),
                    addresses: vec!["127.0.0.1:3260,1".into()],
                });
        }
        shared.set_exports(exports);
        let admit = |initiator: &str| {
            shared.answer(Question::Admit {
                initiator: initiator.into(),
                target: Some("iqn.t:closed".into()),
            })
        };
        assert_eq!(
            admit("iqn.h:other"),
            Answer::Admit(Err(Refusal::NotAuthorized))
        );
        // iSCSI names compare without regard to case.
        assert_eq!(admit("iqn.h:allowed"), Answer::Admit(Ok(TargetAuth::None)));
        let listed = |initiator: &str| match shared.answer(Question::SendTargets {
            initiator: initiator.into(),
        }) {
            Answer::SendTargets(v) => v.into_iter().map(|d| d.name).collect::<Vec<_>>(),
            a => panic!("{a:?}"),
        };
        assert_eq!(listed("iqn.h:other"), ["iqn.t:open"]);
        assert_eq!(listed("iqn.h:allowed"), ["iqn.t:open", "iqn.t:closed"]);
    }
}
