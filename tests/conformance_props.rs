//! Differential property tests: the same operations on every available backend give the same
//! observable results, and each result matches a model computed here in Rust.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sandbox_harness::conformance::{SandboxGuard, default_registry};
use sandbox_harness::protocol::{ReadOptions, Sandbox, StatefulExec, WriteOptions};

/// The backends these tests run on: Docker, and Cloud Run on the embedded emulator.
const BACKENDS: &[&str] = &["docker", "cloudrun"];

/// One sandbox per available backend, destroyed at the end even when a property fails.
struct Fleet {
    rt: tokio::runtime::Runtime,
    guards: Vec<(String, SandboxGuard)>,
}

impl Fleet {
    fn new() -> Fleet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let guards = rt.block_on(async {
            let reg = default_registry();
            let mut out = Vec::new();
            for name in BACKENDS {
                let entry = reg.select(name).unwrap().remove(0);
                let backend = (entry.factory)()
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let g = SandboxGuard::new(backend.create().await.expect("create"));
                g.sandbox().ensure_ready().await.expect("ready");
                out.push((name.to_string(), g));
            }
            out
        });
        Fleet { rt, guards }
    }

    /// Runs `op` on every backend; results must agree, and the first must satisfy `model`.
    fn check<T, F, Fut>(
        &self,
        op: F,
        model: impl Fn(&T) -> Result<(), String>,
    ) -> Result<(), TestCaseError>
    where
        T: PartialEq + std::fmt::Debug,
        F: Fn(Arc<dyn Sandbox>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let results: Vec<(String, T)> = self.rt.block_on(async {
            let mut v = Vec::new();
            for (name, g) in &self.guards {
                v.push((name.clone(), op(g.sandbox()).await));
            }
            v
        });
        for w in results.windows(2) {
            prop_assert_eq!(&w[0].1, &w[1].1, "{} and {} differ", w[0].0, w[1].0);
        }
        model(&results[0].1).map_err(TestCaseError::fail)
    }

    fn finish(self, result: Result<(), proptest::test_runner::TestError<impl std::fmt::Debug>>) {
        let Fleet { rt, guards } = self;
        rt.block_on(async {
            for (_, g) in guards {
                let _ = g.destroy().await;
            }
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 20,
        ..Config::default()
    })
}

fn lines_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..12,
        ),
        0..8,
    )
}

/// The model of file_read: 0-based lines with their endings, end exclusive, then max_length.
fn model_read(
    content: &[u8],
    start: Option<usize>,
    end: Option<usize>,
    max: Option<usize>,
) -> (Vec<u8>, bool) {
    let mut lines: Vec<&[u8]> = content.split_inclusive(|b| *b == b'\n').collect();
    let s = start.unwrap_or(0).min(lines.len());
    let e = end.unwrap_or(lines.len()).min(lines.len()).max(s);
    lines = lines[s..e].to_vec();
    let mut out = lines.concat();
    let truncated = max.is_some_and(|m| out.len() > m);
    if let Some(m) = max {
        out.truncate(m);
    }
    (out, truncated)
}

#[test]
fn file_read_line_ranges_match_the_model() {
    let fleet = Fleet::new();
    let strat = (
        lines_strategy(),
        any::<bool>(),
        proptest::option::of(0usize..10),
        proptest::option::of(0usize..10),
        proptest::option::of(0usize..40),
    );
    let res = runner(10).run(&strat, |(lines, final_nl, start, end, max)| {
        let mut content = lines.join(&b'\n');
        if final_nl && !lines.is_empty() {
            content.push(b'\n');
        }
        let c2 = content.clone();
        fleet.check(
            move |sb| {
                let content = c2.clone();
                async move {
                    sb.file_write("p", "/workspace/props/read.txt", &content, WriteOptions::default()).await.map_err(|e| e.kind())?;
                    let opts = ReadOptions { start_line: start, end_line: end, max_length: max };
                    sb.file_read("p", "/workspace/props/read.txt", opts).await.map(|r| (r.content, r.truncated)).map_err(|e| e.kind())
                }
            },
            |got| match got {
                Ok(v) if *v == model_read(&content, start, end, max) => Ok(()),
                other => Err(format!("file_read {start:?}..{end:?} max {max:?} of {content:?}: got {other:?}, model {:?}", model_read(&content, start, end, max))),
            },
        )
    });
    fleet.finish(res);
}

