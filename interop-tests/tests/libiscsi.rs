//! libiscsi's conformance suite (`iscsi-test-cu`), qemu-img and the libiscsi tools against a
//! real `tandem serve`, over loopback.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use interop_tests::iscsi::{
    expected_failures, run_libiscsi_suite, IscsiTarget, TargetSetup, TEST_IQN,
};

/// One test at a time: each starts its own daemon and the full suites load both cores; run
/// side by side on a 2-core machine they slow each other past libiscsi's login timeouts.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn quiet() -> std::sync::MutexGuard<'static, ()> {
    // Hundreds of logins: keep the daemon's log to warnings.
    std::env::set_var("RUST_LOG", "warn");
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_suite(name: &str, url: &str, url2: Option<&str>) {
    let r = run_libiscsi_suite(url, url2).unwrap();
    let expected = expected_failures(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("libiscsi-expected-failures.txt"),
    )
    .unwrap();
    println!(
        "libiscsi suite ({name}): {} tests ran, {} passed, failures: {:?}",
        r.ran, r.passed, r.failed
    );
    assert!(
        r.ran >= 200,
        "{name}: the suite ran only {} tests:\n{}",
        r.ran,
        r.output
    );
    let unexpected: BTreeSet<_> = r.failed.difference(&expected).collect();
    let fixed: BTreeSet<_> = expected.difference(&r.failed).collect();
    assert!(
        unexpected.is_empty(),
        "{name}: unexpected failures {unexpected:?}\n{}",
        r.output
    );
    assert!(
        fixed.is_empty(),
        "{name}: listed failures now pass, update the list: {fixed:?}"
    );
    assert_eq!(r.ran, r.passed + r.failed.len() as u32);
}

#[test]
fn libiscsi_suite_with_multipath_second_portal() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        portals: 2,
        ..TargetSetup::default()
    })
    .unwrap();
    assert_suite(
        "plain, two portals",
        &t.url(0, "", ""),
        Some(&t.url(1, "", "")),
    );
}

#[test]
fn libiscsi_suite_with_header_digest_crc32c() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup::default()).unwrap();
    // libiscsi offers HeaderDigest only (its DataDigest is always None).
    assert_suite(
        "HeaderDigest=CRC32C",
        &t.url(0, "", "header_digest=crc32c"),
        None,
    );
}

const CHAP: &str = "[iscsi.target.chap]\nusername = \"host1\"\nsecret = \"host1-secret-123\"\ntarget_username = \"tandem\"\ntarget_secret = \"tandem-secret-456\"\n";

#[test]
fn libiscsi_suite_with_one_way_chap() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        target_extra: CHAP.into(),
        ..TargetSetup::default()
    })
    .unwrap();
    assert_suite(
        "one-way CHAP",
        &t.url(0, "host1%host1-secret-123", ""),
        None,
    );
}

#[test]
fn libiscsi_suite_with_mutual_chap() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        target_extra: CHAP.into(),
        ..TargetSetup::default()
    })
    .unwrap();
    assert_suite(
        "mutual CHAP",
        &t.url(
            0,
            "host1%host1-secret-123",
            "target_user=tandem&target_password=tandem-secret-456",
        ),
        None,
    );
}

fn tool(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run libiscsi tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn chap_refuses_a_wrong_secret_and_a_missing_one() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        target_extra: CHAP.into(),
        ..TargetSetup::default()
    })
    .unwrap();
    let (ok, text) = tool(&["iscsi-inq", &t.url(0, "host1%host1-secret-123", "")]);
    assert!(ok && text.contains("TANDEM"), "{text}");
    let (ok, text) = tool(&["iscsi-inq", &t.url(0, "host1%wrong-secret-000", "")]);
    assert!(!ok, "a wrong secret logged in: {text}");
    let (ok, text) = tool(&["iscsi-inq", &t.url(0, "", "")]);
    assert!(!ok, "no CHAP logged in: {text}");
    // A wrong target secret in mutual CHAP: the initiator refuses the target.
    let (ok, text) = tool(&[
        "iscsi-inq",
        &t.url(
            0,
            "host1%host1-secret-123",
            "target_user=tandem&target_password=not-the-secret",
        ),
    ]);
    assert!(!ok, "mutual CHAP accepted a wrong target secret: {text}");
}

