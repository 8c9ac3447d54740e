//! Streaming helpers over file bytes: line selection for `file_read`, line splitting for
//! `file_search`, literal replacement for `file_replace`. All work chunk by chunk in bounded
//! memory.

use regex::bytes::Regex;

/// Selects 0-based lines `[start, end)` from a byte stream, capped at `cap` bytes.
#[derive(Debug)]
pub struct LineSelector {
    start: usize,
    end: Option<usize>,
    cap: usize,
    line: usize,
    /// The selected bytes so far.
    pub out: Vec<u8>,
    /// True once the cap cut selected bytes.
    pub truncated: bool,
    /// True once nothing more can be selected (past `end`, or cut at the cap).
    pub done: bool,
}

impl LineSelector {
    /// A selector of lines `[start, end)` keeping at most `cap` bytes.
    pub fn new(start: usize, end: Option<usize>, cap: usize) -> Self {
        let done = end.is_some_and(|e| e <= start);
        LineSelector {
            start,
            end,
            cap,
            line: 0,
            out: Vec::new(),
            truncated: false,
            done,
        }
    }

    /// Feeds the next chunk of the file.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() && !self.done {
            let nl = chunk[i..].iter().position(|&b| b == b'\n');
            let seg_end = nl.map_or(chunk.len(), |p| i + p + 1);
            if self.line >= self.start {
                let seg = &chunk[i..seg_end];
                let room = self.cap - self.out.len();
                if seg.len() > room {
                    self.out.extend_from_slice(&seg[..room]);
                    self.truncated = true;
                    self.done = true;
                    return;
                }
                self.out.extend_from_slice(seg);
            }
            if nl.is_some() {
                self.line += 1;
                if self.end.is_some_and(|e| self.line >= e) {
                    self.done = true;
                }
            }
            i = seg_end;
        }
    }
}

/// Why a line could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A single line is longer than the limit.
    #[error("line {line} is longer than {limit} bytes")]
    TooLong {
        /// 0-based line number.
        line: usize,
        /// The limit.
        limit: usize,
    },
}

/// Splits a byte stream into lines (without `\n` or `\r\n`), each at most `limit` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    line: usize,
    limit: usize,
}

