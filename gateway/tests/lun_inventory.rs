//! A LUN added to or removed from a target live is reported to the target's logged-in sessions:
//! UNIT ATTENTION REPORTED LUNS DATA HAS CHANGED (3F/0E) on their next command, once, cleared by
//! a REPORT LUNS that lists the new inventory; sessions of other targets hear nothing. A real
//! `tandem serve` changed through the `tandem` CLI, raw iSCSI sessions as the hosts.

#[path = "cli_daemon/mod.rs"]
mod cli_daemon;
#[path = "raw_iscsi/mod.rs"]
mod raw_iscsi;

use cli_daemon::{Daemon, IQN_A};
use raw_iscsi::Raw;

const IQN_B: &str = "iqn.2026-11.io.tandem:b";
const INIT_1: &str = "iqn.2026-11.test:initiator-1";
const INIT_2: &str = "iqn.2026-11.test:initiator-2";
const TUR: [u8; 6] = [0; 6];

/// TEST UNIT READY: GOOD (None) or the (sense key, ASC, ASCQ) of its CHECK CONDITION.
async fn tur(s: &mut Raw, itt: u32) -> Option<(u8, u8, u8)> {
    let (status, _, sense) = s.run_sense(itt, &TUR, 0).await;
    match status {
        0 => None,
        0x02 => Some((sense[2] & 0x0F, sense[12], sense[13])),
        other => panic!("TEST UNIT READY answered status {other:#x}"),
    }
}

/// The LUNs REPORT LUNS lists.
async fn report_luns(s: &mut Raw, itt: u32) -> Vec<u16> {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xA0;
    cdb[6..10].copy_from_slice(&256u32.to_be_bytes());
    let (status, data) = s.run(itt, &cdb, 256, &[]).await;
    assert_eq!(status, 0, "REPORT LUNS");
    let len = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
    data[8..8 + len]
        .chunks(8)
        .map(|l| u16::from_be_bytes([l[0] & 0x3F, l[1]]))
        .collect()
}

const CHANGED: Option<(u8, u8, u8)> = Some((0x06, 0x3F, 0x0E));

#[test]
fn a_live_lun_change_is_reported_to_the_targets_sessions_only() {
    cli_daemon::run_scenario(scenario);
}

async fn scenario() {
    let d = Daemon::start();
    d.ok(&["volume", "create", "b", "--size", "8MiB"]);
    d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    let mut s1 = Raw::login(d.iscsi, IQN_A, INIT_1, [0x40, 0, 0, 0, 0, 1]).await;
    let mut s2 = Raw::login(d.iscsi, IQN_B, INIT_2, [0x40, 0, 0, 0, 0, 2]).await;
    s1.clear_unit_attentions(100).await;
    s2.clear_unit_attentions(100).await;
    assert_eq!(report_luns(&mut s1, 1).await, vec![0]);

    // Added to the target of session 1.
    d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "iscsi",
        "--target",
        IQN_A,
        "--id",
        "1",
    ]);
    assert_eq!(tur(&mut s1, 2).await, CHANGED, "session 1 is told");
    assert_eq!(tur(&mut s1, 3).await, None, "once");
    assert_eq!(
        tur(&mut s2, 4).await,
        None,
        "session 2's target did not change"
    );
    assert_eq!(report_luns(&mut s1, 5).await, vec![0, 1]);

    // Removed from it.
    d.ok(&[
        "export",
        "remove",
        "b",
        "--protocol",
        "iscsi",
        "--target",
        IQN_A,
    ]);
    assert_eq!(tur(&mut s1, 6).await, CHANGED, "session 1 is told again");
    assert_eq!(tur(&mut s2, 7).await, None);
    assert_eq!(report_luns(&mut s1, 8).await, vec![0]);

    // A REPORT LUNS reads the new inventory and clears the condition.
    d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "iscsi",
        "--target",
        IQN_A,
        "--id",
        "3",
    ]);
    assert_eq!(report_luns(&mut s1, 9).await, vec![0, 3]);
    assert_eq!(tur(&mut s1, 10).await, None, "cleared by REPORT LUNS");
}
