//! Quick host-side checks of the twin's Cloud Storage FUSE mount (the rules are shown inside
//! task containers in gcsfuse_rules.rs; this exercises the mount mechanics on the host).

use std::sync::Arc;

use sandbox_harness::emulator::gcsfuse::{Budget, GcsFuse, MountOptions};
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_through_the_mount_are_objects() {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = std::env::var("GCSFUSE_HOST_STORAGE").unwrap_or_else(|_| emu.base_url());
    let c = StorageClient::new(&base, TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: "host-bucket".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.insert_object(
        "host-bucket",
        "pre.txt",
        "hello".into(),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let fuse = GcsFuse::new(
        &base,
        emu.clock(),
        Arc::new(|| TokenSource::Anonymous),
        "hosttest",
    )
    .unwrap();
    let opts = MountOptions::parse(&[]).unwrap();
    let m = tokio::task::block_in_place(|| {
        fuse.mount("host-bucket", &opts, false, Budget::new(1 << 30))
    })
    .unwrap();
    let p = m.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut log = Vec::new();
        log.push(format!(
            "pre={:?}",
            std::fs::read_to_string(p.join("pre.txt"))
        ));
        log.push(format!(
            "write={:?}",
            std::fs::write(p.join("new.txt"), "abc")
        ));
        log.push(format!(
            "ls={:?}",
            std::fs::read_dir(&p).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        ));
        log.push(format!(
            "link={:?}",
            std::fs::hard_link(p.join("new.txt"), p.join("l.txt"))
        ));
        log.push(format!("mkfifo={:?}", nix_mkfifo(&p.join("fifo"))));
        log
    })
    .await
    .unwrap();
    println!("{out:#?}");
    let m2 = tokio::task::block_in_place(|| {
        fuse.mount("host-bucket", &opts, false, Budget::new(1 << 30))
    })
    .unwrap();
    let (pa, pb) = (m.path().to_path_buf(), m2.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut a = std::fs::File::create(pa.join("lc")).unwrap();
        let mut b = std::fs::File::create(pb.join("lc")).unwrap();
        a.write_all(b"from-a").unwrap();
        b.write_all(b"from-b").unwrap();
        drop(b);
        drop(a);
    })
    .await
    .unwrap();
    let got = c
        .download("host-bucket", "lc", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    println!(
        "lc={:?} meta={:?}",
        got,
        c.get_object("host-bucket", "lc").await.unwrap()
    );
    let got = c
        .download("host-bucket", "new.txt", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&got[..], b"abc");
    drop(m);
}

fn nix_mkfifo(p: &std::path::Path) -> std::io::Result<()> {
    let st = std::process::Command::new("mkfifo").arg(p).output()?;
    if st.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&st.stderr).to_string(),
        ))
    }
}
