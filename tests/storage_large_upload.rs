//! A 500 MB resumable upload through the client into the emulator in bounded memory:
//! generated data is streamed, hashes and a ranged read are verified, and the object deleted.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};

const TOTAL: u64 = 500 * 1024 * 1024;
const PIECE: usize = 1024 * 1024;

fn piece(i: u64) -> Bytes {
    // Cheap deterministic content: each 1 MiB piece differs.
    let mut v = vec![0u8; PIECE];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (j as u64).wrapping_mul(31).wrapping_add(i * 7) as u8;
    }
    Bytes::from(v)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_upload_of_500_mb_in_bounded_memory() {
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
            name: "large".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let baseline = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let pieces = TOTAL / PIECE as u64;
    let stream = futures::stream::iter(0..pieces).map(|i| Ok::<_, std::io::Error>(piece(i)));
    let mut md5 = md5::Md5::new();
    let mut crc = 0u32;
    for i in 0..pieces {
        let p = piece(i);
        md5.update(&p);
        crc = crc32c::crc32c_append(crc, &p);
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let o = c
        .upload_object(
            "large",
            "big/blob",
            stream,
            None,
            &WriteOptions {
                if_generation_match: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("500 MB resumable upload");
    assert_eq!(o.size, TOTAL);
    assert_eq!(
        o.md5_hash.as_deref(),
        Some(b64.encode(md5.finalize()).as_str())
    );
    assert_eq!(
        o.crc32c.as_deref(),
        Some(b64.encode(crc.to_be_bytes()).as_str())
    );
    // Ranged read across a piece boundary.
    let start = 300 * PIECE as u64 - 10;
    let got = c
        .download("large", "big/blob", Some((start, Some(start + 19))))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut want = piece(299)[PIECE - 10..].to_vec();
    want.extend_from_slice(&piece(300)[..10]);
    assert_eq!(&got[..], &want[..]);
    // A full streamed download verifies the crc32c at its end.
    let mut s = c.download("large", "big/blob", None).await.unwrap().stream;
    let mut n = 0u64;
    while let Some(ch) = s.next().await {
        n += ch.expect("download chunk").len() as u64;
    }
    assert_eq!(n, TOTAL);
    sampler.abort();
    let grew_mib = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline)
        / 1024;
    c.delete_object("large", "big/blob", &WriteOptions::default())
        .await
        .unwrap();
    assert!(
        c.get_object("large", "big/blob")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Chunks are 8 MiB; client and server together must stay far below the object size.
    assert!(
        grew_mib < 128,
        "RSS grew by {grew_mib} MiB during a 500 MB upload"
    );
}