#[test]
fn bytes_round_trip_under_awkward_paths() {
    let fleet = Fleet::new();
    let name =
        "[a-zA-Z0-9 _.'\"$()ü✓-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..");
    let strat = (name, prop::collection::vec(any::<u8>(), 0..300));
    let res = runner(10).run(&strat, |(name, data)| {
        let path = format!("/workspace/props/paths/{name}");
        let (p2, d2) = (path.clone(), data.clone());
        fleet.check(
            move |sb| {
                let (path, data) = (p2.clone(), d2.clone());
                async move {
                    sb.file_write("p", &path, &data, WriteOptions::default())
                        .await
                        .map_err(|e| e.kind())?;
                    let exists = sb.file_exists("p", &path).await.map_err(|e| e.kind())?;
                    let back = sb
                        .file_read("p", &path, ReadOptions::default())
                        .await
                        .map_err(|e| e.kind())?;
                    sb.file_delete("p", &path).await.map_err(|e| e.kind())?;
                    Ok::<_, sandbox_harness::protocol::ErrorKind>((exists, back.content))
                }
            },
            |got| match got {
                Ok((true, back)) if *back == data => Ok(()),
                other => Err(format!("{path:?}: wrote {data:?}, got {other:?}")),
            },
        )
    });
    fleet.finish(res);
}

#[test]
fn env_values_persist_byte_exact() {
    let fleet = Fleet::new();
    let strat = "[^\u{0}]{0,40}";
    let res = runner(10).run(&strat, |value: String| {
        let v2 = value.clone();
        fleet.check(
            move |sb| {
                let value = v2.clone();
                async move {
                    // The value travels as file bytes, never inside a command string.
                    sb.file_write(
                        "e",
                        "/workspace/props/env.txt",
                        value.as_bytes(),
                        WriteOptions::default(),
                    )
                    .await
                    .map_err(|e| e.kind())?;
                    let t = Duration::from_secs(30);
                    let set = "V=$(cat /workspace/props/env.txt; echo x); V=${V%x}; export V";
                    sb.exec_stateful(StatefulExec::new("e", set, t))
                        .await
                        .map_err(|e| e.kind())?;
                    let r = sb
                        .exec_stateful(StatefulExec::new("e", "printf '%s' \"$V\"", t))
                        .await
                        .map_err(|e| e.kind())?;
                    Ok::<_, sandbox_harness::protocol::ErrorKind>((r.exit_code, r.stdout))
                }
            },
            |got| match got {
                Ok((0, out)) if out == value.as_bytes() => Ok(()),
                other => Err(format!("env value {value:?}: got {other:?}")),
            },
        )
    });
    fleet.finish(res);
}

#[test]
fn literal_replace_and_regex_search_match_the_model() {
    let fleet = Fleet::new();
    let regexes = prop::sample::select(vec![
        "a+b", "^x", "[0-9]{2}", "(ab|cd)$", "a.c", "\\.", "^$",
    ]);
    let strat = (
        prop::collection::vec("[abcdx0-9.$\\\\()]{0,10}", 0..6),
        "[ab.$\\\\]{1,3}",
        "[xy$\\\\0-9]{0,3}",
        regexes,
    );
    let res = runner(10).run(&strat, |(lines, old, new, re)| {
        let content: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
        let (c2, o2, n2) = (content.clone(), old.clone(), new.clone());
        fleet.check(
            move |sb| {
                let (content, old, new) = (c2.clone(), o2.clone(), n2.clone());
                async move {
                    let p = "/workspace/props/rep.txt";
                    sb.file_write("r", p, &content, WriteOptions::default()).await.map_err(|e| e.kind())?;
                    let found = sb.file_search("r", p, re).await.map_err(|e| e.kind())?;
                    let found: Vec<(usize, Vec<u8>)> = found.into_iter().map(|m| (m.line, m.text)).collect();
                    let n = sb.file_replace("r", p, old.as_bytes(), new.as_bytes()).await.map_err(|e| e.kind())?;
                    let after = sb.file_read("r", p, ReadOptions::default()).await.map_err(|e| e.kind())?.content;
                    Ok::<_, sandbox_harness::protocol::ErrorKind>((found, n, after))
                }
            },
            |got| {
                let rx = regex::bytes::Regex::new(re).unwrap();
                let want_found: Vec<(usize, Vec<u8>)> = lines.iter().enumerate().filter(|(_, l)| rx.is_match(l.as_bytes())).map(|(i, l)| (i, l.as_bytes().to_vec())).collect();
                let text = String::from_utf8(content.clone()).unwrap();
                let want_n = text.matches(old.as_str()).count() as u64;
                let want_after = text.replace(old.as_str(), &new).into_bytes();
                match got {
                    Ok((f, n, a)) if *f == want_found && *n == want_n && *a == want_after => Ok(()),
                    other => Err(format!("search {re:?} / replace {old:?}->{new:?} in {text:?}: got {other:?}, model {:?}", (want_found, want_n, String::from_utf8_lossy(&want_after)))),
                }
            },
        )
    });
    fleet.finish(res);
}
