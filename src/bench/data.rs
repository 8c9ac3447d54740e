//! Streamed test data: deterministic pseudo-random bytes generated chunk by chunk (never held
//! whole in memory) and their sha256, for transfer integrity checks.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::protocol::{ByteStream, SandboxError, UploadBody};

/// Size of one generated chunk.
pub const CHUNK: usize = 1024 * 1024;

/// The `i`-th chunk of the stream seeded with `seed` (xorshift64*, fast and deterministic).
fn chunk(seed: u64, index: u64, len: usize) -> Bytes {
    let mut x = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&v[..take]);
    }
    Bytes::from(out)
}

/// A generated stream of `len` bytes.
pub fn generate(seed: u64, len: u64) -> impl Stream<Item = Bytes> + Send + 'static {
    let chunks = len.div_ceil(CHUNK as u64);
    futures::stream::iter(0..chunks).map(move |i| {
        let start = i * CHUNK as u64;
        let n = (len - start).min(CHUNK as u64) as usize;
        chunk(seed, i, n)
    })
}

/// The sha256 of the generated stream (computed by generating it once, chunk by chunk).
pub async fn expected_sha256(seed: u64, len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut s = Box::pin(generate(seed, len));
    while let Some(c) = s.next().await {
        h.update(&c);
    }
    h.finalize().into()
}

/// An upload body of the generated stream.
pub fn upload_body(seed: u64, len: u64) -> UploadBody {
    UploadBody {
        stream: Box::pin(generate(seed, len).map(Ok::<_, SandboxError>)),
        len: Some(len),
    }
}

/// An upload body of the generated stream that hashes the bytes as the backend consumes them;
/// read the hash after the upload finished.
pub fn hashed_upload_body(seed: u64, len: u64) -> (UploadBody, Arc<Mutex<Sha256>>) {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let stream = generate(seed, len).map(move |c| {
        if let Ok(mut g) = h.lock() {
            g.update(&c);
        }
        Ok::<_, SandboxError>(c)
    });
    (
        UploadBody {
            stream: Box::pin(stream),
            len: Some(len),
        },
        hasher,
    )
}

/// Consumes a download stream; returns its length and sha256, or the first error.
pub async fn drain_and_hash(mut stream: ByteStream) -> Result<(u64, [u8; 32]), SandboxError> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        let c = c?;
        n += c.len() as u64;
        h.update(&c);
    }
    Ok((n, h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_stream_is_deterministic_and_exact() {
        let len = 3 * CHUNK as u64 + 17;
        let body = upload_body(7, len);
        let (n, sha) = drain_and_hash(body.stream).await.unwrap();
        assert_eq!(n, len);
        assert_eq!(sha, expected_sha256(7, len).await);
        assert_ne!(sha, expected_sha256(8, len).await);
        let (body, h) = hashed_upload_body(7, len);
        drain_and_hash(body.stream).await.unwrap();
        let tapped: [u8; 32] = h.lock().unwrap().clone().finalize().into();
        assert_eq!(tapped, sha);
    }
}
