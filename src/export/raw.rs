//! Raw output: a sparse file (zero 4 KiB blocks become holes) or a plain stream (zeros written).

use super::pipeline::{Encoded, Sink, BLOCK};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Sparse raw file: non-zero runs are written at their offset, zeros are skipped, `set_len` at the end.
/// On a block device (`in_place`) zero runs are zeroed, since the device keeps its old content.
pub struct RawFile {
    pub file: File,
    pub size: u64,
    in_place: bool,
    written: u64,
}

impl RawFile {
    pub fn new(file: File, size: u64, in_place: bool) -> RawFile {
        RawFile {
            file,
            size,
            in_place,
            written: 0,
        }
    }
}

impl Sink for RawFile {
    fn put(&mut self, e: &Encoded) -> Result<()> {
        let c = &e.chunk;
        let mut i = 0;
        let n = e.zero4k.len();
        while i < n {
            if e.zero4k[i] {
                let s = i;
                while i < n && e.zero4k[i] {
                    i += 1;
                }
                if self.in_place {
                    let from = (s * BLOCK) as u64;
                    let to = ((i * BLOCK).min(c.len)) as u64;
                    super::output::zero_range(&self.file, c.offset + from, to - from)?;
                }
                continue;
            }
            let s = i;
            while i < n && !e.zero4k[i] {
                i += 1;
            }
            let from = s * BLOCK;
            let to = (i * BLOCK).min(c.len);
            self.file
                .write_all_at(&c.data()[from..to], c.offset + from as u64)
                .context("writing the raw image")?;
            self.written += (to - from) as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        super::output::set_len(&self.file, self.size).context("setting the raw image size")
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// Raw to a pipe: every byte, zeros included, in order.
pub struct RawStream<'a> {
    pub out: &'a mut (dyn Write + Send),
    written: u64,
}

impl<'a> RawStream<'a> {
    pub fn new(out: &'a mut (dyn Write + Send)) -> Self {
        RawStream { out, written: 0 }
    }
}

impl Sink for RawStream<'_> {
    fn put(&mut self, e: &Encoded) -> Result<()> {
        let c = &e.chunk;
        self.out
            .write_all(&c.data()[..c.len])
            .context("writing the raw stream")?;
        self.written += c.len as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().context("flushing the raw stream")
    }

    fn written(&self) -> u64 {
        self.written
    }
}
