//! Parsers of the replies the generic scripts print: background tables, interactive views and
//! statuses, directory listings, find results, the stateful wrapper's truncation note. Pure
//! functions over bytes, so the protocol code in the parent module only runs scripts and
//! maps errors.

use chrono::{DateTime, TimeZone, Utc};

use crate::protocol::{FileEntry, FileKind, ShellView};
use crate::transport::truncation_marker;

/// The last 2000 characters of a script's output (trimmed), for error messages.
pub(super) fn lossy_tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 2000 {
        let mut cut = s.len() - 2000;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        format!("...{}", &s[cut..])
    } else {
        s.to_string()
    }
}

/// The first position of `needle` in `hay` (none for an empty needle).
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The records of `BG_LIST`: NUL-separated (pid, running, started, session, command).
pub(super) fn parse_list(out: &[u8]) -> Vec<(u32, bool, i64, String, String)> {
    let fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
    let mut v = Vec::new();
    for rec in fields.chunks(5) {
        if rec.len() < 5 {
            break;
        }
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let Ok(pid) = s(rec[0]).trim().parse::<u32>() else {
            continue;
        };
        let running = rec[1] == b"1";
        let started = s(rec[2]).trim().parse::<i64>().unwrap_or(0);
        v.push((pid, running, started, s(rec[3]), s(rec[4])));
    }
    v
}

/// Seconds since the epoch as a time (the epoch itself when out of range).
pub(super) fn epoch(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The file kind of `stat`'s `%F` text.
pub(super) fn kind_of(type_text: &str) -> FileKind {
    match type_text {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Dir,
        "symbolic link" => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// A stateful command's stdout with the wrapper's `<marker>TRUNCATED <total>` note replaced
/// by the protocol's truncation marker; the flag says whether the note was there.
pub(super) fn stateful_stdout(mut stdout: Vec<u8>, marker: &str) -> (Vec<u8>, bool) {
    let sep = format!("{marker}TRUNCATED ");
    let Some(at) = find(&stdout, sep.as_bytes()) else {
        return (stdout, false);
    };
    let total: u64 = String::from_utf8_lossy(&stdout[at + sep.len()..])
        .split('\n')
        .next()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    stdout.truncate(at);
    stdout.extend_from_slice(&truncation_marker(total));
    (stdout, true)
}

/// The reply of `INTERACTIVE_VIEW`: a status line (`R`, `X` or `E<code>`), the command's
/// length, the command, then the output. `None` when it is not in that shape.
pub(super) fn shell_view(s: &[u8]) -> Option<ShellView> {
    let nl1 = s.iter().position(|&b| b == b'\n')?;
    let status = String::from_utf8_lossy(&s[..nl1]).into_owned();
    let rest = &s[nl1 + 1..];
    let nl2 = rest.iter().position(|&b| b == b'\n')?;
    let len: usize = String::from_utf8_lossy(&rest[..nl2]).trim().parse().ok()?;
    let rest = &rest[nl2 + 1..];
    let len = len.min(rest.len());
    let command = String::from_utf8_lossy(&rest[..len]).into_owned();
    let output = rest[len..].to_vec();
    let (running, exit_code) = match status.as_str() {
        "R" => (true, None),
        "X" => (false, None),
        e => (false, Some(e.trim_start_matches('E').trim().parse().ok()?)),
    };
    Some(ShellView {
        command,
        output,
        running,
        exit_code,
    })
}

/// What `INTERACTIVE_WAIT` reported.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WaitReply {
    /// Still running when the wait ran out.
    Running,
    /// Finished with this exit code.
    Exited(i32),
    /// Something else (the reply, trimmed).
    Unexpected(String),
}

/// Reads the reply of `INTERACTIVE_WAIT`.
pub(super) fn wait_reply(stdout: &[u8]) -> WaitReply {
    let text = String::from_utf8_lossy(stdout).trim().to_string();
    match text.as_str() {
        "R" => WaitReply::Running,
        // Gone without recording a status: it was killed by a signal from elsewhere.
        "X" => WaitReply::Exited(137),
        t => match t.trim_start_matches('E').parse() {
            Ok(code) => WaitReply::Exited(code),
            Err(_) => WaitReply::Unexpected(text),
        },
    }
}

/// The pids `BG_KILL` reports as killed, sorted.
pub(super) fn killed_pids(stdout: &[u8]) -> Vec<u32> {
    let mut killed: Vec<u32> = String::from_utf8_lossy(stdout)
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    killed.sort_unstable();
    killed
}

/// The entries of `FILE_LIST`: per entry a `kind/size/mtime` line, then the NUL-terminated
/// name. Malformed records are skipped; the result is sorted by name.
pub(super) fn file_entries(stdout: &[u8]) -> Vec<FileEntry> {
    let mut entries = Vec::new();
    let mut rest = stdout;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let meta = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            break;
        };
        let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
        rest = &rest[nul + 1..];
        let mut parts = meta.rsplitn(3, '/');
        let mtime = parts.next().and_then(|t| t.parse::<i64>().ok());
        let size = parts.next().and_then(|t| t.parse::<u64>().ok());
        let kind = parts.next().map(kind_of);
        if let (Some(mtime), Some(size), Some(kind)) = (mtime, size, kind) {
            entries.push(FileEntry {
                name,
                kind,
                size,
                mtime: epoch(mtime),
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// The NUL-separated paths `FILE_FIND` printed under `dir` whose path relative to `dir`
/// matches the glob, sorted.
pub(super) fn found_paths(stdout: &[u8], dir: &str, matcher: &globset::GlobMatcher) -> Vec<String> {
    let prefix = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    let mut found: Vec<String> = stdout
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .filter(|full| {
            full.strip_prefix(&prefix)
                .is_some_and(|rel| matcher.is_match(rel))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_records_parse() {
        let out = b"12\x001\x00100\x00main\x00sleep 5\x0013\x000\x00101\x00s2\x00echo a\nb\x00";
        let v = parse_list(out);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], (12, true, 100, "main".into(), "sleep 5".into()));
        assert_eq!(v[1].4, "echo a\nb");
    }

    #[test]
    fn views_waits_and_listings_parse() {
        let v = shell_view(b"E3\n4\nsh xout\n").unwrap();
        assert_eq!(
            (v.command.as_str(), v.running, v.exit_code),
            ("sh x", false, Some(3))
        );
        assert_eq!(v.output, b"out\n");
        assert!(shell_view(b"R\nnot a number\n").is_none());
        assert_eq!(wait_reply(b"E2\n"), WaitReply::Exited(2));
        assert_eq!(wait_reply(b"X"), WaitReply::Exited(137));
        assert_eq!(wait_reply(b"R\n"), WaitReply::Running);
        assert_eq!(wait_reply(b"??"), WaitReply::Unexpected("??".into()));
        assert_eq!(killed_pids(b"7 3 x\n"), vec![3, 7]);
        assert_eq!(kind_of("regular empty file"), FileKind::File);
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        let e = file_entries(b"directory/0/5\nb\0regular file/3/6\na\0bad\nc\0");
        let names: Vec<_> = e
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(names, [("a", FileKind::File, 3), ("b", FileKind::Dir, 0)]);
    }

    #[test]
    fn truncation_note_becomes_the_marker() {
        let (out, truncated) = stateful_stdout(b"abcMKTRUNCATED 99\n".to_vec(), "MK");
        assert!(truncated);
        assert!(out.starts_with(b"abc"));
        assert_eq!(&out[3..], &truncation_marker(99)[..]);
        assert_eq!(
            stateful_stdout(b"plain".to_vec(), "MK"),
            (b"plain".to_vec(), false)
        );
    }
}
