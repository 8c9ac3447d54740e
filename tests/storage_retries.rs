//! The Storage client's retry rules over real HTTP against the emulator's fault injection:
//! uploads are retried only under a generation precondition, a retry that meets its own
//! earlier write counts as done, and a download broken in transit resumes with a Range
//! request. Rules from Google's "Retry strategy"
//! (https://cloud.google.com/storage/docs/retry-strategy: objects.insert is conditionally
//! idempotent, retried only with ifGenerationMatch) and "Resumable downloads"
//! (https://cloud.google.com/storage/docs/resumable-downloads).

use bytes::Bytes;
use futures::StreamExt;
use sandbox_harness::emulator::faults::kind;
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

async fn env(faults: FaultConfig) -> (Emulator, StorageClient) {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        object_mutation_limit: None,
        faults,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: "bkt".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (emu, c)
}

fn injected(emu: &Emulator, kind: &str) -> u64 {
    emu.context().injector.counts().total(kind)
}

/// An upload whose answer is lost after the write (503) is retried; the retry finds its own
/// bytes and returns that object instead of writing a second generation.
#[tokio::test]
async fn a_lost_upload_answer_is_not_written_twice() {
    let (emu, c) = env(FaultConfig {
        lost_insert_responses: 1,
        ..Default::default()
    })
    .await;
    let data = Bytes::from_static(b"first write");
    let o = c
        .insert_object("bkt", "x", data.clone(), &WriteOptions::default())
        .await
        .expect("the retry recognises its own write");
    assert_eq!(injected(&emu, kind::LOST_RESPONSE), 1);
    let now = c.get_object("bkt", "x").await.unwrap();
    assert_eq!(now.generation, o.generation, "no second generation written");
    assert_eq!(
        c.download("bkt", "x", None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
        data
    );
}

/// Under a precondition (create only if absent), a lost answer makes the retry meet 412 on
/// its own write: that is success, not a conflict.
#[tokio::test]
async fn a_conditional_retry_meeting_its_own_write_succeeds() {
    let (emu, c) = env(FaultConfig {
        lost_insert_responses: 1,
        ..Default::default()
    })
    .await;
    let opts = WriteOptions {
        if_generation_match: Some(0),
        ..Default::default()
    };
    let o = c
        .insert_object("bkt", "y", Bytes::from_static(b"once"), &opts)
        .await
        .expect("412 on its own write counts as created");
    assert_eq!(injected(&emu, kind::LOST_RESPONSE), 1);
    assert_eq!(
        c.get_object("bkt", "y").await.unwrap().generation,
        o.generation
    );
    // Someone else's object is still a conflict.
    let err = c
        .insert_object("bkt", "y", Bytes::from_static(b"other"), &opts)
        .await
        .expect_err("a real conflict stays an error");
    assert_eq!(err.status(), Some(412), "{err}");
}

/// An unconditional upload retried after a 503 that did not write: the retry carries
/// ifGenerationMatch of what was there, and the content ends up as sent.
#[tokio::test]
async fn unconditional_uploads_retry_under_a_precondition() {
    let mut faults = FaultConfig {
        seed: Some(7),
        ..Default::default()
    };
    faults.p503.insert("storage.objects.insert".into(), 0.5);
    let (emu, c) = env(faults).await;
    for i in 0..12 {
        let data = Bytes::from(format!("version {i}"));
        c.insert_object("bkt", "z", data.clone(), &WriteOptions::default())
            .await
            .expect("retried to success");
        assert_eq!(
            c.download("bkt", "z", None)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
            data
        );
    }
    assert!(injected(&emu, kind::HTTP_503) > 0, "the dice injected 503s");
}

/// A download whose stream breaks halfway resumes from the first missing byte with a Range
/// request pinned to the generation, whole or ranged, and the crc32c of the whole still checks.
#[tokio::test]
async fn a_broken_download_resumes_with_range() {
    let (emu, c) = env(FaultConfig {
        broken_downloads: 2,
        ..Default::default()
    })
    .await;
    let data: Bytes = (0..3_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    c.insert_object("bkt", "big", data.clone(), &WriteOptions::default())
        .await
        .unwrap();
    let mut d = c.download("bkt", "big", None).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = d.stream.next().await {
        got.extend_from_slice(&chunk.expect("resumed, no error surfaces"));
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "content intact after the resume");
    let part = c
        .download("bkt", "big", Some((1000, Some(200_999))))
        .await
        .unwrap()
        .collect()
        .await
        .expect("a ranged download resumes too");
    assert_eq!(part, data.slice(1000..201_000));
    assert_eq!(injected(&emu, kind::BROKEN_DOWNLOAD), 2);
}

/// A conditional create (only if absent) whose first attempt failed without writing is
/// retried: the object's absence on the retry is not an error.
#[tokio::test]
async fn a_conditional_create_is_retried_after_a_failure_that_wrote_nothing() {
    let mut faults = FaultConfig {
        seed: Some(3),
        ..Default::default()
    };
    faults.p503.insert("storage.objects.insert".into(), 0.5);
    let (emu, c) = env(faults).await;
    let opts = WriteOptions {
        if_generation_match: Some(0),
        ..Default::default()
    };
    for i in 0..10 {
        c.insert_object(
            "bkt",
            &format!("new-{i}"),
            Bytes::from(format!("{i}")),
            &opts,
        )
        .await
        .expect("created despite 503s");
    }
    assert!(injected(&emu, kind::HTTP_503) > 0, "the dice injected 503s");
}
