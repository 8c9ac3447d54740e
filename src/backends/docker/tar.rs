//! Just enough tar for one file at a time: a header for a streamed upload, and an incremental
//! reader that yields the bytes of the first regular file in a tar stream.

/// Tar block size.
pub const BLOCK: usize = 512;

/// A ustar header for a regular file `name` (at most 100 bytes) of `size` bytes.
pub fn file_header(name: &str, size: u64, mode: u32, mtime: u64) -> Result<[u8; BLOCK], String> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| format!("tar name {name:?}: {e}"))?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// Zero padding after `size` bytes of content, up to the next block.
pub fn padding(size: u64) -> usize {
    let r = (size % BLOCK as u64) as usize;
    if r == 0 { 0 } else { BLOCK - r }
}

/// Largest pax extended header accepted (they are small in practice).
const MAX_PAX: u64 = 1 << 20;

#[derive(Debug)]
enum State {
    Header,
    /// Skipping a non-file entry (plus padding).
    Skip(u64),
    /// Collecting a pax extended header of this size (plus padding).
    Pax(u64, u64),
    /// Yielding file content: bytes left.
    Data(u64),
    Done,
}

/// Incremental tar reader: feed chunks, get back the content bytes of the first regular file.
#[derive(Debug)]
pub struct FileExtractor {
    state: State,
    hdr: Vec<u8>,
    pax: Vec<u8>,
    pax_size: Option<u64>,
    /// Total content bytes announced by the file's header.
    pub size: Option<u64>,
}

impl Default for FileExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FileExtractor {
    /// A reader at the start of a tar stream.
    pub fn new() -> Self {
        FileExtractor {
            state: State::Header,
            hdr: Vec::with_capacity(BLOCK),
            pax: Vec::new(),
            pax_size: None,
            size: None,
        }
    }

    /// True once the whole file was produced.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds a chunk; calls `out` with file content slices.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), String> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header => {
                    let take = (BLOCK - self.hdr.len()).min(chunk.len());
                    self.hdr.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.hdr.len() == BLOCK {
                        self.on_header()?;
                        self.hdr.clear();
                        if let State::Data(0) = self.state {
                            self.state = State::Done;
                        }
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(chunk.len() as u64) as usize;
                    *left -= take as u64;
                    chunk = &chunk[take..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax(left, size) => {
                    let take = (*left).min(chunk.len() as u64) as usize;
                    let in_body = (self.pax.len() as u64) < *size;
                    if in_body {
                        let body_take = take.min((*size - self.pax.len() as u64) as usize);
                        self.pax.extend_from_slice(&chunk[..body_take]);
                    }
                    *left -= take as u64;
                    chunk = &chunk[take..];
                    if *left == 0 {
                        self.pax_size = parse_pax_size(&self.pax);
                        self.pax.clear();
                        self.state = State::Header;
                    }
                }
                State::Data(left) => {
                    let take = (*left).min(chunk.len() as u64) as usize;
                    out(&chunk[..take]);
                    *left -= take as u64;
                    chunk = &chunk[take..];
                    if *left == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> Result<(), String> {
        if self.hdr.iter().all(|&b| b == 0) {
            return Err("the archive ended before a file entry".into());
        }
        let size = parse_size(&self.hdr[124..136])?;
        let padded = size + padding(size) as u64;
        match self.hdr[156] {
            b'0' | 0 | b'7' => {
                let size = self.pax_size.take().unwrap_or(size);
                self.size = Some(size);
                self.state = State::Data(size);
            }
            b'x' => {
                if size > MAX_PAX {
                    return Err(format!("pax header of {size} bytes is too large"));
                }
                self.state = if padded == 0 {
                    State::Header
                } else {
                    State::Pax(padded, size)
                };
            }
            b'g' | b'L' | b'K' => {
                self.state = if padded == 0 {
                    State::Header
                } else {
                    State::Skip(padded)
                };
            }
            b'5' => return Err("the path is a directory".into()),
            t => {
                return Err(format!(
                    "the path is not a regular file (tar type {:?})",
                    t as char
                ));
            }
        }
        Ok(())
    }
}

fn parse_size(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        // base-256
        let mut v: u64 = 0;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or("tar size overflows")?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("bad tar size field {text:?}"))
}

fn parse_pax_size(pax: &[u8]) -> Option<u64> {
    let mut rest = pax;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len == 0 || len > rest.len() {
            return found;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"size=") {
            found = std::str::from_utf8(v).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(archive: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut x = FileExtractor::new();
        let mut out = Vec::new();
        for c in archive.chunks(chunk) {
            x.feed(c, &mut |b| out.extend_from_slice(b))?;
        }
        assert!(x.done());
        Ok(out)
    }

    #[test]
    fn extracts_file_after_long_name_and_pax_headers() {
        let content: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/f", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, content.as_slice()).unwrap();
        let gnu = b.into_inner().unwrap();
        for chunk in [1, 7, 512, 4096] {
            assert_eq!(extract(&gnu, chunk).unwrap(), content);
        }
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_path("x").unwrap();
        h.set_cksum();
        b.append(&h, content.as_slice()).unwrap();
        assert_eq!(extract(&b.into_inner().unwrap(), 100).unwrap(), content);
    }

    #[test]
    fn header_round_trips_through_tar_crate() {
        let data = b"hello\0world";
        let mut archive = file_header("t.tmp", data.len() as u64, 0o644, 0)
            .unwrap()
            .to_vec();
        archive.extend_from_slice(data);
        archive.extend(std::iter::repeat_n(0, padding(data.len() as u64) + 1024));
        let mut a = tar::Archive::new(archive.as_slice());
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("t.tmp"));
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(extract(&archive, 3).unwrap(), data);
    }

    #[test]
    fn directory_is_rejected() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "d/", std::io::empty()).unwrap();
        let mut x = FileExtractor::new();
        assert!(x.feed(&b.into_inner().unwrap(), &mut |_| {}).is_err());
    }
}
