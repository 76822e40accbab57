//! The async snapshot and clone API the gateway uses, on real directories: snapshot, clone in
//! a directory of its own, find its origin from the directory, open it with the origin, export
//! a snapshot read-only, roll back, and the errors a control plane maps.

use blockstore::engine::{CreateOptions, OpenOptions};
use blockstore::testkit::{identify, write_data};
use blockstore::{clone_origin, CloneOptions, Error, Volume};

const BS: usize = 4096;
const BLOCKS: u64 = 256;

fn ids(data: &[u8]) -> Vec<u64> {
    data.chunks(BS)
        .enumerate()
        .map(|(b, d)| identify(d, b as u64).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_clones_and_read_only_exports_through_the_async_volume() {
    let root = tempfile::tempdir().unwrap();
    let (vdir, cdir, edir) = (
        root.path().join("vol"),
        root.path().join("clone"),
        root.path().join("export"),
    );
    Volume::create(
        &vdir,
        CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 1 << 20,
            ..CreateOptions::default()
        },
    )
    .await
    .unwrap();
    let v = Volume::open(&vdir, OpenOptions::default()).await.unwrap();
    v.write(0, write_data(1, 0, 64, BS), false).await.unwrap();
    let snap = v.create_snapshot("before-upgrade").await.unwrap();
    assert_eq!(v.list_snapshots(), vec![snap.clone()]);
    v.write(0, write_data(2, 0, 16, BS), true).await.unwrap();
    let was = ids(&v.read_snapshot(snap.id, 0, BLOCKS).await.unwrap());
    assert!(was[..64].iter().all(|&i| i == 1));

    // A writable clone in its own directory.
    let cuuid = v
        .create_clone(snap.id, &cdir, CloneOptions::writable(1 << 20))
        .await
        .unwrap();
    let origin = clone_origin(&cdir).unwrap().unwrap();
    assert_eq!(origin.origin_uuid, v.uuid());
    assert_eq!(origin.snapshot_id, snap.id);
    assert!(!origin.read_only);
    assert!(clone_origin(&vdir).unwrap().is_none());
    assert!(matches!(
        Volume::open(&cdir, OpenOptions::default()).await,
        Err(Error::Invalid(_))
    ));
    let c = Volume::open_clone(&cdir, OpenOptions::default(), &v)
        .await
        .unwrap();
    assert_eq!(c.uuid(), cuuid);
    assert_eq!(c.clone_origin(), Some(origin));
    c.write(8, write_data(3, 8, 4, BS), true).await.unwrap();
    let mut want = was.clone();
    want[8..12].fill(3);
    assert_eq!(ids(&c.read(0, BLOCKS).await.unwrap()), want);
    assert_eq!(
        ids(&v.read_snapshot(snap.id, 0, BLOCKS).await.unwrap()),
        was
    );

    // A read-only export of the snapshot.
    v.create_clone(snap.id, &edir, CloneOptions::read_only_view())
        .await
        .unwrap();
    let e = Volume::open_clone(&edir, OpenOptions::default(), &v)
        .await
        .unwrap();
    assert!(e.read_only());
    assert_eq!(e.capacity_blocks(), BLOCKS);
    assert_eq!(ids(&e.read(0, BLOCKS).await.unwrap()), was);
    assert!(matches!(
        e.write(0, write_data(4, 0, 1, BS), false).await,
        Err(Error::ReadOnly)
    ));

    // What a control plane maps to 404 / 409 / 400.
    assert!(matches!(
        v.delete_snapshot(99).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        v.delete_snapshot(snap.id).await,
        Err(Error::Busy(_))
    ));
    assert!(matches!(
        v.create_snapshot("before-upgrade").await,
        Err(Error::Exists(_))
    ));
    assert!(matches!(
        v.create_snapshot("").await,
        Err(Error::Invalid(_))
    ));

    // Roll the volume back; then remove the clones and the snapshot.
    v.rollback_snapshot(snap.id).await.unwrap();
    assert_eq!(ids(&v.read(0, BLOCKS).await.unwrap()), was);
    for (vol, dir) in [(c, &cdir), (e, &edir)] {
        vol.close().await.unwrap();
        drop(vol);
        std::fs::remove_dir_all(dir).unwrap();
        v.clone_deleted(snap.id).await.unwrap();
    }
    v.delete_snapshot(snap.id).await.unwrap();
    assert!(v.list_snapshots().is_empty());
    v.close().await.unwrap();
}
