//! Issue 14, item 1 under load: a real `tandem serve` process with 1,000 idle or half-open
//! connections (iSCSI and NVMe/TCP mixed), the memory attack of item 1 from many iSCSI
//! connections (WRITEs with a large transfer length answered by one unsolicited Data-Out at a
//! high offset, or by nothing at all after the R2T), and connections beyond the configured
//! limit. The daemon's resident memory (VmRSS) must stay within a stated bound, connections
//! beyond the limit are closed, and well-behaved hosts (NVMe/TCP and iSCSI) keep completing
//! verified I/O throughout; their throughput is printed beside the unloaded figure (a
//! measurement, not an assertion).

mod raw_iscsi;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway::nvme::config::DEFAULT_NQN;
use nvme_initiator::{Controller, HostOptions};
use proto_iscsi::pdu::{DataOut, Digests, LoginRequest, Lun, Pdu, ScsiCommand, Stage};
use raw_iscsi::Raw;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TARGET: &str = "iqn.2026-11.io.tandem:default";
/// Idle or half-open connections, half iSCSI, half NVMe/TCP.
const IDLE: usize = 1000;
/// iSCSI connections running the memory attack.
const ATTACKERS: usize = 40;
/// The connection limit the daemon runs with: room for the above and the hosts, not more.
const MAX_CONNECTIONS: usize = IDLE + ATTACKERS + 20;
/// What the attack and the idle connections may add to the daemon's resident memory. Before
/// the fix one attacking connection pinned 128 x 256 KiB (32 MiB) through sparse unsolicited
/// data and up to its 64 MiB write budget through R2Ts answered with nothing: 40 of them
/// would add gigabytes.
const RSS_GROWTH_BOUND: u64 = 128 << 20;

/// The daemon, killed when the test ends however it ends.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Raises this process's open-file limit (inherited by the daemon) to the hard limit.
fn raise_open_files(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit / setrlimit only read and write the struct passed by reference.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= needed,
        "open-file hard limit {} is below the {needed} this test needs",
        lim.rlim_cur
    );
}

