//! Text helpers of the suite: byte escaping, escape decoding, quote-aware argument splitting
//! and a readable line diff for failure messages.

use std::fmt::Write as _;

/// Shows bytes as readable text: printable ASCII and valid UTF-8 as is, `\n` `\t` `\r` `\0`
/// `\\` escaped, every other byte as `\xHH`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                escape_str_into(s, &mut out);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                escape_str_into(std::str::from_utf8(good).unwrap_or_default(), &mut out);
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for b in &bad[..n] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn escape_str_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// The result of decoding one escaped line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The line ended with `\c`: no newline follows it.
    pub no_newline: bool,
}

/// Decodes `\\ \n \t \r \0 \xHH \s`(space) and a final `\c` (suppress the newline).
pub fn unescape(text: &str) -> Result<Decoded, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut no_newline = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if no_newline {
            return Err(format!("`\\c` must end the line (column {})", i + 1));
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => bytes.push(b'\\'),
            Some((_, 'n')) => bytes.push(b'\n'),
            Some((_, 't')) => bytes.push(b'\t'),
            Some((_, 'r')) => bytes.push(b'\r'),
            Some((_, '0')) => bytes.push(0),
            Some((_, 's')) => bytes.push(b' '),
            Some((_, 'c')) => no_newline = true,
            Some((_, 'x')) => {
                let hex: String = (0..2)
                    .filter_map(|_| chars.next().map(|(_, c)| c))
                    .collect();
                let b = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| format!("bad `\\x` escape at column {}", i + 1))?;
                bytes.push(b);
            }
            Some((_, other)) => {
                return Err(format!("unknown escape `\\{other}` at column {}", i + 1));
            }
            None => return Err(format!("a lone `\\` ends the line at column {}", i + 1)),
        }
    }
    Ok(Decoded { bytes, no_newline })
}

/// Why a line could not be split into arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A quote was opened and never closed.
    #[error("unterminated {0} quote")]
    Unterminated(char),
    /// A backslash ended the line.
    #[error("a trailing backslash escapes nothing")]
    TrailingBackslash,
}

/// Splits a line into arguments the way a POSIX shell would, without running one: `'...'` is
/// literal, `"..."` allows `\"` and `\\`, a backslash outside quotes escapes the next char.
pub fn split_args(line: &str) -> Result<Vec<String>, SplitError> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(SplitError::Unterminated('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(SplitError::Unterminated('"')),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(SplitError::Unterminated('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    Ok(args)
}

/// A readable comparison of two byte strings: both escaped on one line each when short and
/// single-line, else a unified-style line diff (`-` expected, `+` actual).
pub fn describe_mismatch(expected: &[u8], actual: &[u8]) -> String {
    let multi = expected.iter().filter(|&&b| b == b'\n').count() > 1
        || actual.iter().filter(|&&b| b == b'\n').count() > 1;
    let mut out = format!(
        "expected: \"{}\"\n  actual: \"{}\"",
        clip(&escape_bytes(expected)),
        clip(&escape_bytes(actual))
    );
    if multi {
        out.push_str("\n    diff (-expected +actual):\n");
        out.push_str(&line_diff(expected, actual));
    }
    out
}

fn clip(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} more bytes of escaped text)",
        &s[..end],
        s.len() - end
    )
}

/// A line diff (LCS based) of two texts, every line escaped; at most 200 lines are shown.
pub fn line_diff(expected: &[u8], actual: &[u8]) -> String {
    let a: Vec<&[u8]> = split_lines(expected);
    let b: Vec<&[u8]> = split_lines(actual);
    // Bound the quadratic table; beyond it, show a plain listing.
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return format!(
            "      (texts too long for a diff: {} vs {} lines)\n",
            a.len(),
            b.len()
        );
    }
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j, mut shown) = (0, 0, 0);
    let mut push = |out: &mut String, tag: char, line: &[u8]| {
        shown += 1;
        if shown <= 200 {
            let _ = writeln!(out, "      {tag} {}", escape_bytes(line));
        }
    };
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            push(&mut out, ' ', a[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            push(&mut out, '+', b[j]);
            j += 1;
        } else {
            push(&mut out, '-', a[i]);
            i += 1;
        }
    }
    if shown > 200 {
        let _ = writeln!(out, "      ... {} more diff lines", shown - 200);
    }
    out
}

/// Lines with their `\n` kept, so a missing final newline shows in the diff.
fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            lines.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_binary_and_keeps_unicode() {
        assert_eq!(escape_bytes(b"a\0b\xff\n"), "a\\0b\\xff\\n");
        assert_eq!(escape_bytes("é\\".as_bytes()), "é\\\\");
        assert_eq!(escape_bytes(b"\x1b"), "\\x1b");
    }

    #[test]
    fn unescape_round_trips_escape() {
        let raw = b"x\0\xff\xfe y\\\t\r\n\x7f".to_vec();
        let d = unescape(&escape_bytes(&raw)).unwrap();
        assert_eq!(d.bytes, raw);
        assert!(!d.no_newline);
        let d = unescape("end\\c").unwrap();
        assert_eq!((d.bytes.as_slice(), d.no_newline), (&b"end"[..], true));
        assert!(unescape("a\\cb").is_err());
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("x\\").is_err());
    }

    #[test]
    fn split_args_is_quote_aware() {
        assert_eq!(
            split_args(r#"a 'b c' "d \"e\"" f\ g '' x"#).unwrap(),
            vec!["a", "b c", "d \"e\"", "f g", "", "x"]
        );
        assert_eq!(split_args("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_args("'a"), Err(SplitError::Unterminated('\'')));
        assert_eq!(split_args("\"a"), Err(SplitError::Unterminated('"')));
        assert_eq!(split_args("a\\"), Err(SplitError::TrailingBackslash));
        assert_eq!(split_args("-n '$HOME'").unwrap(), vec!["-n", "$HOME"]);
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = describe_mismatch(b"a\nb\nc\n", b"a\nB\nc\n");
        assert!(d.contains("- b\\n"), "{d}");
        assert!(d.contains("+ B\\n"), "{d}");
        assert!(d.contains("  a\\n"), "{d}");
        let short = describe_mismatch(b"x", b"y\0");
        assert!(short.contains("\"x\"") && short.contains("\"y\\0\"") && !short.contains("diff"));
    }
}
