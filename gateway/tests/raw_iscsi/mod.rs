//! A raw iSCSI client for tests that need PDUs no initiator stack would send on its own: task
//! tags reused right after an ABORT TASK, writes whose data is held back, logins with a chosen
//! ISID (session reinstatement), several PDUs in one TCP write.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto_iscsi::pdu::{
    DataOut, Digests, LoginRequest, Lun, Pdu, PduDecoder, ScsiCommand, Stage, TaskAttribute,
    TaskMgmtRequest, TmfFunction,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw session.
pub struct Raw {
    pub s: TcpStream,
    rx: BytesMut,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// A PDU's bytes.
pub fn bytes(pdu: &Pdu) -> BytesMut {
    let mut out = BytesMut::new();
    pdu.encode(Digests::default(), &mut out).unwrap();
    out
}

impl Raw {
    /// Logs in to `target` as `initiator` with `isid`, straight into full feature phase.
    pub async fn login(
        addr: std::net::SocketAddr,
        target: &str,
        initiator: &str,
        isid: [u8; 6],
    ) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut me = Raw {
            s,
            rx: BytesMut::new(),
            cmd_sn: 1,
            exp_stat_sn: 0,
        };
        let text = format!(
            "InitiatorName={initiator}\0TargetName={target}\0SessionType=Normal\0\
             HeaderDigest=None\0DataDigest=None\0"
        );
        me.send(&Pdu::LoginRequest(LoginRequest {
            transit: true,
            csg: Stage::OperationalNegotiation,
            nsg: Stage::FullFeaturePhase,
            isid,
            itt: 0,
            cmd_sn: 1,
            data: Bytes::from(text),
            ..LoginRequest::default()
        }))
        .await;
        match me.recv().await {
            Some(Pdu::LoginResponse(r)) => {
                assert_eq!((r.status_class, r.status_detail), (0, 0), "login accepted");
                me.exp_stat_sn = r.stat_sn.wrapping_add(1);
            }
            other => panic!("expected a login response, got {other:?}"),
        }
        me
    }

    /// Sends PDUs in one TCP write.
    pub async fn send_all(&mut self, pdus: &[Pdu]) {
        let mut out = BytesMut::new();
        for p in pdus {
            out.extend_from_slice(&bytes(p));
        }
        self.s.write_all(&out).await.unwrap();
    }

    /// Sends one PDU.
    pub async fn send(&mut self, pdu: &Pdu) {
        self.send_all(std::slice::from_ref(pdu)).await;
    }

    /// The next PDU; `None` when the target closed the connection.
    pub async fn recv(&mut self) -> Option<Pdu> {
        let dec = PduDecoder::new();
        loop {
            if let Some(p) = dec.decode_from(&mut self.rx).unwrap() {
                return Some(p);
            }
            let mut buf = [0u8; 65536];
            match self.s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The next PDU within `d`: `Err(())` on timeout.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Pdu>, ()> {
        tokio::time::timeout(d, self.recv()).await.map_err(|_| ())
    }

    /// A SCSI command with the next CmdSN.
    pub fn command(&mut self, itt: u32, cdb: &[u8], read: u32, write: &[u8], edtl: u32) -> Pdu {
        let cmd_sn = self.cmd_sn;
        self.cmd_sn += 1;
        Pdu::ScsiCommand(ScsiCommand {
            final_: true,
            read: read > 0,
            write: edtl > 0 && read == 0,
            attr: TaskAttribute::Simple,
            lun: Lun::from_index(0),
            itt,
            expected_data_transfer_length: if read > 0 { read } else { edtl },
            cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: Bytes::copy_from_slice(cdb),
            data: Bytes::copy_from_slice(write),
            ..ScsiCommand::default()
        })
    }

    /// ABORT TASK for `ref_itt` (sent as an immediate PDU).
    pub fn abort_task(&self, itt: u32, ref_itt: u32, ref_cmd_sn: u32) -> Pdu {
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::AbortTask,
            lun: Lun::from_index(0),
            itt,
            referenced_task_tag: ref_itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        })
    }

    /// A solicited Data-Out.
    pub fn data_out(&self, itt: u32, ttt: u32, offset: u32, data: &[u8]) -> Pdu {
        Pdu::DataOut(DataOut {
            final_: true,
            lun: Lun::from_index(0),
            itt,
            ttt,
            exp_stat_sn: self.exp_stat_sn,
            data_sn: 0,
            buffer_offset: offset,
            data: Bytes::copy_from_slice(data),
        })
    }

    /// Runs one command and returns its status and data-in (skipping unrelated PDUs).
    pub async fn run(&mut self, itt: u32, cdb: &[u8], read: u32, write: &[u8]) -> (u8, Vec<u8>) {
        let c = self.command(itt, cdb, read, write, write.len() as u32);
        self.send(&c).await;
        self.status_of(itt).await
    }

    /// Waits for the status of task `itt` (and the data-in before it).
    pub async fn status_of(&mut self, itt: u32) -> (u8, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            match self.recv().await {
                Some(Pdu::DataIn(d)) if d.itt == itt => {
                    data.extend_from_slice(&d.data);
                    if let Some(s) = d.status {
                        return (s, data);
                    }
                }
                Some(Pdu::ScsiResponse(r)) if r.itt == itt => return (r.status, data),
                Some(_) => {}
                None => panic!("connection closed waiting for task {itt}"),
            }
        }
    }

    /// Runs one command and returns its status, data-in and sense data (empty unless CHECK
    /// CONDITION).
    pub async fn run_sense(&mut self, itt: u32, cdb: &[u8], read: u32) -> (u8, Vec<u8>, Vec<u8>) {
        self.run_sense_with(itt, cdb, read, &[]).await
    }

    /// [`Raw::run_sense`] of a command sending `write` as immediate data.
    pub async fn run_sense_with(
        &mut self,
        itt: u32,
        cdb: &[u8],
        read: u32,
        write: &[u8],
    ) -> (u8, Vec<u8>, Vec<u8>) {
        let c = self.command(itt, cdb, read, write, write.len() as u32);
        self.send(&c).await;
        let mut data = Vec::new();
        loop {
            match self.recv().await {
                Some(Pdu::DataIn(d)) if d.itt == itt => {
                    data.extend_from_slice(&d.data);
                    if let Some(s) = d.status {
                        return (s, data, Vec::new());
                    }
                }
                Some(Pdu::ScsiResponse(r)) if r.itt == itt => {
                    // The data segment is a 2-byte SenseLength and the sense data.
                    let sense = r.data.get(2..).unwrap_or_default().to_vec();
                    return (r.status, data, sense);
                }
                Some(_) => {}
                None => panic!("connection closed waiting for task {itt}"),
            }
        }
    }

    /// TEST UNIT READY until GOOD (collects the unit attentions a new nexus starts with).
    pub async fn clear_unit_attentions(&mut self, itt_base: u32) {
        for i in 0..8 {
            if self.run(itt_base + i, &[0; 6], 0, &[]).await.0 == 0 {
                return;
            }
        }
        panic!("unit attentions did not clear");
    }
}
