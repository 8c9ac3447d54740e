//! Client-level Cloud Storage checks shared by the emulator and fake-gcs-server tests.

#![allow(dead_code)]

use bytes::Bytes;
use futures::StreamExt;
use sandbox_harness::gcp::storage::{
    BucketSpec, Lifecycle, LifecycleRule, ListOptions, StorageClient, WriteOptions,
};

/// Assertions a target is known to fail (each a documented gap of that server).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gaps {
    /// The server does not implement bucket testIamPermissions.
    pub no_test_iam_permissions: bool,
    /// The server does not return nextPageToken / honour maxResults.
    pub no_pagination: bool,
    /// The server does not store bucket lifecycle configuration.
    pub no_lifecycle: bool,
    /// The server ignores generation preconditions on delete.
    pub no_delete_preconditions: bool,
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The same storage checks, run against any server through `StorageClient`.
pub async fn run_checks(c: &StorageClient, bucket: &str, gaps: Gaps) {
    let b = c
        .insert_bucket(
            "test-project",
            &BucketSpec {
                name: bucket.into(),
                location: Some("US-CENTRAL1".into()),
                ..Default::default()
            },
        )
        .await
        .expect("insert bucket");
    assert_eq!(b.name, bucket);
    let got = c.get_bucket(bucket).await.expect("get bucket");
    assert_eq!(got.name, bucket);
    assert!(
        c.get_bucket("no-such-bucket-xyz")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Simple upload, metadata, download.
    let opts = WriteOptions {
        content_type: Some("text/plain".into()),
        if_generation_match: Some(0),
        ..Default::default()
    };
    let o = c
        .insert_object(
            bucket,
            "dir/hello.txt",
            Bytes::from_static(b"hello world"),
            &opts,
        )
        .await
        .expect("insert");
    assert_eq!(o.name, "dir/hello.txt");
    assert_eq!(o.size, 11);
    assert_eq!(o.md5_hash.as_deref(), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
    assert_eq!(o.crc32c.as_deref(), Some("yZRlqg=="));
    assert!(o.generation > 0);
    let meta = c.get_object(bucket, "dir/hello.txt").await.expect("get");
    assert_eq!(meta.generation, o.generation);
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    let body = c
        .download(bucket, "dir/hello.txt", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello world");
    let part = c
        .download(bucket, "dir/hello.txt", Some((6, Some(9))))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&part[..], b"worl");
    let tail = c
        .download(bucket, "dir/hello.txt", Some((6, None)))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&tail[..], b"world");

    // Preconditions.
    let err = c
        .insert_object(bucket, "dir/hello.txt", Bytes::from_static(b"again"), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(412), "{err}");
    let stale = WriteOptions {
        if_generation_match: Some(o.generation + 1),
        ..Default::default()
    };
    if !gaps.no_delete_preconditions {
        assert_eq!(
            c.delete_object(bucket, "dir/hello.txt", &stale)
                .await
                .unwrap_err()
                .status(),
            Some(412)
        );
    }
    let replace = WriteOptions {
        if_generation_match: Some(o.generation),
        ..Default::default()
    };
    let o2 = c
        .insert_object(
            bucket,
            "dir/hello.txt",
            Bytes::from_static(b"replaced"),
            &replace,
        )
        .await
        .expect("replace with matching generation");
    assert_ne!(o2.generation, o.generation);
    assert_eq!(o2.size, 8);

    // Listing with a delimiter and pages.
    for n in ["a/1", "a/2", "b/1", "top1", "top2"] {
        c.insert_object(
            bucket,
            &format!("l/{n}"),
            Bytes::from(n.to_string()),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let (items, prefixes) = c
        .list_all(
            bucket,
            &ListOptions {
                prefix: Some("l/".into()),
                delimiter: Some("/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<_> = items.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["l/top1", "l/top2"]);
    assert_eq!(prefixes, ["l/a/", "l/b/"]);
    let (all, _) = c
        .list_all(
            bucket,
            &ListOptions {
                prefix: Some("l/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    if !gaps.no_pagination {
        let first = c
            .list_objects(
                bucket,
                &ListOptions {
                    prefix: Some("l/".into()),
                    max_results: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(first.next_page_token.is_some());
        let (paged, _) = c
            .list_all(
                bucket,
                &ListOptions {
                    prefix: Some("l/".into()),
                    max_results: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let paged: Vec<_> = paged.iter().map(|o| o.name.clone()).collect();
        assert_eq!(paged, ["l/a/1", "l/a/2", "l/b/1", "l/top1", "l/top2"]);
    }

    // Resumable upload (unknown length, chunks of 512 KiB, odd tail) and ranged read.
    let data = pattern(5 * 256 * 1024 + 12345, 7);
    let c_small = c
        .clone()
        .with_chunk_size(512 * 1024)
        .unwrap()
        .with_simple_upload_limit(1024);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let big = c_small
        .upload_object(
            bucket,
            "big/blob.bin",
            futures::stream::iter(chunks),
            None,
            &WriteOptions::default(),
        )
        .await
        .expect("resumable upload");
    assert_eq!(big.size, data.len() as u64);
    let mut got = Vec::new();
    let mut s = c
        .download(bucket, "big/blob.bin", None)
        .await
        .unwrap()
        .stream;
    while let Some(ch) = s.next().await {
        got.extend_from_slice(&ch.unwrap());
    }
    assert!(got == data, "resumable round trip differs");
    let r = c
        .download(bucket, "big/blob.bin", Some((300_000, Some(700_000))))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(r[..] == data[300_000..=700_000]);
    // Known length, exactly one chunk multiple.
    let exact = pattern(1024 * 1024, 9);
    let o = c_small
        .upload_object(
            bucket,
            "big/exact.bin",
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(exact.clone()))]),
            Some(exact.len() as u64),
            &WriteOptions::default(),
        )
        .await
        .expect("resumable known length");
    assert_eq!(o.size, exact.len() as u64);
    // Empty object through the resumable path.
    let e = c_small
        .upload_object(
            bucket,
            "big/empty",
            futures::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new()),
            None,
            &WriteOptions::default(),
        )
        .await
        .expect("empty resumable");
    assert_eq!(e.size, 0);

    // Lifecycle configuration round trip.
    if !gaps.no_lifecycle {
        let lc = Lifecycle {
            rule: vec![LifecycleRule::delete_after_days(3, &["tmp/"])],
        };
        let b = c.patch_bucket_lifecycle(bucket, Some(&lc)).await.unwrap();
        assert_eq!(b.lifecycle.as_ref(), Some(&lc));
        assert_eq!(
            c.get_bucket(bucket).await.unwrap().lifecycle.as_ref(),
            Some(&lc)
        );
    }

    if !gaps.no_test_iam_permissions {
        let p = c
            .test_iam_permissions(bucket, &["storage.objects.get", "storage.objects.create"])
            .await
            .unwrap();
        assert_eq!(p, ["storage.objects.get", "storage.objects.create"]);
    }

    // Delete everything, then the bucket.
    let (all, _) = c.list_all(bucket, &ListOptions::default()).await.unwrap();
    assert!(all.len() >= 9);
    for o in all {
        c.delete_object(bucket, &o.name, &WriteOptions::default())
            .await
            .unwrap();
    }
    assert!(
        c.get_object(bucket, "dir/hello.txt")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        c.delete_object(bucket, "dir/hello.txt", &WriteOptions::default())
            .await
            .unwrap_err()
            .is_not_found()
    );
    c.delete_bucket(bucket).await.expect("delete bucket");
}
