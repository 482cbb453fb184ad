//! Reading an initramfs the way the kernel unpacks it: a sequence of cpio "newc" (070701) / "crc" (070702)
//! archives, raw or compressed (gzip, zstd, xz, lzma, lz4 legacy; bzip2 is recognised but not decoded),
//! separated by zero padding. Everything is streamed: file bodies are skipped, only names are kept.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::io::{self, BufRead, Read, Write};

/// One member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Lz4,
    Bzip2,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lz4 => "lz4",
            Compression::Bzip2 => "bzip2",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Byte offset of the segment in the file.
    pub offset: u64,
    pub compression: Compression,
}

#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub segments: Vec<Segment>,
    pub entries: Vec<Entry>,
    /// Set when the rest of the file could not be read (e.g. a bzip2 segment): what was listed is partial.
    pub incomplete: Option<String>,
}

/// Detect a segment's compression from its first bytes (`None` when unknown).
pub fn detect(magic: &[u8]) -> Option<Compression> {
    let m = |p: &[u8]| magic.len() >= p.len() && &magic[..p.len()] == p;
    if m(b"070701") || m(b"070702") {
        Some(Compression::None)
    } else if m(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if m(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if m(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if m(&[0x5d, 0, 0]) {
        Some(Compression::Lzma)
    } else if m(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
        Some(Compression::Lz4)
    } else if m(b"BZh") {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// lz4 legacy frames use 8 MiB blocks.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const HEADER_LEN: usize = 110;
const MAX_NAME: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between archives / before a header: zero bytes are padding.
    Start,
    Header,
    Name,
    /// Skipping name padding, body and body padding.
    Skip,
}

/// A push parser for newc/crc cpio streams: feed it bytes in chunks of any size.
#[derive(Debug)]
pub struct Parser {
    state: State,
    buf: Vec<u8>,
    namesize: usize,
    mode: u32,
    filesize: u64,
    skip: u64,
    trailer: bool,
    /// Position in the current stream (for 4-byte alignment).
    pos: u64,
    pub entries: Vec<Entry>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser {
            state: State::Start,
            buf: Vec::with_capacity(HEADER_LEN),
            namesize: 0,
            mode: 0,
            filesize: 0,
            skip: 0,
            trailer: false,
            pos: 0,
            entries: Vec::new(),
        }
    }

    /// Start a new stream whose first byte is at `pos` (alignment is relative to the stream's start).
    pub fn begin_stream(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// True between archives (nothing half-read).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Start
    }

    /// Consume `data`. With `stop_at_trailer`, returns as soon as an archive's trailer (and its padding) has
    /// been consumed, with the number of bytes used and `true`; otherwise consumes everything.
    pub fn feed(&mut self, data: &[u8], stop_at_trailer: bool) -> Result<(usize, bool)> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Start => {
                    if data[i] == 0 {
                        i += 1;
                        self.pos += 1;
                        continue;
                    }
                    if self.pos % 4 != 0 {
                        bail!("cpio header at unaligned offset {}", self.pos);
                    }
                    self.buf.clear();
                    self.state = State::Header;
                }
                State::Header => {
                    let take = (HEADER_LEN - self.buf.len()).min(data.len() - i);
                    self.buf.extend_from_slice(&data[i..i + take]);
                    i += take;
                    self.pos += take as u64;
                    if self.buf.len() == HEADER_LEN {
                        self.parse_header()?;
                        self.buf.clear();
                        self.state = State::Name;
                    }
                }
                State::Name => {
                    let take = (self.namesize - self.buf.len()).min(data.len() - i);
                    self.buf.extend_from_slice(&data[i..i + take]);
                    i += take;
                    self.pos += take as u64;
                    if self.buf.len() == self.namesize {
                        let raw = &self.buf[..self.namesize - 1];
                        let name = String::from_utf8_lossy(raw).into_owned();
                        let name_pad = (4 - self.pos % 4) % 4;
                        let body_pad = (4 - self.filesize % 4) % 4;
                        self.skip = name_pad + self.filesize + body_pad;
                        self.trailer = name == "TRAILER!!!";
                        if !self.trailer {
                            self.entries.push(Entry {
                                name,
                                mode: self.mode,
                                size: self.filesize,
                            });
                        }
                        self.state = State::Skip;
                        if self.skip == 0 && self.finish_member(stop_at_trailer) {
                            return Ok((i, true));
                        }
                    }
                }
                State::Skip => {
                    let take = self.skip.min((data.len() - i) as u64);
                    i += take as usize;
                    self.pos += take;
                    self.skip -= take;
                    if self.skip == 0 && self.finish_member(stop_at_trailer) {
                        return Ok((i, true));
                    }
                }
            }
        }
        // A member with nothing left to skip ends here too.
        if self.state == State::Skip && self.skip == 0 && self.finish_member(stop_at_trailer) {
            return Ok((i, true));
        }
        Ok((i, false))
    }

    /// Back to `Start`; true when that ended an archive and the caller wants to stop there.
    fn finish_member(&mut self, stop_at_trailer: bool) -> bool {
        self.state = State::Start;
        let t = self.trailer;
        self.trailer = false;
        t && stop_at_trailer
    }

    fn parse_header(&mut self) -> Result<()> {
        let h = &self.buf;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            bail!(
                "not a cpio newc header at offset {} (magic {:?})",
                self.pos - HEADER_LEN as u64,
                String::from_utf8_lossy(&h[..6])
            );
        }
        let field = |n: usize| -> Result<u32> {
            let s = &h[6 + n * 8..6 + n * 8 + 8];
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    anyhow!(
                        "bad hex field {:?} in cpio header",
                        String::from_utf8_lossy(s)
                    )
                })
        };
        self.mode = field(1)?;
        self.filesize = field(6)? as u64;
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            bail!("cpio header with impossible name size {namesize}");
        }
        self.namesize = namesize;
        Ok(())
    }
}

