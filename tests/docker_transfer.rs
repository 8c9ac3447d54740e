//! A 500 MB upload and download through the Docker backend, generated and hashed while
//! streaming (nothing large is held in memory or written to the host disk).

mod docker_common;

use bytes::Bytes;
use docker_common::{out, sandbox, sh};
use futures::StreamExt;
use sandbox_harness::protocol::{Sandbox, UploadBody};
use sha2::{Digest, Sha256};

const SIZE: u64 = 500 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

/// Deterministic pseudo-random chunk `i` (xorshift), so the data is not trivially compressible.
fn chunk(i: u64) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(CHUNK);
    while v.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

#[tokio::test]
async fn five_hundred_megabytes_round_trip_with_identical_sha256() {
    let sb = sandbox().await;
    let n = SIZE / CHUNK as u64;
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let stream = futures::stream::iter(0..n).map(move |i| {
        let c = chunk(i);
        h.lock().unwrap().update(&c);
        Ok(c)
    });
    let body = UploadBody {
        stream: Box::pin(stream),
        len: Some(SIZE),
    };
    let written = sb.file_upload("s", "/tmp/big.bin", body).await.unwrap();
    assert_eq!(written, SIZE);
    let sent = hex::encode(hasher.lock().unwrap().clone().finalize());

    let inside = out(&sh(&sb, "s", "sha256sum /tmp/big.bin").await);
    assert!(inside.starts_with(&sent), "{inside} vs {sent}");

    let mut dl = sb.file_download("s", "/tmp/big.bin").await.unwrap();
    let mut got = Sha256::new();
    let mut total = 0u64;
    while let Some(c) = dl.next().await {
        let c = c.unwrap();
        total += c.len() as u64;
        got.update(&c);
    }
    assert_eq!(total, SIZE);
    assert_eq!(hex::encode(got.finalize()), sent);
}
