//! One command-line dialect for every subcommand: walks `--help` of each and checks the
//! duration and output flags, the exit codes (1 a failed check, 2 a usage error), the mode of
//! the reports, and that messages send users only to subcommands that exist.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandbox-harness"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the harness runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The subcommands `--help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let help = stdout(&harness(&["--help"]));
    let section = help
        .split("Commands:")
        .nth(1)
        .expect("--help lists commands");
    section
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// One long flag of a `--help` page: its name, its value name, and its help line.
struct Flag {
    name: String,
    value: Option<String>,
    line: String,
}

fn flags(sub: &str) -> Vec<Flag> {
    let o = harness(&[sub, "--help"]);
    assert!(o.status.success(), "{sub} --help failed");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(at) = l.find("--") else { continue };
        if !l.trim_start().starts_with('-') {
            continue;
        }
        let rest = &l[at + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let value = rest
            .split_once('<')
            .and_then(|(_, v)| v.split_once('>'))
            .map(|(v, _)| v.to_string());
        // The help text and its `[default: ...]` may wrap onto the next lines.
        let mut line = l.to_string();
        for next in lines.iter().skip(i + 1) {
            if next.trim_start().starts_with('-') || next.trim().is_empty() {
                break;
            }
            line.push(' ');
            line.push_str(next.trim());
        }
        out.push(Flag { name, value, line });
    }
    out
}

#[test]
fn every_subcommand_speaks_one_dialect() {
    let subs = subcommands();
    assert!(subs.len() >= 12, "{subs:?}");
    let writes_reports = ["run", "bench", "gate", "conform", "health", "preflight"];
    for sub in &subs {
        let fl = flags(sub);
        assert!(
            fl.iter().any(|f| f.name == "help"),
            "{sub}: no flags parsed"
        );
        for f in &fl {
            let id = format!("{sub} --{}", f.name);
            for unit in ["-ms", "-secs", "-seconds", "-minutes", "-hours"] {
                assert!(
                    !f.name.ends_with(unit),
                    "{id}: the unit belongs in the value"
                );
            }
            let is_duration = ["timeout", "older-than", "interval"]
                .iter()
                .any(|w| f.name.contains(w));
            if is_duration {
                assert_eq!(f.value.as_deref(), Some("DURATION"), "{id}: {}", f.line);
            }
            if f.value.as_deref() == Some("DURATION")
                && let Some(d) = f.line.split("[default: ").nth(1)
            {
                let d = d.trim_end_matches(']');
                assert!(
                    d.ends_with(['s', 'm', 'h', 'd']),
                    "{id}: default {d} has no unit"
                );
            }
            assert_ne!(f.name, "json", "{id}: reports go into --out DIR");
            for other in ["no-large", "skip-large", "no-heavy"] {
                assert_ne!(f.name, other, "{id}: the word is --skip-heavy");
            }
            if f.name == "out" {
                assert_eq!(f.value.as_deref(), Some("DIR"), "{id}");
            }
        }
        if writes_reports.contains(&sub.as_str()) {
            assert!(fl.iter().any(|f| f.name == "out"), "{sub} has no --out");
        }
    }
}

#[test]
fn usage_errors_exit_2_and_failed_checks_exit_1() {
    for args in [
        &["conform", "--backend", "k8s"][..],
        &["shell", "--backend", "docker,cloudrun"],
        &["conform", "--case-timeout", "30"],
        &["gc", "--older-than", "2x"],
        &["emulator", "--latency", "50-10"],
    ] {
        let o = harness(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
    }
    let unknown = harness(&["conform", "--backend", "k8s"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("unknown backend \"k8s\""), "{err}");

    // Nothing listens on port 1 of the loopback: every probe fails, a failed check (1).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports");
    let o = harness(&[
        "health",
        "--url",
        "http://127.0.0.1:1",
        "--iterations",
        "1",
        "--timeout",
        "500ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    for name in ["health.json", "health.md"] {
        let mode = std::fs::metadata(out.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{name} is {mode:o}");
    }
}

/// Every `` `sandbox-harness WORD `` a message or doc names is a subcommand.
#[test]
fn messages_name_subcommands_that_exist() {
    let subs = subcommands();
    let mut named = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("`sandbox-harness ").skip(1) {
                    let word: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                        .collect();
                    named.push((path.display().to_string(), word));
                }
            }
        }
    }
    assert!(!named.is_empty());
    for (file, word) in &named {
        assert!(subs.contains(word), "{file} names `sandbox-harness {word}`");
    }
}