/// A `Write` sink that feeds a parser (for decoders that push their output).
struct Sink<'a>(&'a mut Parser);

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .feed(buf, false)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:#}")))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A buffered reader that can guarantee `n` bytes of lookahead and counts what was consumed.
struct Peek<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    consumed: u64,
}

impl<R: Read> Peek<R> {
    fn new(inner: R) -> Self {
        Peek {
            inner,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            eof: false,
            consumed: 0,
        }
    }

    /// At least `n` bytes, or fewer at end of input.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.start < n && !self.eof {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            while self.end < n {
                let r = self.inner.read(&mut self.buf[self.end..])?;
                if r == 0 {
                    self.eof = true;
                    break;
                }
                self.end += r;
            }
        }
        Ok(&self.buf[self.start..self.end])
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Peek<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = 0;
            let r = self.inner.read(&mut self.buf)?;
            if r == 0 {
                self.eof = true;
            }
            self.end = r;
        }
        Ok(&self.buf[self.start..self.end])
    }
    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.consumed += n as u64;
    }
}

/// List every member of an initramfs image read from `r`.
pub fn list<R: Read>(r: R) -> Result<Listing> {
    let mut p = Peek::new(r);
    let mut parser = Parser::new();
    let mut out = Listing::default();
    loop {
        let off = p.consumed;
        let head = p.peek(6).context("reading the initramfs")?;
        if head.is_empty() {
            break;
        }
        if head[0] == 0 {
            p.consume(1);
            continue;
        }
        let Some(comp) = detect(head) else {
            let shown: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            bail!(
                "unrecognised data at offset {off} (bytes {}): neither cpio nor a known compression",
                shown.join(" ")
            );
        };
        out.segments.push(Segment {
            offset: off,
            compression: comp,
        });
        let what = || format!("{comp} segment at offset {off}");
        match comp {
            Compression::None => {
                if off % 4 != 0 {
                    bail!("cpio archive at unaligned offset {off}");
                }
                if !parser.at_boundary() {
                    bail!("{}: previous archive is incomplete", what());
                }
                parser.begin_stream(off);
                loop {
                    let buf = p.fill_buf().with_context(what)?;
                    if buf.is_empty() {
                        break;
                    }
                    let (n, done) = parser.feed(buf, true).with_context(what)?;
                    p.consume(n);
                    if done {
                        break;
                    }
                }
            }
            Compression::Gzip => {
                parser.begin_stream(0);
                let mut d = flate2::bufread::GzDecoder::new(&mut p);
                io::copy(&mut d, &mut Sink(&mut parser)).with_context(what)?;
            }
            Compression::Zstd => {
                parser.begin_stream(0);
                let mut d = zstd::stream::read::Decoder::with_buffer(&mut p)
                    .with_context(what)?
                    .single_frame();
                io::copy(&mut d, &mut Sink(&mut parser)).with_context(what)?;
            }
            Compression::Xz => {
                parser.begin_stream(0);
                match lzma_rs::xz_decompress(&mut p, &mut Sink(&mut parser)) {
                    Ok(()) => {}
                    // lzma-rs insists on end of input after the stream; the kernel does not.
                    Err(lzma_rs::error::Error::XzError(m))
                        if m.starts_with("Unexpected data after last XZ block") => {}
                    Err(e) => return Err(anyhow!("{e:?}")).with_context(what),
                }
            }
            Compression::Lzma => {
                parser.begin_stream(0);
                lzma_rs::lzma_decompress(&mut p, &mut Sink(&mut parser))
                    .map_err(|e| anyhow!("{e:?}"))
                    .with_context(what)?;
            }
            Compression::Lz4 => {
                parser.begin_stream(0);
                lz4_legacy(&mut p, &mut Sink(&mut parser)).with_context(what)?;
            }
            Compression::Bzip2 => {
                out.incomplete = Some(format!(
                    "{} cannot be decoded by cloudprep; its contents were not listed",
                    what()
                ));
                break;
            }
        }
        if !parser.at_boundary() {
            bail!("{}: the archive in it is truncated", what());
        }
    }
    if !parser.at_boundary() {
        bail!("the initramfs ends in the middle of a cpio archive (truncated)");
    }
    out.entries = std::mem::take(&mut parser.entries);
    Ok(out)
}

