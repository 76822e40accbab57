//! Smoke tests of the guest harness: boot, exit status, host networking, time limit.
//!
//! Each boots a QEMU guest under TCG (a few seconds each; the first run also builds the image).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use interop_tests::{free_tcp_port, Guest, GuestImage, GuestStatus};

#[test]
fn guest_boots_with_initiator_tools_and_modules() {
    let image = GuestImage::shared().expect("guest image");
    println!(
        "image: kernel {} prepared in {:?} (built: {})",
        image.release, image.prepare_time, image.built
    );
    let out = Guest::builder()
        .name("tools")
        .kernel_args(["tandem.case=tools"])
        .file("data/hello.txt", "file for the guest\n", 0o644)
        .script(
            r#"set -e
grep -q 'tandem.case=tools' /proc/cmdline
[ "$(cat /tandem/data/hello.txt)" = "file for the guest" ]
for m in iscsi_tcp nvme_tcp dm_multipath; do
    grep -q "^$m " /proc/modules || { echo "module $m not loaded"; exit 1; }
done
iscsiadm --version
nvme version
sg_inq --version
mkfs.ext4 -V
fio --version
multipath -h 2>&1 | head -1 || true
test -s /etc/nvme/hostnqn && cat /etc/nvme/hostnqn
grep -q '^InitiatorName=iqn\.' /etc/iscsi/initiatorname.iscsi
pidof iscsid
ip -4 addr show eth0 | grep -q 10.0.2.15/24
"#,
        )
        .run()
        .expect("guest run");
    out.assert_success();
    assert!(out.console.contains("nvme version"), "nvme output missing");
    println!(
        "boot to script: {:?}, whole run: {:?}",
        out.boot_to_script, out.elapsed
    );
}

#[test]
fn script_exit_status_is_reported() {
    let out = Guest::builder()
        .name("exit3")
        .env("CODE", "3")
        .script("echo failing on purpose; exit $CODE\n")
        .run()
        .expect("guest run");
    assert_eq!(out.status, GuestStatus::Exited(3));
    // The marker is the harness's, not text the script can forge: an echoed look-alike is ignored.
    let forged = Guest::builder()
        .name("forged")
        .script("echo TANDEM-GUEST-SCRIPT-EXIT 0 0; exit 5\n")
        .run()
        .expect("guest run");
    assert_eq!(forged.exit_code(), Some(5));
}

#[test]
fn guest_reaches_a_host_listener() {
    let port = free_tcp_port().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"hello-from-host\n").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        (peer, String::from_utf8_lossy(&got).into_owned())
    });
    let out = Guest::builder()
        .name("net")
        .env("PORT", port.to_string())
        .script(
            r#"reply=$(echo hello-from-guest | nc -w 5 "$TANDEM_HOST" "$PORT")
echo "got: $reply"
[ "$reply" = hello-from-host ]
"#,
        )
        .run()
        .expect("guest run");
    out.assert_success();
    let (_peer, got) = server.join().unwrap();
    assert_eq!(got, "hello-from-guest\n");
}

#[test]
fn time_limit_kills_the_guest() {
    let out = Guest::builder()
        .name("sleeper")
        .timeout(Duration::from_secs(25))
        .script("echo sleeping forever; while true; do sleep 1000; done\n")
        .run()
        .expect("guest run");
    assert!(out.timed_out(), "status {:?}", out.status);
    assert!(out.boot_to_script.is_some(), "the script had started");
    assert!(out.elapsed >= Duration::from_secs(25) && out.elapsed < Duration::from_secs(45));
}
