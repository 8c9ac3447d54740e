//! The output cap shared by every backend: at most [`MAX_OUTPUT`] bytes of a stream are kept,
//! and a cut is always marked in the text itself.

/// Most bytes of stdout (and, apart, of stderr) a command may return; the rest is cut.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// The text appended where output was cut at [`MAX_OUTPUT`].
pub fn truncation_marker(total_seen: u64) -> Vec<u8> {
    format!(
        "\n[sandbox-harness: output truncated at {MAX_OUTPUT} bytes; {total_seen} bytes were produced]\n"
    )
    .into_bytes()
}

/// A buffer that keeps the first [`MAX_OUTPUT`] bytes and counts the rest.
#[derive(Debug, Default, Clone)]
pub struct CappedBuf {
    buf: Vec<u8>,
    seen: u64,
    cap: Option<usize>,
}

impl CappedBuf {
    /// A buffer with the standard cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer with another cap (tests).
    pub fn with_cap(cap: usize) -> Self {
        CappedBuf {
            cap: Some(cap),
            ..Self::default()
        }
    }

    fn cap(&self) -> usize {
        self.cap.unwrap_or(MAX_OUTPUT)
    }

    /// Adds bytes, keeping only what fits.
    pub fn push(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        let room = self.cap().saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// True when bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.seen > self.buf.len() as u64
    }

    /// The kept bytes, with the marker appended when bytes were dropped.
    pub fn finish(self) -> (Vec<u8>, bool) {
        let truncated = self.truncated();
        let mut buf = self.buf;
        if truncated {
            buf.extend_from_slice(&truncation_marker(self.seen));
        }
        (buf, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_with_marker() {
        let mut b = CappedBuf::with_cap(4);
        b.push(b"ab");
        b.push(b"cdef");
        let (out, t) = b.finish();
        assert!(t);
        assert!(out.starts_with(b"abcd\n[sandbox-harness: output truncated"));
        assert!(String::from_utf8_lossy(&out).contains("6 bytes were produced"));
        let mut b = CappedBuf::with_cap(4);
        b.push(b"abcd");
        assert_eq!(b.finish(), (b"abcd".to_vec(), false));
    }
}
