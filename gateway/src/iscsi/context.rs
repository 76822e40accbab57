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
            Question::Admit { target: None, .. } => Answer::Admit(Ok(self.discovery_auth.clone())),
            Question::Admit {
                target: Some(t), ..
            } => Answer::Admit(
                self.targets
                    .get(&t)
                    .map(|t| t.auth.clone())
                    .ok_or(Refusal::NotFound),
            ),
            // The connection answers this itself once the old session is gone
            // (`super::live`); asked here, there is no live session to close.
            Question::Reinstate { .. } => Answer::Reinstated,
            Question::AllocateTsih => Answer::Tsih(Some(self.next_tsih())),
            Question::SendTargets => Answer::SendTargets(self.send_targets.clone()),
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
}
