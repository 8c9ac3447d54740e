//! How the twin's Cloud Storage FUSE looks a name up, counted in Storage API calls on a mount
//! made on the host (no container needed).
//!
//! Source: GoogleCloudPlatform/gcsfuse `internal/fs/inode/dir.go`, `LookUpChild` and
//! `lookUpUnknownType`: a child of unknown type is looked up as the file object and, with
//! implicit directories, a one-item list of `name/` at once (an errgroup), never as a third
//! `name/` get; the directory wins. Cloud Run mounts with implicit directories on (Cloud Run's
//! "Configure Cloud Storage volume mounts for jobs" page, "Disable implicit directories").

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sandbox_harness::emulator::gcsfuse::{Budget, GcsFuse, MountHandle, MountOptions};
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};

const BUCKET: &str = "lookups";

/// Stat and list calls a mount made so far.
fn counts(m: &MountHandle) -> (u64, u64) {
    let c = m.calls();
    (c.stat.load(Ordering::SeqCst), c.list.load(Ordering::SeqCst))
}

async fn put(c: &StorageClient, name: &str) {
    c.insert_object(
        BUCKET,
        name,
        bytes::Bytes::from_static(b"x"),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_costs_one_get_and_one_list_asked_together() {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: BUCKET.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    put(&c, "file.txt").await;
    put(&c, "explicit/").await;
    put(&c, "implicit/inner.txt").await;
    let fuse = GcsFuse::new(
        &emu.base_url(),
        emu.clock(),
        Arc::new(|| TokenSource::Anonymous),
        "lookups",
    )
    .unwrap();
    // No metadata cache, as the harness mounts its workspace: every lookup goes to Storage.
    let opts = MountOptions::parse(&[
        "metadata-cache-ttl-secs=0".into(),
        "metadata-cache-negative-ttl-secs=0".into(),
    ])
    .unwrap();
    let m = tokio::task::block_in_place(|| fuse.mount(BUCKET, &opts, false, Budget::new(1 << 20)))
        .unwrap();
    let root = m.path().to_path_buf();
    let look = |name: &str| {
        let before = counts(&m);
        let kind = std::fs::symlink_metadata(root.join(name)).map(|md| md.is_dir());
        let after = counts(&m);
        (kind.ok(), (after.0 - before.0, after.1 - before.1))
    };
    tokio::task::block_in_place(|| {
        assert_eq!(look("missing"), (None, (1, 1)), "a missing name");
        assert_eq!(look("file.txt"), (Some(false), (1, 1)), "a file");
        assert_eq!(
            look("explicit"),
            (Some(true), (1, 1)),
            "an explicit directory"
        );
        assert_eq!(
            look("implicit"),
            (Some(true), (1, 1)),
            "an implicit directory"
        );
    });
    drop(m);
}
