//! File operations against the real Docker engine: binary contents, awkward paths, errors.

mod docker_common;

use docker_common::{out, sandbox, sh};
use futures::StreamExt;
use sandbox_harness::backends::docker::collect_stream;
use sandbox_harness::protocol::{
    ErrorKind, FileKind, ReadOptions, Sandbox, UploadBody, WriteOptions,
};

const BIN: &[u8] = b"a\0b\xff\xfe\nline two \xc3\x28\n\0\0tail";

const AWKWARD: &[&str] = &[
    "/workspace/with space.txt",
    "/workspace/quo'te\"s.bin",
    "/workspace/ünï cødé ✓",
    "/workspace/-leading-dash",
    "/workspace/new\nline",
    "/workspace/$(touch pwned)`x`;*",
];

#[tokio::test]
async fn write_read_round_trips_bytes_and_awkward_paths() {
    let sb = sandbox().await;
    for p in AWKWARD {
        sb.file_write("s", p, BIN, WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let c = sb.file_read("s", p, ReadOptions::default()).await.unwrap();
        assert_eq!(c.content, BIN, "{p}");
        assert!(!c.truncated);
        assert!(sb.file_exists("s", p).await.unwrap());
        let d = collect_stream(sb.file_download("s", p).await.unwrap())
            .await
            .unwrap();
        assert_eq!(d, BIN);
    }
    assert!(!sb.file_exists("s", "/workspace/pwned").await.unwrap());
    // relative to the session cwd
    sh(&sb, "s", "mkdir -p /tmp/rel && cd /tmp/rel").await;
    sb.file_write("s", "a/b/c.txt", b"deep", WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(out(&sh(&sb, "s", "cat /tmp/rel/a/b/c.txt").await), "deep");
    // an empty file
    sb.file_write("s", "empty", b"", WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        sb.file_read("s", "empty", ReadOptions::default())
            .await
            .unwrap()
            .content,
        b""
    );
}

#[tokio::test]
async fn write_options_append_newlines_and_mode() {
    let sb = sandbox().await;
    let p = "/workspace/f.txt";
    sb.file_write("s", p, b"one", WriteOptions::default())
        .await
        .unwrap();
    sb.file_write(
        "s",
        p,
        b"two",
        WriteOptions {
            append: true,
            leading_newline: true,
            trailing_newline: true,
        },
    )
    .await
    .unwrap();
    let c = sb.file_read("s", p, ReadOptions::default()).await.unwrap();
    assert_eq!(c.content, b"one\ntwo\n");
    sh(&sb, "s", "chmod 755 /workspace/f.txt").await;
    sb.file_write("s", p, b"#!/bin/sh\necho x\n", WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out(&sh(&sb, "s", "stat -c %a /workspace/f.txt").await),
        "755\n"
    );
    assert_eq!(out(&sh(&sb, "s", "/workspace/f.txt").await), "x\n");
    // no temp files left behind
    assert_eq!(out(&sh(&sb, "s", "ls -A /workspace").await), "f.txt\n");
    let e = sb
        .file_write("s", "/workspace", b"x", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = sb
        .file_write("s", "/workspace/f.txt/under", b"x", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = sb
        .file_write("s", "/proc/nope/x", b"x", WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Permission | ErrorKind::NotFound),
        "{e}"
    );
    let e = sb
        .file_write("s", "", b"x", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn read_line_ranges_and_truncation() {
    let sb = sandbox().await;
    let p = "/workspace/lines";
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
    sb.file_write("s", p, text.as_bytes(), WriteOptions::default())
        .await
        .unwrap();
    let r = |s, e, m| ReadOptions {
        start_line: s,
        end_line: e,
        max_length: m,
    };
    let c = sb
        .file_read("s", p, r(Some(2), Some(4), None))
        .await
        .unwrap();
    assert_eq!(c.content, b"line 2\nline 3\n");
    assert!(!c.truncated);
    let c = sb.file_read("s", p, r(Some(98), None, None)).await.unwrap();
    assert_eq!(c.content, b"line 98\nline 99\n");
    let c = sb.file_read("s", p, r(None, None, Some(10))).await.unwrap();
    assert_eq!(c.content, b"line 0\nlin");
    assert!(c.truncated);
    let c = sb
        .file_read("s", p, r(Some(5), Some(5), None))
        .await
        .unwrap();
    assert!(c.content.is_empty());
    let c = sb
        .file_read("s", p, r(Some(500), None, None))
        .await
        .unwrap();
    assert!(c.content.is_empty());
    assert_eq!(
        sb.file_read("s", "/workspace/missing", ReadOptions::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        sb.file_read("s", "/workspace", ReadOptions::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // a symlink is read through
    sh(&sb, "s", "ln -s lines /workspace/link").await;
    let c = sb
        .file_read("s", "/workspace/link", r(Some(0), Some(1), None))
        .await
        .unwrap();
    assert_eq!(c.content, b"line 0\n");
}

#[tokio::test]
async fn exists_delete_list_find() {
    let sb = sandbox().await;
    for p in AWKWARD {
        sb.file_write("s", p, b"12345", WriteOptions::default())
            .await
            .unwrap();
    }
    sb.file_write("s", "/workspace/.hidden", b"", WriteOptions::default())
        .await
        .unwrap();
    sb.file_write(
        "s",
        "/workspace/sub/deep/x.rs",
        b"fn",
        WriteOptions::default(),
    )
    .await
    .unwrap();
    sb.file_write("s", "/workspace/top.rs", b"fn", WriteOptions::default())
        .await
        .unwrap();
    sh(&sb, "s", "ln -s top.rs /workspace/ln").await;

    let list = sb.file_list("s", "/workspace").await.unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    let mut expected: Vec<String> = AWKWARD
        .iter()
        .map(|p| p.trim_start_matches("/workspace/").to_string())
        .chain([".hidden", "sub", "top.rs", "ln"].map(String::from))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    let e = list.iter().find(|e| e.name == "with space.txt").unwrap();
    assert_eq!((e.kind, e.size), (FileKind::File, 5));
    assert!(e.mtime.timestamp() > 1_600_000_000);
    assert_eq!(
        list.iter().find(|e| e.name == "sub").unwrap().kind,
        FileKind::Dir
    );
    assert_eq!(
        list.iter().find(|e| e.name == "ln").unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(
        sb.file_list("s", "/workspace/top.rs")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        sb.file_list("s", "/nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let found = sb.file_find("s", "/workspace", "**/*.rs").await.unwrap();
    assert_eq!(found, vec!["/workspace/sub/deep/x.rs", "/workspace/top.rs"]);
    let found = sb.file_find("s", "/workspace", "*.rs").await.unwrap();
    assert_eq!(found, vec!["/workspace/top.rs"]);
    let found = sb.file_find("s", ".", "*space*").await.unwrap();
    assert_eq!(found, vec!["/workspace/with space.txt"]);
    assert_eq!(
        sb.file_find("s", "/workspace", "a[")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        sb.file_find("s", "/nope", "*").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    for p in AWKWARD {
        sb.file_delete("s", p).await.unwrap();
        assert!(!sb.file_exists("s", p).await.unwrap());
    }
    sb.file_delete("s", "/workspace/sub").await.unwrap();
    assert!(!sb.file_exists("s", "/workspace/sub/deep").await.unwrap());
    sb.file_delete("s", "/workspace/ln").await.unwrap();
    assert!(sb.file_exists("s", "/workspace/top.rs").await.unwrap());
    assert_eq!(
        sb.file_delete("s", "/workspace/sub")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        sb.file_delete("s", "/").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn search_and_replace() {
    let sb = sandbox().await;
    let p = "/workspace/quo'te file";
    let content = b"alpha\r\nbeta \xff\0 gamma\nALPHA\nalphabet\n\xfe no newline alpha";
    sb.file_write("s", p, content, WriteOptions::default())
        .await
        .unwrap();
    let m = sb.file_search("s", p, "^alpha").await.unwrap();
    let got: Vec<(usize, &[u8])> = m.iter().map(|m| (m.line, m.text.as_slice())).collect();
    assert_eq!(got, vec![(0, &b"alpha"[..]), (3, b"alphabet")]);
    let m = sb.file_search("s", p, "(?i)alpha$").await.unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[2].line, 4);
    assert_eq!(m[2].text, b"\xfe no newline alpha");
    assert_eq!(
        sb.file_search("s", p, "(unclosed")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        sb.file_search("s", "/nope", "x").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let n = sb.file_replace("s", p, b"alpha", b"\0A\xff").await.unwrap();
    assert_eq!(n, 3);
    let c = sb.file_read("s", p, ReadOptions::default()).await.unwrap();
    assert_eq!(
        c.content,
        b"\0A\xff\r\nbeta \xff\0 gamma\nALPHA\n\0A\xffbet\n\xfe no newline \0A\xff"
    );
    assert_eq!(sb.file_replace("s", p, b"zzz", b"y").await.unwrap(), 0);
    assert_eq!(
        sb.file_replace("s", p, b"", b"y").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        sb.file_replace("s", "/nope", b"a", b"b")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        sb.file_replace("s", "/workspace", b"a", b"b")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // a file larger than one chunk, matches across chunk boundaries
    let big: Vec<u8> = (0..1_000_000u32)
        .flat_map(|i| format!("{i} xy\n").into_bytes())
        .collect();
    let expected_count = big.windows(2).filter(|w| w == b"xy").count() as u64;
    sb.file_upload("s", "/workspace/big", UploadBody::from_bytes(big.clone()))
        .await
        .unwrap();
    assert_eq!(
        sb.file_replace("s", "/workspace/big", b"xy", b"Z")
            .await
            .unwrap(),
        expected_count
    );
    let mut s = sb.file_download("s", "/workspace/big").await.unwrap();
    let mut total = 0usize;
    let mut zs = 0usize;
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        total += c.len();
        zs += c.iter().filter(|&&b| b == b'Z').count();
    }
    assert_eq!(zs as u64, expected_count);
    assert_eq!(total, big.len() - expected_count as usize);
}

#[tokio::test]
async fn upload_download_errors_and_atomicity() {
    let sb = sandbox().await;
    let n = sb
        .file_upload("s", "/workspace/new dir/ü'x", UploadBody::from_bytes(BIN))
        .await
        .unwrap();
    assert_eq!(n, BIN.len() as u64);
    let d = collect_stream(
        sb.file_download("s", "/workspace/new dir/ü'x")
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(d, BIN);
    // unknown length: spooled
    let chunks: Vec<Result<bytes::Bytes, _>> = (0..50)
        .map(|i| Ok(bytes::Bytes::from(vec![i as u8; 100_000])))
        .collect();
    let body = UploadBody {
        stream: Box::pin(futures::stream::iter(chunks)),
        len: None,
    };
    assert_eq!(
        sb.file_upload("s", "rel/spooled", body).await.unwrap(),
        5_000_000
    );
    assert_eq!(
        out(&sh(&sb, "s", "wc -c < /workspace/rel/spooled").await).trim(),
        "5000000"
    );
    // a failing stream leaves nothing behind
    let chunks: Vec<Result<bytes::Bytes, _>> = vec![
        Ok(bytes::Bytes::from_static(b"partial")),
        Err(sandbox_harness::protocol::SandboxError::new(
            ErrorKind::Network,
            "-",
            "t",
            "boom",
        )),
    ];
    let body = UploadBody {
        stream: Box::pin(futures::stream::iter(chunks)),
        len: Some(1000),
    };
    assert!(
        sb.file_upload("s", "/workspace/failed", body)
            .await
            .is_err()
    );
    assert!(!sb.file_exists("s", "/workspace/failed").await.unwrap());
    // a stream shorter than declared fails too
    let body = UploadBody {
        stream: Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from_static(
            b"abc",
        ))])),
        len: Some(10),
    };
    assert!(sb.file_upload("s", "/workspace/short", body).await.is_err());
    assert!(!sb.file_exists("s", "/workspace/short").await.unwrap());
    assert_eq!(
        out(&sh(&sb, "s", "ls -A /workspace").await),
        "new dir\nrel\n"
    );
    assert_eq!(
        sb.file_upload("s", "/workspace/rel", UploadBody::from_bytes("x"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        sb.file_download("s", "/workspace/nope")
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        sb.file_download("s", "/workspace/rel")
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::InvalidInput)
    );
}
