//! Google's own CLI as the referee of the emulator's Cloud Storage JSON API: `gcloud storage`
//! (installed at /usr/bin/gcloud; `scripts/setup.sh` checks for it) copies a small and a 30 MB
//! file both ways with bytes equal, lists a prefix holding folder placeholders, removes it
//! recursively, and sees objects `a` and `a/b` side by side.
//!
//! gcloud runs with a throwaway `CLOUDSDK_CONFIG`, `api_endpoint_overrides/storage` pointing at
//! the emulator, no credentials, no parallel composite uploads, no usage reporting or update
//! checks, and no metadata-server probe; every request it logs (`--log-http`) must go to the
//! emulator.

mod clients_common;
mod storage_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use clients_common::{require_tool, run, text};
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, ListOptions, StorageClient, WriteOptions};

const BUCKET: &str = "gcloud-referee";

/// One emulator and a gcloud configuration directory pointing at it.
struct Gcloud {
    bin: PathBuf,
    config: tempfile::TempDir,
    base: String,
}

impl Gcloud {
    async fn new(base: &str) -> Gcloud {
        let g = Gcloud {
            bin: require_tool("gcloud"),
            config: tempfile::tempdir().unwrap(),
            base: base.to_string(),
        };
        let endpoint = format!("{base}/storage/v1/");
        for (k, v) in [
            ("api_endpoint_overrides/storage", endpoint.as_str()),
            ("auth/disable_credentials", "true"),
            ("storage/parallel_composite_upload_enabled", "False"),
            ("core/disable_usage_reporting", "true"),
            ("component_manager/disable_update_check", "true"),
            ("core/check_gce_metadata", "false"),
            ("core/project", "gcloud-referee-project"),
        ] {
            let o = run(g.command(&["config", "set", k, v])).await;
            assert!(o.status.success(), "gcloud config set {k}: {}", text(&o));
        }
        g
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("CLOUDSDK_CONFIG", self.config.path())
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            // Belt and braces: a metadata-server probe would go to loopback, not to GCE.
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("GCE_METADATA_IP", "127.0.0.1:9")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("CLOUDSDK_ACTIVE_CONFIG_NAME");
        c
    }

    /// Runs `gcloud storage ARGS --log-http`; asserts success and that every request went to
    /// the emulator. Returns stdout.
    async fn storage(&self, args: &[&str]) -> String {
        let mut all = vec!["storage"];
        all.extend_from_slice(args);
        all.push("--log-http");
        let o = run(self.command(&all)).await;
        assert!(o.status.success(), "gcloud {all:?}: {}", text(&o));
        let log = String::from_utf8_lossy(&o.stderr);
        let uris: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("uri: "))
            .collect();
        assert!(!uris.is_empty(), "gcloud {all:?} logged no request: {log}");
        for u in &uris {
            assert!(
                u.starts_with(&self.base),
                "gcloud {all:?} sent a request elsewhere than the emulator: {u}"
            );
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn gs(name: &str) -> String {
    format!("gs://{BUCKET}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_storage_copies_lists_and_removes_against_the_emulator() {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "gcloud-referee-project",
        &BucketSpec {
            name: BUCKET.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let g = Gcloud::new(&emu.base_url()).await;
    let files = tempfile::tempdir().unwrap();

    // A small file (gcloud sends it as one multipart/related request) and a 30 MB file (a
    // resumable upload on /resumable/upload/...), both ways, bytes equal.
    let small = b"hello from gcloud\n".to_vec();
    let big = storage_common::pattern(30 * 1024 * 1024, 42);
    for (name, data) in [("small.txt", &small), ("big.bin", &big)] {
        let src = write(files.path(), name, data);
        g.storage(&["cp", src.to_str().unwrap(), &gs(&format!("up/{name}"))])
            .await;
        let o = c.get_object(BUCKET, &format!("up/{name}")).await.unwrap();
        assert_eq!(o.size, data.len() as u64, "{name} size in the emulator");
        let back = files.path().join(format!("{name}.back"));
        g.storage(&["cp", &gs(&format!("up/{name}")), back.to_str().unwrap()])
            .await;
        let got = std::fs::read(&back).unwrap();
        assert!(got == *data, "{name}: bytes differ after the round trip");
    }

    // A prefix holding folder placeholders (objects named like `dir/`, as the console, the
    // SDKs and Cloud Storage FUSE's mkdir create them).
    for (n, body) in [
        ("tree/", &b""[..]),
        ("tree/sub/", b""),
        ("tree/sub/deep.txt", b"deep"),
        ("tree/top.txt", b"top!"),
        ("keep/other.txt", b"stays"),
    ] {
        c.insert_object(
            BUCKET,
            n,
            Bytes::copy_from_slice(body),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let ls = g.storage(&["ls", "-l", &gs("tree/")]).await;
    for want in [gs("tree/"), gs("tree/top.txt"), gs("tree/sub/")] {
        assert!(
            ls.lines().any(|l| l.trim_end().ends_with(&want)),
            "`gcloud storage ls -l` misses {want}:\n{ls}"
        );
    }
    assert!(
        ls.lines()
            .any(|l| l.contains(" 4 ") && l.ends_with(&gs("tree/top.txt"))),
        "`ls -l` shows the size of tree/top.txt:\n{ls}"
    );
    let rls = g.storage(&["ls", "-l", "-r", &gs("tree/")]).await;
    assert!(rls.contains(&gs("tree/sub/deep.txt")), "{rls}");

    // rm -r removes every object under the prefix, placeholders included, and nothing else.
    g.storage(&["rm", "-r", &gs("tree/")]).await;
    let (left, _) = c.list_all(BUCKET, &ListOptions::default()).await.unwrap();
    let left: Vec<String> = left.into_iter().map(|o| o.name).collect();
    assert!(
        left.iter().all(|n| !n.starts_with("tree/")),
        "rm -r left {left:?}"
    );
    assert!(left.contains(&"keep/other.txt".to_string()));

    // Objects `a` and `a/b` coexist.
    let a = write(files.path(), "a", b"I am a");
    let ab = write(files.path(), "ab", b"I am a/b");
    g.storage(&["cp", a.to_str().unwrap(), &gs("a")]).await;
    g.storage(&["cp", ab.to_str().unwrap(), &gs("a/b")]).await;
    assert_eq!(g.storage(&["cat", &gs("a")]).await, "I am a");
    assert_eq!(g.storage(&["cat", &gs("a/b")]).await, "I am a/b");
}
