//! In-band authentication of one queue after its Connect, as `nvme connect --dhchap-secret
//! [--dhchap-ctrl-secret]` does it: [`proto_nvmeof::auth::HostAuth`] driven over
//! Authentication Send / Receive commands.

use bytes::Bytes;
use proto_nvmeof::auth::{self, failure_explanation, DhchapSecret, Finish, HostAuth};
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::queue::{Data, Queue};

/// The host's identity and secrets (from its `HostOptions`).
pub(crate) struct Who<'a> {
    /// Host NQN.
    pub hostnqn: &'a str,
    /// The host's secret.
    pub secret: Option<&'a str>,
    /// The controller's secret (bidirectional authentication).
    pub ctrl_secret: Option<&'a str>,
    /// DH group ids to offer (empty: all).
    pub dhgroups: &'a [u8],
}

/// Largest payload the host reads with one Authentication Receive.
const RECEIVE_LEN: u32 = 4096;

fn secret(text: &str, what: &str) -> Result<DhchapSecret> {
    DhchapSecret::parse(text).map_err(|e| Error::Auth(format!("{what}: {e}")))
}

async fn send(q: &Queue, payload: Vec<u8>) -> Result<()> {
    let sqe = auth::send_command(0, payload.len() as u32);
    q.submit(sqe, Data::Write(Bytes::from(payload)))
        .await?
        .ok()?;
    Ok(())
}

async fn receive(q: &Queue) -> Result<Bytes> {
    let sqe = auth::receive_command(0, RECEIVE_LEN);
    Ok(q.submit(sqe, Data::Read(RECEIVE_LEN)).await?.ok()?.data)
}

/// Runs the DH-HMAC-CHAP transaction on queue `qid` of a controller of `subnqn`.
pub(crate) async fn authenticate(q: &Queue, who: &Who<'_>, subnqn: &str, qid: u16) -> Result<()> {
    let Some(host_secret) = who.secret else {
        return Err(Error::Auth(
            "the controller requires authentication and the host has no DH-HMAC-CHAP secret".into(),
        ));
    };
    let host_secret = secret(host_secret, "host secret")?;
    let ctrl_secret = who
        .ctrl_secret
        .map(|s| secret(s, "controller secret"))
        .transpose()?;
    // A Send RNG: the transaction's future may move between threads.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut tx = HostAuth::new(who.hostnqn, subnqn, host_secret, ctrl_secret, qid);
    if !who.dhgroups.is_empty() {
        tx.dhgroups = who.dhgroups.to_vec();
    }
    send(q, tx.negotiate()).await?;
    let challenge = receive(q).await?;
    let reply = tx
        .on_challenge(&challenge, &mut rng)
        .map_err(|e| Error::Auth(e.to_string()))?;
    send(q, reply).await?;
    let success1 = receive(q).await?;
    match tx.on_success1(&success1) {
        Ok(Finish::Done) => Ok(()),
        Ok(Finish::SendSuccess2(s2)) => send(q, s2).await,
        Err(e) => {
            // Tell the controller why, as Linux does; the error is the host's either way.
            let _ = send(q, tx.failure2(failure_explanation(&e))).await;
            Err(Error::Auth(e.to_string()))
        }
    }
}
