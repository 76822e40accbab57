//! A FUA write waiting in the replica gate when the primary stops being one (a demotion stands
//! the gate down, a newer epoch fences it) gets the retryable path state, never an I/O error
//! that would reach the host's filesystem as a medium error. The batched write path
//! (`Engine::write_many`, which the volume's I/O threads use) and the single write are both
//! checked, against the real gate and the one mapping of volume errors to block results.

use std::sync::Arc;

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::replica::ReplicaGate;
use blockstore::{AccessState, DirStorage, Error, Role};
use gateway::replication::gate::Gate;
use gateway::target::volume_error;

const BS: usize = 512;

fn primary(dir: &std::path::Path) -> Arc<Engine> {
    let d = DirStorage::new(dir);
    create(
        &d,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: 64 * BS as u64,
            wal_bytes: 64 * 1024,
            role: Role::Primary,
            epoch: 1,
        },
    )
    .unwrap();
    Engine::open(
        &d,
        OpenOptions {
            background_flusher: false,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// Starts FUA (and one plain) writes through `write_many` and a single FUA write, waits until
/// the gate was asked for the standby, lets `stop` end the primary's term, and returns what the
/// writes got.
fn writes_when(stop: impl FnOnce(&Gate)) -> (Vec<blockstore::Result<()>>, blockstore::Result<()>) {
    let dir = tempfile::tempdir().unwrap();
    let e = primary(dir.path());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(Gate::new(tx));
    e.set_replica_gate(Some(gate.clone() as Arc<dyn ReplicaGate>));
    let data = vec![7u8; BS];
    let batch = {
        let (e, data) = (e.clone(), data.clone());
        std::thread::spawn(move || {
            e.write_many(&[
                (0, &data[..], true),
                (1, &data[..], false),
                (2, &data[..], true),
            ])
        })
    };
    assert!(
        rx.blocking_recv().is_some(),
        "the batch waits for the standby"
    );
    let single = {
        let (e, data) = (e.clone(), data.clone());
        std::thread::spawn(move || e.write(3, &data, true))
    };
    assert!(rx.blocking_recv().is_some(), "the single write waits too");
    assert!(!batch.is_finished() && !single.is_finished());
    stop(&gate);
    (batch.join().unwrap(), single.join().unwrap())
}

fn check(results: (Vec<blockstore::Result<()>>, blockstore::Result<()>), state: AccessState) {
    let (batch, single) = results;
    let [fua0, plain, fua2]: [blockstore::Result<()>; 3] = batch.try_into().unwrap();
    assert!(plain.is_ok(), "a plain write does not wait: {plain:?}");
    for r in [fua0, fua2, single] {
        match r {
            Err(e @ Error::NotServing(s)) => {
                assert_eq!(s, state);
                assert_eq!(
                    volume_error("v", e, true),
                    block_core::BlockResult::AccessState(state),
                    "answered with the retryable ALUA / ANA state"
                );
            }
            other => panic!("a FUA write got {other:?}, not the retryable {state:?}"),
        }
    }
}

#[test]
fn a_fua_write_waiting_when_the_primary_is_demoted_gets_the_transitioning_state() {
    check(writes_when(|g| g.stand_down()), AccessState::Transitioning);
}

#[test]
fn a_fua_write_waiting_when_the_primary_is_fenced_gets_the_unavailable_state() {
    check(writes_when(|g| g.fence(9)), AccessState::Unavailable);
}

/// The volume's write path (the queue, one log write per batch, then each plain write awaiting
/// the gate in its own task): a plain write completes only once the standby received it, many
/// in flight share one release, and a demotion answers the waiting ones with the retryable
/// transitioning state.
#[test]
fn plain_writes_through_the_volume_wait_for_the_standby_to_receive_them() {
    let dir = tempfile::tempdir().unwrap();
    drop(primary(dir.path()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let v = blockstore::Volume::open(
            dir.path(),
            OpenOptions {
                background_flusher: false,
                ..OpenOptions::default()
            },
        )
        .await
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(Gate::new(tx));
        v.engine()
            .set_replica_gate(Some(gate.clone() as Arc<dyn ReplicaGate>));
        let writes: Vec<_> = (0..8u64)
            .map(|lba| {
                let v = v.clone();
                tokio::spawn(async move { v.write(lba, vec![lba as u8; BS], false).await })
            })
            .collect();
        let first = rx.recv().await.expect("the standby is asked");
        assert!(
            matches!(first, gateway::replication::gate::Need::Received(_)),
            "a plain write waits for receipt, not durability: {first:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            writes.iter().all(|w| !w.is_finished()),
            "a plain write completed before the standby received it"
        );
        gate.release_received(v.engine().last_lsn());
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let w = {
            let v = v.clone();
            tokio::spawn(async move { v.write(9, vec![9u8; BS], false).await })
        };
        rx.recv().await.expect("asked again");
        gate.stand_down();
        match w.await.unwrap() {
            Err(Error::NotServing(AccessState::Transitioning)) => {}
            other => panic!("a waiting plain write got {other:?}, not the retryable state"),
        }
    });
}