/// The lz4 legacy format (`lz4 -l`): magic, then blocks of (le32 compressed size, data), each decoding to at
/// most 8 MiB; further magics may appear between blocks. Ends at end of input or at a size no block can have.
fn lz4_legacy<R: Read>(p: &mut Peek<R>, out: &mut impl Write) -> Result<()> {
    p.consume(4);
    let bound = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    loop {
        let h = p.peek(4)?;
        if h.len() < 4 {
            break;
        }
        let size = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if size == LZ4_LEGACY_MAGIC {
            p.consume(4);
            continue;
        }
        if size == 0 || size as usize > bound {
            break;
        }
        p.consume(4);
        let data = p.peek(size as usize)?;
        if data.len() < size as usize {
            bail!("truncated lz4 block ({} of {size} bytes)", data.len());
        }
        let n = lz4_flex::block::decompress_into(&data[..size as usize], &mut block)
            .map_err(|e| anyhow!("lz4 block: {e}"))?;
        p.consume(size as usize);
        out.write_all(&block[..n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a newc archive from (name, mode, body).
    pub fn newc(members: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        let mut all: Vec<(&str, u32, &[u8])> = members.to_vec();
        all.push(("TRAILER!!!", 0, b""));
        for (i, (name, mode, body)) in all.iter().enumerate() {
            let namesize = name.len() + 1;
            v.extend_from_slice(
                format!(
                    "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                    i, mode, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, namesize, 0
                )
                .as_bytes(),
            );
            v.extend_from_slice(name.as_bytes());
            v.push(0);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v.extend_from_slice(body);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        v
    }

    fn names(l: &Listing) -> Vec<&str> {
        l.entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn raw_archive_and_chunked_feeding() {
        let a = newc(&[
            (".", 0o40755, b""),
            ("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"abcde"),
            ("etc/x", 0o100644, b"1234"),
        ]);
        let l = list(&a[..]).unwrap();
        assert_eq!(
            names(&l),
            vec![".", "kernel/x86/microcode/GenuineIntel.bin", "etc/x"]
        );
        assert_eq!(l.entries[1].size, 5);
        assert_eq!(l.segments.len(), 1);
        // Byte-at-a-time feeding gives the same result.
        let mut p = Parser::new();
        for b in &a {
            p.feed(std::slice::from_ref(b), false).unwrap();
        }
        assert_eq!(p.entries, l.entries);
        assert!(p.at_boundary());
    }

    #[test]
    fn early_raw_then_gzip_then_padding() {
        let early = newc(&[("kernel/x86/microcode/AuthenticAMD.bin", 0o100644, b"mc")]);
        let main = newc(&[(
            "lib/modules/6.1.0-1-amd64/kernel/drivers/block/virtio_blk.ko",
            0o100644,
            &[7u8; 1000],
        )]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&main).unwrap();
        let mut img = early.clone();
        img.extend(gz.finish().unwrap());
        img.extend([0u8; 13]);
        let l = list(&img[..]).unwrap();
        assert_eq!(l.segments.len(), 2);
        assert_eq!(l.segments[1].compression, Compression::Gzip);
        assert_eq!(l.segments[1].offset, early.len() as u64);
        assert!(names(&l).contains(&"lib/modules/6.1.0-1-amd64/kernel/drivers/block/virtio_blk.ko"));
    }

    #[test]
    fn zstd_xz_lz4_segments() {
        let a = newc(&[("a", 0o100644, b"x")]);
        let b = newc(&[("b", 0o100644, &[1u8; 70000])]);
        let c = newc(&[("c", 0o100644, b"zz")]);
        let d = newc(&[("d", 0o100644, b"")]);
        let mut img = a.clone();
        img.extend(zstd::encode_all(&b[..], 3).unwrap());
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &c[..], &mut xz).unwrap();
        img.extend(xz);
        while img.len() % 4 != 0 {
            img.push(0);
        }
        // lz4 legacy: magic + one block
        img.extend(LZ4_LEGACY_MAGIC.to_le_bytes());
        let blk = lz4_flex::block::compress(&d);
        img.extend((blk.len() as u32).to_le_bytes());
        img.extend(blk);
        let l = list(&img[..]).unwrap();
        assert_eq!(names(&l), vec!["a", "b", "c", "d"]);
        let kinds: Vec<_> = l.segments.iter().map(|s| s.compression).collect();
        assert_eq!(
            kinds,
            vec![
                Compression::None,
                Compression::Zstd,
                Compression::Xz,
                Compression::Lz4
            ]
        );
    }

    #[test]
    fn lzma_segment() {
        let a = newc(&[("m", 0o100644, b"hello")]);
        let mut z = Vec::new();
        lzma_rs::lzma_compress(&mut &a[..], &mut z).unwrap();
        let l = list(&z[..]).unwrap();
        assert_eq!(names(&l), vec!["m"]);
    }

    #[test]
    fn several_archives_in_one_compressed_stream() {
        let mut both = newc(&[("one", 0o100644, b"1")]);
        both.extend(newc(&[("two", 0o100644, b"22")]));
        let l = list(&zstd::encode_all(&both[..], 1).unwrap()[..]).unwrap();
        assert_eq!(names(&l), vec!["one", "two"]);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let e = list(&b"hello world, not an initramfs"[..]).unwrap_err();
        assert!(format!("{e:#}").contains("offset 0"), "{e:#}");
        let a = newc(&[("x", 0o100644, &[1u8; 100])]);
        let e = list(&a[..150]).unwrap_err();
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
        let mut bad = a.clone();
        bad[94..102].copy_from_slice(b"zzzzzzzz");
        assert!(list(&bad[..]).is_err());
        let mut z = zstd::encode_all(&a[..], 1).unwrap();
        z.truncate(z.len() / 2);
        assert!(list(&z[..]).is_err());
    }

    #[test]
    fn bzip2_is_incomplete_not_error() {
        let mut img = newc(&[("early", 0o100644, b"")]);
        img.extend(b"BZh91AY&SY....");
        let l = list(&img[..]).unwrap();
        assert_eq!(names(&l), vec!["early"]);
        assert!(l.incomplete.unwrap().contains("bzip2"));
    }

    #[test]
    fn empty_input_is_empty_listing() {
        let l = list(&b""[..]).unwrap();
        assert!(l.entries.is_empty() && l.segments.is_empty());
    }

    #[test]
    fn corrupted_archives_never_panic() {
        let a = newc(&[
            ("x", 0o100644, &[1u8; 100]),
            ("lib/modules/v/virtio_blk.ko", 0o100644, b"k"),
        ]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&a).unwrap();
            e.finish().unwrap()
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for base in [a.clone(), gz, zstd::encode_all(&a[..], 1).unwrap()] {
            for _ in 0..500 {
                let mut v = base.clone();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let i = (seed % v.len() as u64) as usize;
                    v[i] = (seed >> 32) as u8;
                }
                let _ = list(&v[..]);
            }
        }
    }
}