#[test]
fn tools_show_identity_and_size() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        size: 64 << 20,
        block_size: 4096,
        ..TargetSetup::default()
    })
    .unwrap();
    let (ok, text) = tool(&[
        "iscsi-ls",
        "-s",
        &format!("iscsi://127.0.0.1:{}", t.ports[0]),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "Target:{TEST_IQN} Portal:127.0.0.1:{},1",
            t.ports[0]
        )),
        "{text}"
    );
    // iscsi-ls prints the size as last LBA times block size, one block short.
    assert!(
        text.contains("Lun:0") && text.contains("DIRECT_ACCESS") && text.contains("Size:63M"),
        "{text}"
    );
    let (ok, text) = tool(&["iscsi-readcapacity16", &t.url(0, "", "")]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "RETURNED LOGICAL BLOCK ADDRESS:{}",
            (64 << 20) / 4096 - 1
        )),
        "{text}"
    );
    assert!(
        text.contains("LOGICAL BLOCK LENGTH IN BYTES:4096") && text.contains("LBPME:1 LBPRZ:1"),
        "{text}"
    );
    let (ok, text) = tool(&["iscsi-inq", &t.url(0, "", "")]);
    assert!(
        ok && text.contains("Vendor:TANDEM") && text.contains("TPGS:1"),
        "{text}"
    );
    // The unit serial number is the volume UUID in hex; the UUID is in the superblock
    // (bytes 20..36 of each slot).
    let sb = std::fs::read(t.process.dir().join("data/vol/superblock")).unwrap();
    let uuid = hex::encode(&sb[20..36]);
    let (ok, serial) = tool(&["iscsi-inq", "-e", "1", "-c", "128", &t.url(0, "", "")]);
    assert!(
        ok && serial.contains(&format!("Unit Serial Number:[{uuid}]")),
        "{serial}"
    );
    let (ok, ids) = tool(&["iscsi-inq", "-e", "1", "-c", "131", &t.url(0, "", "")]);
    assert!(ok, "{ids}");
    for want in [
        "TARGET_PORT_GROUP",
        "RELATIVE_TARGET_PORT",
        "Designator Type:(3) NAA",
    ] {
        assert!(ids.contains(want), "VPD 0x83 lacks {want}: {ids}");
    }
    assert!(ids.contains(&format!("TANDEM  {uuid}")), "{ids}");
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[test]
fn qemu_img_round_trip_of_64_mib_random_data() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup {
        size: 64 << 20,
        ..TargetSetup::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("random.img");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..64 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }
    let url = t.url(0, "", "");
    let (ok, text) = tool(&[
        "qemu-img",
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &url,
    ]);
    assert!(ok, "qemu-img convert to iSCSI: {text}");
    let back = dir.path().join("back.img");
    let (ok, text) = tool(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &url,
        back.to_str().unwrap(),
    ]);
    assert!(ok, "qemu-img convert from iSCSI: {text}");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 64 << 20);
    let (a, b) = (sha256_of(&src), sha256_of(&back));
    println!("qemu-img round trip: sha256 {a} -> {b}");
    assert_eq!(a, b);
}

fn bhs(opcode: u8, flags: u8, data_len: u32, itt: u32) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = opcode;
    h[1] = flags;
    h[5..8].copy_from_slice(&data_len.to_be_bytes()[1..]);
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h
}

#[test]
fn malformed_pdus_close_the_connection_and_other_sessions_go_on() {
    let _serial = quiet();
    let t = IscsiTarget::start(&TargetSetup::default()).unwrap();
    let addr = format!("127.0.0.1:{}", t.ports[0]);
    let hostile: Vec<Vec<u8>> = vec![
        vec![0xff; 4096],
        bhs(0x01, 0x80, 0, 1),           // SCSI command before login
        bhs(0x03, 0x87, 0x00ff_ffff, 1), // login with a 16 MiB data segment
        [bhs(0x03, 0x87, 3, 1), b"ab\0\0".to_vec()].concat(), // login text without '='
        bhs(0x3f, 0, 0, 0),              // a target opcode from an initiator
    ];
    for bytes in &hostile {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        // The target answers with a login reject or closes; it never hangs or dies.
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf);
    }
    // A session that was open all along, and a new one, still work.
    let (ok, text) = tool(&["iscsi-inq", &t.url(0, "", "")]);
    assert!(ok && text.contains("TANDEM"), "{text}");
    let mut t = t;
    assert!(t.process.is_running(), "the daemon died");
}

#[test]
fn sigterm_finishes_and_flushes() {
    let _serial = quiet();
    let mut t = IscsiTarget::start(&TargetSetup {
        size: 16 << 20,
        ..TargetSetup::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.img");
    std::fs::write(&src, vec![0x5au8; 16 << 20]).unwrap();
    let url = t.url(0, "", "");
    let (ok, text) = tool(&[
        "qemu-img",
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &url,
    ]);
    assert!(ok, "{text}");
    let status = t
        .process
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(30))
        .expect("tandem exits on SIGTERM");
    assert!(status.success(), "{status}");
    // After a clean stop the log is empty: everything is in the extent.
    let extent = std::fs::read(t.process.dir().join("data/vol/extent")).unwrap();
    assert!(
        extent.iter().all(|&b| b == 0x5a),
        "extent does not hold the written data"
    );
}
