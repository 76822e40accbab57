//! A bare iSCSI host for the gateway's tests: a raw login over TCP and READ(10)s, enough to
//! appear as an attached host with counters that move.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use proto_iscsi::pdu::{
    Digests, LoginRequest, Lun, Pdu, PduDecoder, ScsiCommand, Stage, TaskAttribute,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bare iSCSI session (an attached host without an initiator stack): login straight into the full feature phase, then READ(10)s.
pub struct RawSession {
    s: TcpStream,
    rx: BytesMut,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

impl RawSession {
    async fn send(&mut self, pdu: Pdu) {
        let mut out = BytesMut::new();
        pdu.encode(Digests::default(), &mut out).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Pdu {
        let dec = PduDecoder::new();
        loop {
            if let Some(p) = dec.decode_from(&mut self.rx).unwrap() {
                return p;
            }
            let mut buf = [0u8; 65536];
            let n = self.s.read(&mut buf).await.unwrap();
            assert!(n > 0, "target closed the connection");
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    pub async fn login(addr: std::net::SocketAddr, target: &str, initiator: &str) -> RawSession {
        match RawSession::try_login(addr, target, initiator).await {
            Ok(s) => s,
            Err((class, detail)) => panic!("login refused: status {class:#04x}/{detail:#04x}"),
        }
    }

    /// Logs in like [`RawSession::login`]; a refused login gives its status class and detail.
    pub async fn try_login(
        addr: std::net::SocketAddr,
        target: &str,
        initiator: &str,
    ) -> Result<RawSession, (u8, u8)> {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut me = RawSession {
            s,
            rx: BytesMut::new(),
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
        };
        let text = format!(
            "InitiatorName={initiator}\0TargetName={target}\0SessionType=Normal\0\
             HeaderDigest=None\0DataDigest=None\0"
        );
        me.send(Pdu::LoginRequest(LoginRequest {
            transit: true,
            csg: Stage::OperationalNegotiation,
            nsg: Stage::FullFeaturePhase,
            isid: [0x40, 0, 0, 0, 0, 1],
            itt: 0,
            cmd_sn: 1,
            data: Bytes::from(text),
            ..LoginRequest::default()
        }))
        .await;
        match me.recv().await {
            Pdu::LoginResponse(r) if (r.status_class, r.status_detail) != (0, 0) => {
                return Err((r.status_class, r.status_detail));
            }
            Pdu::LoginResponse(r) => {
                assert!(r.transit && r.nsg == Stage::FullFeaturePhase, "{r:?}");
                me.exp_stat_sn = r.stat_sn.wrapping_add(1);
            }
            other => panic!("expected a login response, got {other:?}"),
        }
        Ok(me)
    }

    /// READ(10) of one 512-byte block at LBA 0; returns the SCSI status.
    pub async fn read_block(&mut self) -> u8 {
        let itt = self.itt;
        self.itt += 1;
        let cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        self.send(Pdu::ScsiCommand(ScsiCommand {
            final_: true,
            read: true,
            attr: TaskAttribute::Simple,
            lun: Lun::from_index(0),
            itt,
            expected_data_transfer_length: 512,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: Bytes::copy_from_slice(&cdb),
            ..ScsiCommand::default()
        }))
        .await;
        self.cmd_sn += 1;
        loop {
            match self.recv().await {
                Pdu::DataIn(d) if d.itt == itt => {
                    if let Some(status) = d.status {
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                        return status;
                    }
                }
                Pdu::ScsiResponse(r) => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    return r.status;
                }
                _ => {}
            }
        }
    }
}
