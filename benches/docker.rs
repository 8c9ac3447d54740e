//! Docker backend latency and throughput.
//!
//! `cargo bench --bench docker` measures: a warm stateful exec (`true` in a session that
//! already ran once), a raw engine exec of `true` (the engine's own overhead, for comparison),
//! and a 10 MB upload and download. Set `SANDBOX_BENCH_LARGE=1` to add 500 MB transfers
//! (slow; compare with `docker cp`). Iterations that take long use flat sampling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig, DockerSandbox};
use sandbox_harness::protocol::{Sandbox, StatefulExec, UploadBody};
use sandbox_harness::transport::{RawExec, Transport};

fn body(size: u64) -> UploadBody {
    const CHUNK: u64 = 1024 * 1024;
    let chunk = Bytes::from(vec![0x5au8; CHUNK as usize]);
    let n = size.div_ceil(CHUNK);
    let stream = futures::stream::iter(0..n).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK) as usize;
        Ok(chunk.slice(..len))
    });
    UploadBody {
        stream: Box::pin(stream),
        len: Some(size),
    }
}

async fn drain(sb: &DockerSandbox, path: &str) -> u64 {
    let mut s = sb.file_download("b", path).await.expect("download");
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.expect("chunk").len() as u64;
    }
    n
}

fn transfer(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    sb: &Arc<DockerSandbox>,
    size: u64,
    label: &str,
) {
    let mut g = c.benchmark_group(format!("docker_transfer_{label}"));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    let path = format!("/tmp/bench-{label}");
    g.bench_function("upload", |b| {
        b.iter(|| {
            rt.block_on(async {
                sb.file_upload("b", &path, body(size))
                    .await
                    .expect("upload")
            })
        })
    });
    g.bench_function("download", |b| {
        b.iter(|| rt.block_on(async { assert_eq!(drain(sb, &path).await, size) }))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = rt
        .block_on(DockerBackend::connect(DockerConfig::default()))
        .expect("docker engine");
    let sb = rt.block_on(backend.create_docker()).expect("sandbox");
    rt.block_on(sb.ensure_ready()).expect("ready");
    rt.block_on(sb.exec_stateful(StatefulExec::new("b", "cd /tmp", Duration::from_secs(10))))
        .expect("warm-up");

    let mut g = c.benchmark_group("docker_exec");
    g.bench_function("stateful_true", |b| {
        b.iter(|| {
            rt.block_on(sb.exec_stateful(StatefulExec::new("b", "true", Duration::from_secs(10))))
                .expect("exec")
        })
    });
    g.bench_function("raw_engine_true", |b| {
        b.iter(|| {
            rt.block_on(
                sb.transport()
                    .run("bench", RawExec::new(["true"], Duration::from_secs(10))),
            )
            .expect("raw exec")
        })
    });
    g.finish();

    transfer(c, &rt, &sb, 10 * 1024 * 1024, "10MB");
    if std::env::var("SANDBOX_BENCH_LARGE").is_ok_and(|v| v == "1") {
        transfer(c, &rt, &sb, 500 * 1024 * 1024, "500MB");
    }
    rt.block_on(sb.destroy()).expect("destroy");
}

criterion_group!(docker, benches);
criterion_main!(docker);
