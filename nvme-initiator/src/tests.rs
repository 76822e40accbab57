//! The parsers against the target crate's builders (which are tested against the spec
//! layouts), and never panicking on arbitrary bytes from a hostile target.

use std::sync::Arc;

use proptest::prelude::*;
use proto_nvmeof::discovery::SubsystemType;
use proto_nvmeof::identify::{identify_controller, identify_namespace, ControllerKind};
use proto_nvmeof::logpage::ana_log;
use proto_nvmeof::{
    AddressFamily, AnaState, DiscoveryEntry, Namespace, Portal, Registry, Subsystem, TargetConfig,
};

use crate::discovery::parse_record;
use crate::identify::{parse_ns_descriptors, AnaLog, IdentifyController, IdentifyNamespace};

fn subsystem() -> Subsystem {
    let mut s = Subsystem::new("nqn.2026-11.io.tandem:t", "SER42");
    s.namespaces.push(Namespace {
        nsid: 1,
        volume_uuid: [9; 16],
        block_size: 4096,
        blocks: 777,
        ana_group: 1,
        write_protected: false,
    });
    s
}

#[test]
fn identify_fields_round_trip_through_the_target_builders() {
    let cfg = TargetConfig::default();
    let s = subsystem();
    let c = IdentifyController::parse(&identify_controller(&cfg, 0x31, ControllerKind::Io(&s)));
    assert_eq!(c.serial, "SER42");
    assert_eq!(c.cntlid, 0x31);
    assert_eq!(c.subnqn, s.nqn);
    assert_eq!(c.cntrltype, 1);
    assert_eq!(c.in_capsule_bytes(), cfg.io_in_capsule);
    assert_eq!(c.max_transfer(), Some(cfg.max_transfer()));
    let n = IdentifyNamespace::parse(&identify_namespace(&s.namespaces[0], &s));
    let ids = proto_nvmeof::namespace_ids(&[9; 16], 0);
    assert_eq!((n.nsze, n.block_size, n.anagrpid), (777, 4096, 1));
    assert_eq!((n.nguid, n.eui64), (ids.nguid, ids.eui64));
    let d = parse_ns_descriptors(&proto_nvmeof::identify::namespace_descriptors(
        &s.namespaces[0],
        &s,
    ));
    assert_eq!(d.len(), 4);
    assert_eq!(d[2], (3, vec![9; 16]));
}

#[test]
fn ana_log_and_discovery_records_parse() {
    let mut s = subsystem();
    s.set_ana_state(1, AnaState::Inaccessible);
    let log = AnaLog::parse(&ana_log(&s, false));
    assert_eq!(log.change_count, s.ana_change_count);
    assert_eq!(log.groups[0].state, 3);
    assert_eq!(log.groups[0].nsids, vec![1]);
    let mut reg = Registry::new(1..=10);
    reg.set_subsystem(Arc::new(s));
    reg.set_discovery_entries(vec![DiscoveryEntry {
        subtype: SubsystemType::Nvme,
        subnqn: "nqn.2026-11.io.tandem:t".into(),
        portal: Portal {
            adrfam: AddressFamily::Ipv4,
            traddr: "192.0.2.1".into(),
            trsvcid: "4420".into(),
            portid: 7,
        },
    }]);
    let page = reg.discovery().page_for("nqn.h");
    let r = parse_record(&page[1024..]).unwrap();
    assert_eq!((r.trtype, r.adrfam, r.subtype, r.portid), (3, 1, 2, 7));
    assert_eq!(
        (r.traddr.as_str(), r.trsvcid.as_str()),
        ("192.0.2.1", "4420")
    );
    assert_eq!(r.subnqn, "nqn.2026-11.io.tandem:t");
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let _ = IdentifyController::parse(&bytes);
        let _ = IdentifyNamespace::parse(&bytes);
        let _ = parse_ns_descriptors(&bytes);
        let _ = AnaLog::parse(&bytes);
        let _ = parse_record(&bytes);
    }
}