impl LineSplitter {
    /// A splitter refusing lines longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            line: 0,
            limit,
        }
    }

    /// Feeds a chunk; calls `f(line_no, line)` for every completed line.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut f: impl FnMut(usize, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut i = 0;
        while i < chunk.len() {
            match chunk[i..].iter().position(|&b| b == b'\n') {
                Some(p) => {
                    let piece = &chunk[i..i + p];
                    if self.buf.is_empty() {
                        self.check(piece.len())?;
                        f(self.line, strip_cr(piece))?;
                    } else {
                        self.check(self.buf.len() + piece.len())?;
                        self.buf.extend_from_slice(piece);
                        let line = std::mem::take(&mut self.buf);
                        f(self.line, strip_cr(&line))?;
                    }
                    self.line += 1;
                    i += p + 1;
                }
                None => {
                    self.check(self.buf.len() + chunk.len() - i)?;
                    self.buf.extend_from_slice(&chunk[i..]);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ends the stream; a last line without `\n` is produced too.
    pub fn finish(
        &mut self,
        mut f: impl FnMut(usize, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            f(self.line, strip_cr(&line))?;
        }
        Ok(())
    }

    fn check(&self, len: usize) -> Result<(), String> {
        if len > self.limit {
            Err(LineError::TooLong {
                line: self.line,
                limit: self.limit,
            }
            .to_string())
        } else {
            Ok(())
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Replaces every literal occurrence of `old` with `new` in a stream, keeping only
/// `old.len() - 1` bytes between chunks.
#[derive(Debug)]
pub struct Replacer {
    finder: Regex,
    keep: usize,
    new: Vec<u8>,
    carry: Vec<u8>,
    /// Occurrences replaced so far.
    pub count: u64,
}

impl Replacer {
    /// A replacer of `old` (non-empty) by `new`.
    pub fn new(old: &[u8], new: &[u8]) -> Result<Self, String> {
        if old.is_empty() {
            return Err("the text to replace is empty".into());
        }
        let mut pat = String::with_capacity(old.len() * 4 + 8);
        pat.push_str("(?s-u)");
        for b in old {
            pat.push_str(&format!("\\x{b:02x}"));
        }
        let finder = regex::bytes::RegexBuilder::new(&pat)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| format!("the text to replace is too long to search for: {e}"))?;
        Ok(Replacer {
            finder,
            keep: old.len() - 1,
            new: new.to_vec(),
            carry: Vec::new(),
            count: 0,
        })
    }

    /// Feeds a chunk; appends the bytes that are final to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let mut i = 0;
        while let Some(m) = self.finder.find_at(&buf, i) {
            out.extend_from_slice(&buf[i..m.start()]);
            out.extend_from_slice(&self.new);
            self.count += 1;
            i = m.end();
        }
        let rem = &buf[i..];
        let keep = rem.len().min(self.keep);
        out.extend_from_slice(&rem[..rem.len() - keep]);
        self.carry = rem[rem.len() - keep..].to_vec();
    }

    /// Ends the stream; appends the held-back bytes.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.carry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn select(data: &[u8], chunk: usize, s: usize, e: Option<usize>, cap: usize) -> LineSelector {
        let mut sel = LineSelector::new(s, e, cap);
        for c in data.chunks(chunk.max(1)) {
            sel.feed(c);
        }
        sel
    }

    #[test]
    fn selects_line_ranges_and_caps() {
        let data = b"a\nbb\nccc\nd";
        assert_eq!(select(data, 3, 0, None, 100).out, data);
        assert_eq!(select(data, 3, 1, Some(3), 100).out, b"bb\nccc\n");
        assert_eq!(select(data, 1, 3, None, 100).out, b"d");
        assert_eq!(select(data, 1, 5, None, 100).out, b"");
        let s = select(data, 2, 0, None, 4);
        assert_eq!(s.out, b"a\nbb");
        assert!(s.truncated);
        let s = select(data, 2, 0, None, data.len());
        assert!(!s.truncated);
        assert!(select(data, 2, 0, Some(1), 100).done);
    }

    #[test]
    fn splits_lines_with_limits() {
        let mut sp = LineSplitter::new(4);
        let mut got = Vec::new();
        sp.feed(b"ab\r\ncd", |n, l| {
            got.push((n, l.to_vec()));
            Ok(())
        })
        .unwrap();
        sp.feed(b"e\nf", |n, l| {
            got.push((n, l.to_vec()));
            Ok(())
        })
        .unwrap();
        sp.finish(|n, l| {
            got.push((n, l.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (0, b"ab".to_vec()),
                (1, b"cde".to_vec()),
                (2, b"f".to_vec())
            ]
        );
        assert!(LineSplitter::new(2).feed(b"abc", |_, _| Ok(())).is_err());
    }

    fn replace_all(data: &[u8], old: &[u8], new: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut r = Replacer::new(old, new).unwrap();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (out, r.count)
    }

    #[test]
    fn replaces_across_chunk_boundaries() {
        let (out, n) = replace_all(b"xxabcxxabcab", b"abc", b"\0Z", 2);
        assert_eq!(out, b"xx\0Zxx\0Zab");
        assert_eq!(n, 2);
        let (out, n) = replace_all(b"aaaa", b"aa", b"b", 1);
        assert_eq!((out.as_slice(), n), (&b"bb"[..], 2));
        assert!(Replacer::new(b"", b"x").is_err());
        let (out, _) = replace_all(&[0xff, 0xfe, 0x00, 0xff], &[0xfe, 0x00], b".*", 1);
        assert_eq!(out, [0xff, b'.', b'*', 0xff]);
    }

    proptest! {
        #[test]
        fn replace_matches_naive(data in proptest::collection::vec(0u8..4, 0..200),
                                 old in proptest::collection::vec(0u8..4, 1..4),
                                 new in proptest::collection::vec(0u8..4, 0..4),
                                 chunk in 1usize..17) {
            let (out, n) = replace_all(&data, &old, &new, chunk);
            // naive left-to-right non-overlapping replacement
            let mut exp = Vec::new();
            let mut cnt = 0u64;
            let mut i = 0;
            while i < data.len() {
                if data[i..].starts_with(&old) { exp.extend_from_slice(&new); i += old.len(); cnt += 1; }
                else { exp.push(data[i]); i += 1; }
            }
            prop_assert_eq!(out, exp);
            prop_assert_eq!(n, cnt);
        }
    }
}
