//! Keeps functions short enough to read: no function in `src/` or `crates/*/src` may span
//! more than [`MAX_LINES`] lines, except the ones named in [`EXCEPTIONS`].
//!
//! The scanner is deliberately small: it finds `fn` items, skips comments, string, raw-string
//! and char literals, and matches braces to find where each body ends.

use std::path::{Path, PathBuf};

/// The longest a function may be, counted from its `fn` line to its closing brace.
const MAX_LINES: usize = 150;

/// Functions allowed to be longer, as `path::name` relative to the package root, each with
/// the reason. Keep this list short and say why.
const EXCEPTIONS: &[(&str, &str)] = &[];

/// A function found by the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    name: String,
    /// 1-based line of the `fn` keyword.
    first: usize,
    /// 1-based line of the closing brace.
    last: usize,
}

impl Function {
    fn lines(&self) -> usize {
        self.last - self.first + 1
    }
}

/// Source with comments and the contents of string and char literals blanked out (newlines
/// kept), so that braces and keywords inside them do not count.
fn blank_literals(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if is_raw_string_start(b, i) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while b[j] == b'#' {
                    hashes += 1;
                    j += 1;
                }
                let body = j + 1;
                let mut end = body;
                while end < b.len() {
                    if b[end] == b'"' && b[end + 1..].iter().take(hashes).all(|&c| c == b'#') {
                        break;
                    }
                    end += 1;
                }
                let close = (end + 1 + hashes).min(b.len());
                blank(&mut out, body, end);
                i = close;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{1F600}', '{'); otherwise a lifetime.
                if b.get(i + 1) == Some(&b'\\') {
                    let end = b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| i + 2 + p);
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                } else if let Some(len) = std::str::from_utf8(&b[i + 1..])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .map(char::len_utf8)
                    .filter(|len| b.get(i + 1 + len) == Some(&b'\''))
                {
                    blank(&mut out, i + 1, i + 1 + len);
                    i += len + 2;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether a raw (byte) string literal starts at `i` (`r"`, `r#"`, `br"`...), and `r` is not
/// the end of an identifier.
fn is_raw_string_start(b: &[u8], i: usize) -> bool {
    let starts_token =
        i == 0 || !is_ident(b[i - 1]) || (b[i - 1] == b'b' && (i < 2 || !is_ident(b[i - 2])));
    if !starts_token {
        return false;
    }
    let mut j = i + 1;
    while j < b.len() && b[j] == b'#' {
        j += 1;
    }
    b.get(j) == Some(&b'"')
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every function with a body in `src`.
fn functions(src: &str) -> Vec<Function> {
    let b = blank_literals(src);
    let line_of = |pos: usize| b[..pos].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        let is_fn = &b[i..i + 2] == b"fn"
            && (i == 0 || !is_ident(b[i - 1]))
            && b[i + 2].is_ascii_whitespace();
        if !is_fn {
            i += 1;
            continue;
        }
        let name_start = (i + 2..b.len())
            .find(|&j| !b[j].is_ascii_whitespace())
            .unwrap_or(b.len());
        let name_end = (name_start..b.len())
            .find(|&j| !is_ident(b[j]))
            .unwrap_or(b.len());
        let name = String::from_utf8_lossy(&b[name_start..name_end]).into_owned();
        // The body opens at the first `{` outside parentheses/brackets; a `;` there first
        // means a declaration without a body.
        let mut depth = 0i32;
        let mut open = None;
        for (j, &c) in b.iter().enumerate().skip(name_end) {
            match c {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else {
            i = name_end;
            continue;
        };
        let mut braces = 0i32;
        let mut close = b.len() - 1;
        for (j, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => braces += 1,
                b'}' => {
                    braces -= 1;
                    if braces == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push(Function {
            name,
            first: line_of(i),
            last: line_of(close),
        });
        // Continue inside the body: nested functions are functions too.
        i = open + 1;
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_measures_bodies_and_ignores_braces_in_literals() {
    let src = r##"
fn short() {
    let s = "}}}";
    let c = '}';
    let r = r#"{ " }"#;
    // }
    /* { */
}
trait T { fn decl(&self) -> [u8; 4]; }
pub async fn long<'a>(x: &'a str) -> Option<()> where 'a: 'static {
    fn inner() {}

    None
}
"##;
    let got = functions(src);
    let summary: Vec<_> = got.iter().map(|f| (f.name.as_str(), f.lines())).collect();
    assert_eq!(summary, [("short", 7), ("long", 5), ("inner", 1)]);
}

#[test]
fn no_function_in_src_is_longer_than_the_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for krate in crates.flatten() {
            rust_files(&krate.path().join("src"), &mut files);
        }
    }
    files.sort();
    assert!(
        files.len() > 50,
        "the scanner found only {} files",
        files.len()
    );
    let mut too_long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let rel = file.strip_prefix(root).expect("under the package root");
        for f in functions(&text) {
            let key = format!("{}::{}", rel.display(), f.name);
            if f.lines() > MAX_LINES && !EXCEPTIONS.iter().any(|(name, _)| *name == key) {
                too_long.push(format!("{key} (line {}): {} lines", f.first, f.lines()));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_LINES} lines (split them by what they do):\n{}",
        too_long.join("\n")
    );
}