async fn start() -> (Daemon, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (iscsi, nvme, disc) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"data_dir = "{data}"
[[volume]]
name = "default"
size = "256MiB"
wal_size = "64MiB"
[iscsi]
[[iscsi.portal]]
listen = "127.0.0.1:{iscsi}"
[[iscsi.target]]
iqn = "{TARGET}"
[[iscsi.target.lun]]
id = 0
volume = "default"
[nvme]
discovery_listen = ["127.0.0.1:{disc}"]
[[nvme.portal]]
listen = "127.0.0.1:{nvme}"
[admin]
enabled = false
[limits]
max_connections = {MAX_CONNECTIONS}
login_timeout_ms = 120000
"#,
        data = dir.path().display()
    );
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, cfg).unwrap();
    let bin = std::env::var_os("TANDEM_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tandem").into());
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon { child, _dir: dir };
    let (ia, na): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{iscsi}").parse().unwrap(),
        format!("127.0.0.1:{nvme}").parse().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(ia).await.is_err() || TcpStream::connect(na).await.is_err() {
        assert!(Instant::now() < deadline, "tandem did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (daemon, ia, na)
}

/// A well-behaved NVMe/TCP host: writes `rounds` x 64 KiB and reads each back; returns MiB/s.
async fn nvme_io(c: &Controller, bs: u32, rounds: u32, seed: u8) -> f64 {
    let t = Instant::now();
    for i in 0..rounds {
        let data = Bytes::from(vec![seed.wrapping_add(i as u8); 64 << 10]);
        let lba = u64::from(i) * u64::from((64 << 10) / bs);
        c.write(0, 1, lba, data.clone(), bs, false).await.unwrap();
        let back = c.read(0, 1, lba, (64 << 10) / bs, bs).await.unwrap();
        assert_eq!(back, data, "NVMe host read back other data");
    }
    (f64::from(rounds) * 128.0 / 1024.0) / t.elapsed().as_secs_f64()
}

/// A well-behaved iSCSI host: writes `rounds` x 32 KiB and reads each back; returns MiB/s.
async fn iscsi_io(s: &mut Raw, rounds: u32, seed: u8) -> f64 {
    let t = Instant::now();
    for i in 0..rounds {
        let data = vec![seed.wrapping_add(i as u8); 32 << 10];
        let lba = 100_000 + i * 64;
        let l = lba.to_be_bytes();
        let w = [0x2A, 0, l[0], l[1], l[2], l[3], 0, 0, 64, 0];
        let r = [0x28, 0, l[0], l[1], l[2], l[3], 0, 0, 64, 0];
        // Write: 8 KiB immediate data, the rest through R2Ts.
        let c = s.command(10 + 2 * i, &w, 0, &data[..8192], data.len() as u32);
        s.send(&c).await;
        let mut sent = 8192usize;
        loop {
            match s.recv().await.expect("iSCSI host's session closed") {
                Pdu::R2t(r2t) => {
                    let (off, len) = (
                        r2t.buffer_offset as usize,
                        r2t.desired_data_transfer_length as usize,
                    );
                    let mut pdus = Vec::new();
                    for (n, chunk) in data[off..off + len].chunks(8192).enumerate() {
                        pdus.push(Pdu::DataOut(DataOut {
                            final_: (n + 1) * 8192 >= len,
                            lun: Lun::from_index(0),
                            itt: 10 + 2 * i,
                            ttt: r2t.ttt,
                            exp_stat_sn: s.exp_stat_sn,
                            data_sn: n as u32,
                            buffer_offset: (off + n * 8192) as u32,
                            data: Bytes::copy_from_slice(chunk),
                        }));
                    }
                    sent += len;
                    s.send_all(&pdus).await;
                }
                Pdu::ScsiResponse(resp) if resp.itt == 10 + 2 * i => {
                    assert_eq!(resp.status, 0, "iSCSI WRITE failed");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(sent, data.len());
        let (st, back) = s.run(11 + 2 * i, &r, data.len() as u32, &[]).await;
        assert_eq!(st, 0);
        assert!(back == data, "iSCSI host read back other data");
    }
    (f64::from(rounds) * 32.0 / 1024.0) / t.elapsed().as_secs_f64()
}

/// One attacking connection: logs in with InitialR2T=No, then fills its CmdSN window with
/// 16 MiB WRITEs, half of them followed by one 512-byte unsolicited Data-Out at offset
/// 256 KiB - 512, half sent with the F bit and no data (the target answers with an R2T that
/// is never served). Returns the stream, kept open.
async fn attack(addr: SocketAddr, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let text = format!(
        "InitiatorName=iqn.2026-01.io.tandem:attacker-{n}\0TargetName={TARGET}\0\
         SessionType=Normal\0HeaderDigest=None\0DataDigest=None\0InitialR2T=No\0\
         ImmediateData=Yes\0FirstBurstLength=262144\0MaxBurstLength=16776192\0\
         MaxRecvDataSegmentLength=262144\0"
    );
    let mut out = BytesMut::new();
    let login = Pdu::LoginRequest(LoginRequest {
        transit: true,
        csg: Stage::OperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        isid: [0x40, 0, 0, (n >> 8) as u8, n as u8, 7],
        cmd_sn: 1,
        data: Bytes::from(text),
        ..LoginRequest::default()
    });
    login.encode(Digests::default(), &mut out).unwrap();
    for k in 0..256u32 {
        let sparse = k % 2 == 0;
        let cmd = Pdu::ScsiCommand(ScsiCommand {
            final_: !sparse,
            write: true,
            lun: Lun::from_index(0),
            itt: 1000 + k,
            expected_data_transfer_length: 16 << 20,
            cmd_sn: 1 + k,
            cdb: Bytes::copy_from_slice(&[0x2A, 0, 0, 0, 0, 0, 0, 0x80, 0, 0]),
            ..ScsiCommand::default()
        });
        cmd.encode(Digests::default(), &mut out).unwrap();
        if sparse {
            let d = Pdu::DataOut(DataOut {
                final_: false,
                lun: Lun::from_index(0),
                itt: 1000 + k,
                ttt: 0xFFFF_FFFF,
                buffer_offset: (256 << 10) - 512,
                data: Bytes::from_static(&[0xEE; 512]),
                ..DataOut::default()
            });
            d.encode(Digests::default(), &mut out).unwrap();
        }
    }
    s.write_all(&out).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connections_and_the_memory_attack_leave_hosts_working_within_a_memory_bound() {
    raise_open_files((2 * MAX_CONNECTIONS + 200) as u64);
    let (daemon, iscsi, nvme) = start().await;

    // Unloaded: the well-behaved hosts' throughput.
    let host = HostOptions::default();
    let c = Controller::connect(nvme, DEFAULT_NQN, &host).await.unwrap();
    let bs = c.identify_namespace(1).await.unwrap().block_size;
    let mut s = Raw::login(
        iscsi,
        TARGET,
        "iqn.2026-01.io.tandem:good-host",
        [0x40, 0, 0, 0, 0, 1],
    )
    .await;
    s.clear_unit_attentions(1).await;
    let nvme_before = nvme_io(&c, bs, 64, 1).await;
    let iscsi_before = iscsi_io(&mut s, 32, 1).await;
    let rss_before = daemon.rss();

    // 1,000 idle or half-open connections, both protocols.
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let addr = if i % 2 == 0 { iscsi } else { nvme };
        let mut t = TcpStream::connect(addr).await.unwrap();
        if i % 4 < 2 {
            // Half a PDU header: a login / ICReq that never completes.
            t.write_all(&[if i % 2 == 0 { 0x43 } else { 0x00 }, 0x87, 0, 0, 0, 0])
                .await
                .unwrap();
        }
        idle.push(t);
    }
    // The memory attack from many connections.
    let mut attackers = Vec::with_capacity(ATTACKERS);
    for n in 0..ATTACKERS {
        attackers.push(attack(iscsi, n).await);
    }
    // Connections beyond the limit are closed at once.
    let mut refused = 0;
    let mut extra = Vec::new();
    for _ in 0..40 {
        let mut t = TcpStream::connect(iscsi).await.unwrap();
        let mut b = [0u8; 1];
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut t, &mut b),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => refused += 1,
            _ => extra.push(t),
        }
    }

    // Loaded: the same hosts keep working.
    let nvme_after = nvme_io(&c, bs, 64, 101).await;
    let iscsi_after = iscsi_io(&mut s, 32, 101).await;
    let rss_after = daemon.rss();
    println!(
        "NVMe/TCP host: {nvme_before:.1} MiB/s unloaded, {nvme_after:.1} MiB/s under load; \
         iSCSI host: {iscsi_before:.1} MiB/s unloaded, {iscsi_after:.1} MiB/s under load"
    );
    println!(
        "daemon VmRSS: {} MiB before, {} MiB with {IDLE} idle/half-open connections and \
         {ATTACKERS} attacking ones (bound: +{} MiB); {refused} of 40 connections beyond the \
         limit of {MAX_CONNECTIONS} refused",
        rss_before >> 20,
        rss_after >> 20,
        RSS_GROWTH_BOUND >> 20
    );
    assert!(
        rss_after <= rss_before + RSS_GROWTH_BOUND,
        "the daemon's RSS grew from {rss_before} to {rss_after} bytes"
    );
    assert!(
        refused >= 20,
        "only {refused} of 40 connections beyond the limit were refused"
    );
    drop((idle, attackers, extra));
    drop(daemon);
}
