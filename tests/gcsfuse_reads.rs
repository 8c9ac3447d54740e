//! How the twin's Cloud Storage FUSE reads a file, checked byte for byte and counted in
//! Storage API reads on a mount made on the host.
//!
//! Source: GoogleCloudPlatform/gcsfuse `internal/gcsx/random_reader.go`: a reader asks for up
//! to `sequential-read-size-mb` (default 200, `cfg/params.yaml`) from the read's offset and
//! keeps the response open, so reads that follow one another take their bytes from it ("Sequential
//! reads will simply sip from the fire house"); a read elsewhere starts a new request.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sandbox_harness::emulator::gcsfuse::{Budget, GcsFuse, MountOptions};
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};

const BUCKET: &str = "reads";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_share_one_request_and_a_seek_starts_another() {
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
    // 5 MiB and a bit, every byte different from its neighbours.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 12_345u32)
        .map(|i| (i % 251) as u8)
        .collect();
    c.insert_object(
        BUCKET,
        "big.bin",
        bytes::Bytes::from(data.clone()),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let fuse = GcsFuse::new(
        &emu.base_url(),
        emu.clock(),
        Arc::new(|| TokenSource::Anonymous),
        "reads",
    )
    .unwrap();
    let opts = MountOptions::parse(&[]).unwrap();
    let m = tokio::task::block_in_place(|| fuse.mount(BUCKET, &opts, false, Budget::new(64 << 20)))
        .unwrap();
    let path = m.path().join("big.bin");
    let reads = || m.calls().read.load(Ordering::SeqCst);
    tokio::task::block_in_place(|| {
        let before = reads();
        let mut f = std::fs::File::open(&path).unwrap();
        let mut all = Vec::new();
        f.read_to_end(&mut all).unwrap();
        assert!(all == data, "the whole file, byte for byte");
        // One request normally; the kernel's reads of one file run on several threads and may
        // arrive out of order, and one that lands outside the handle's window starts another.
        // A reader that asks per 1 MiB read (the twin before) needs 6 here.
        let n = reads() - before;
        assert!(
            (1..=3).contains(&n),
            "{n} requests for one sequential read of 5 MiB"
        );

        // A new handle (the kernel drops its page cache at open) read from the second MiB:
        // a new request from there, the right bytes.
        drop(f);
        let before = reads();
        let mut f = std::fs::File::open(&path).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut part = vec![0u8; 300_000];
        f.read_exact(&mut part).unwrap();
        assert!(
            part[..] == data[1 << 20..(1 << 20) + 300_000],
            "after the seek"
        );
        let n = reads() - before;
        assert!(
            (1..=2).contains(&n),
            "{n} requests for a read from elsewhere"
        );
    });
    drop(m);
}
