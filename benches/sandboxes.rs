//! Per-backend latency and throughput with criterion, runnable with no GCP: Docker on the local
//! engine, Cloud Run on the embedded emulator.
//!
//! `cargo bench --bench sandboxes` measures, for each backend: a warm stateful exec (`true` in a
//! session that already ran once), a cold start (create to first command result; teardown is
//! not timed), and 10 MB upload and download. For Docker it also measures a raw engine exec of
//! `true`, the floor the harness's own overhead is judged against. `SANDBOX_BENCH_LARGE=1` adds
//! 500 MB transfers; `SANDBOX_BENCH_BACKENDS=docker` (or `cloudrun`) narrows the run. Long
//! iterations use flat sampling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::protocol::{Sandbox, SandboxBackend, StatefulExec, UploadBody};
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

async fn drain(sb: &dyn Sandbox, path: &str) -> u64 {
    let mut s = sb.file_download("b", path).await.expect("download");
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.expect("chunk").len() as u64;
    }
    n
}

fn exec(cmd: &str) -> StatefulExec {
    StatefulExec::new("b", cmd, Duration::from_secs(30))
}

fn transfer(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    sb: &Arc<dyn Sandbox>,
    size: u64,
    label: &str,
) {
    let mut g = c.benchmark_group(format!("{name}_transfer_{label}"));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    let path = format!("/workspace/bench-{label}");
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
        b.iter(|| rt.block_on(async { assert_eq!(drain(sb.as_ref(), &path).await, size) }))
    });
    g.finish();
}

fn backend_benches(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    backend: Arc<dyn SandboxBackend>,
) {
    let sb = rt.block_on(backend.create()).expect("sandbox");
    rt.block_on(sb.ensure_ready()).expect("ready");
    rt.block_on(sb.exec_stateful(exec("cd /workspace")))
        .expect("warm-up");

    let mut g = c.benchmark_group(format!("{name}_exec"));
    g.bench_function("stateful_true", |b| {
        b.iter(|| rt.block_on(sb.exec_stateful(exec("true"))).expect("exec"))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{name}_cold_start"));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("create_to_first_result", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let fresh = rt.block_on(backend.create()).expect("create");
                rt.block_on(fresh.exec_stateful(exec("true")))
                    .expect("first command");
                timed += start.elapsed();
                rt.block_on(fresh.destroy()).expect("destroy");
            }
            timed
        })
    });
    g.finish();

    transfer(c, rt, name, &sb, 10 * 1024 * 1024, "10MB");
    if std::env::var("SANDBOX_BENCH_LARGE").is_ok_and(|v| v == "1") {
        transfer(c, rt, name, &sb, 500 * 1024 * 1024, "500MB");
    }
    rt.block_on(sb.destroy()).expect("destroy");
}

fn wanted(name: &str) -> bool {
    std::env::var("SANDBOX_BENCH_BACKENDS")
        .map(|v| v.split(',').any(|b| b.trim() == name))
        .unwrap_or(true)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if wanted("docker") {
        let docker = Arc::new(
            rt.block_on(DockerBackend::connect(DockerConfig::default()))
                .expect("docker engine"),
        );
        // The engine's own floor: an exec of `true` with no harness logic around it.
        let sb = rt.block_on(docker.create_docker()).expect("sandbox");
        let mut g = c.benchmark_group("docker_exec");
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
        rt.block_on(sb.destroy()).expect("destroy");
        backend_benches(c, &rt, "docker", docker);
    }
    if wanted("cloudrun") {
        let cfg = CloudRunConfig::from_env().expect("Cloud Run configuration");
        let cloudrun = rt
            .block_on(CloudRunBackend::connect(cfg))
            .expect("Cloud Run backend (the embedded emulator when no GCP is configured)");
        let local = cloudrun.local_cloud().cloned();
        backend_benches(c, &rt, "cloudrun", Arc::new(cloudrun));
        if let Some(local) = local {
            rt.block_on(local.shutdown());
        }
    }
}

criterion_group!(sandboxes, benches);
criterion_main!(sandboxes);
