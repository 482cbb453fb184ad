//! The copy pipeline: one reader (skips free ranges, zero-fills them), compression workers on every
//! core, a hasher (SHA-256 of the guest-visible content) and one in-order writer. Memory is bounded by a
//! fixed number of 1 MiB chunks in flight, whatever the disk size.

use super::layout::Layout;
use super::source::ReadAt;
use super::{freeze, progress::Progress, CLUSTER};
use crate::cli::Compression;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

pub const CHUNK: usize = 1 << 20;
pub const BLOCK: usize = 4096;
const SECTOR: u64 = 512;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

pub struct Chunk {
    pub seq: u64,
    pub offset: u64,
    /// Guest bytes in this chunk (the last one may be short); `data` is padded to whole clusters, or
    /// empty when the whole chunk is known free (all zeros, nothing read).
    pub len: usize,
    data: Vec<u8>,
    pub read: u64,
    pub free: u64,
    /// One bit per 512-byte sector: known free (not read, zero-filled).
    pub free_mask: Vec<u64>,
}

impl Chunk {
    /// The chunk's bytes (zero-padded to whole clusters).
    pub fn data(&self) -> &[u8] {
        if self.data.is_empty() {
            &ZEROS[..self.len.div_ceil(CLUSTER) * CLUSTER]
        } else {
            &self.data
        }
    }

    pub fn all_free(&self) -> bool {
        self.data.is_empty()
    }
}

pub enum Enc {
    Zero,
    Plain,
    Packed(Vec<u8>),
}

pub struct Encoded {
    pub chunk: Arc<Chunk>,
    /// One flag per 4 KiB block of `chunk.len` (rounded up): all zero.
    pub zero4k: Vec<bool>,
    /// One entry per 64 KiB cluster.
    pub clusters: Vec<Enc>,
    /// Bytes read from the source that were zero.
    pub zero_bytes: u64,
}

/// Where encoded chunks go, in guest order.
pub trait Sink: Send {
    fn put(&mut self, e: &Encoded) -> Result<()>;
    fn finish(&mut self) -> Result<()>;
    fn written(&self) -> u64;
}

#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub read: u64,
    pub free: u64,
    pub zero: u64,
    pub sha256: String,
}

pub fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}

struct Compressor {
    kind: Compression,
    zlib: Option<flate2::Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl Compressor {
    fn new(kind: Compression) -> Result<Compressor> {
        Ok(Compressor {
            kind,
            // QEMU inflates with window bits -12: raw deflate, 4 KiB window.
            zlib: (kind == Compression::Zlib).then(|| {
                flate2::Compress::new_with_window_bits(flate2::Compression::default(), false, 12)
            }),
            zstd: match kind {
                Compression::Zstd => Some(zstd::bulk::Compressor::new(3)?),
                _ => None,
            },
            buf: vec![0u8; CLUSTER],
        })
    }

    /// Compressed bytes, or None when compression does not shrink the cluster.
    fn compress(&mut self, src: &[u8]) -> Option<Vec<u8>> {
        let limit = CLUSTER - 1;
        match self.kind {
            Compression::None => None,
            Compression::Zlib => {
                let z = self.zlib.as_mut().unwrap();
                z.reset();
                let st = z
                    .compress(src, &mut self.buf[..limit], flate2::FlushCompress::Finish)
                    .ok()?;
                if st != flate2::Status::StreamEnd {
                    return None;
                }
                Some(self.buf[..z.total_out() as usize].to_vec())
            }
            Compression::Zstd => {
                let n = self
                    .zstd
                    .as_mut()
                    .unwrap()
                    .compress_to_buffer(src, &mut self.buf[..limit])
                    .ok()?;
                Some(self.buf[..n].to_vec())
            }
        }
    }
}

fn encode(c: Arc<Chunk>, comp: &mut Compressor) -> Encoded {
    let nblocks = c.len.div_ceil(BLOCK);
    if c.all_free() {
        let clusters = (0..c.len.div_ceil(CLUSTER)).map(|_| Enc::Zero).collect();
        return Encoded {
            zero4k: vec![true; nblocks],
            clusters,
            zero_bytes: 0,
            chunk: c,
        };
    }
    let mut zero4k = Vec::with_capacity(nblocks);
    let mut zero_bytes = 0u64;
    for i in 0..nblocks {
        let s = i * BLOCK;
        let z = is_zero(&c.data[s..s + BLOCK]);
        zero4k.push(z);
        if z {
            let mut read_sectors = 0;
            for sct in (s as u64 / SECTOR)..((s + BLOCK) as u64 / SECTOR) {
                if (sct as usize) < c.len.div_ceil(512)
                    && c.free_mask[(sct / 64) as usize] & (1 << (sct % 64)) == 0
                {
                    read_sectors += 1;
                }
            }
            zero_bytes += read_sectors * SECTOR;
        }
    }
    zero_bytes = zero_bytes.min(c.read);
    let nclusters = c.len.div_ceil(CLUSTER);
    let mut clusters = Vec::with_capacity(nclusters);
    for k in 0..nclusters {
        let b = k * CLUSTER / BLOCK;
        let e = ((k + 1) * CLUSTER / BLOCK).min(nblocks);
        if zero4k[b..e].iter().all(|&z| z) {
            clusters.push(Enc::Zero);
        } else {
            match comp.compress(&c.data[k * CLUSTER..(k + 1) * CLUSTER]) {
                Some(v) => clusters.push(Enc::Packed(v)),
                None => clusters.push(Enc::Plain),
            }
        }
    }
    Encoded {
        chunk: c,
        zero4k,
        clusters,
        zero_bytes,
    }
}

/// Read one chunk: free ranges are zero-filled without reading, everything else read in the largest
/// contiguous pieces possible.
fn read_chunk(
    dev: &dyn ReadAt,
    layout: &mut Layout,
    seq: u64,
    offset: u64,
    size: u64,
    free: &mut Vec<(u64, u64)>,
) -> Result<Chunk> {
    let len = (size - offset).min(CHUNK as u64) as usize;
    let padded = len.div_ceil(CLUSTER) * CLUSTER;
    let end = offset + len as u64;
    layout.free_ranges(dev, offset, end, free)?;
    if free.len() == 1 && free[0].0 <= offset && free[0].1 >= end {
        return Ok(Chunk {
            seq,
            offset,
            len,
            data: Vec::new(),
            read: 0,
            free: len as u64,
            free_mask: Vec::new(),
        });
    }
    let mut data = vec![0u8; padded];
    let mut free_mask = vec![0u64; CHUNK / SECTOR as usize / 64];
    let mut pos = offset;
    let mut read = 0u64;
    let mut freeb = 0u64;
    let do_read = |from: u64, to: u64, data: &mut [u8]| -> Result<u64> {
        if from < to {
            dev.read_exact_at(
                &mut data[(from - offset) as usize..(to - offset) as usize],
                from,
            )?;
        }
        Ok(to.saturating_sub(from))
    };
    for &(s, e) in free.iter() {
        let (s, e) = (s.max(offset), e.min(end));
        if s >= e {
            continue;
        }
        read += do_read(pos, s, &mut data)?;
        for sct in ((s - offset) / SECTOR)..((e - offset).div_ceil(SECTOR)) {
            free_mask[(sct / 64) as usize] |= 1 << (sct % 64);
        }
        freeb += e - s;
        pos = e;
    }
    read += do_read(pos, end, &mut data)?;
    Ok(Chunk {
        seq,
        offset,
        len,
        data,
        read,
        free: freeb,
        free_mask,
    })
}

#[allow(clippy::too_many_arguments)]
/// Run the whole copy of `dev` (guest size `size`) into `sink`.
pub fn run(
    dev: &(dyn ReadAt + Sync),
    layout: &mut Layout,
    size: u64,
    compress: Compression,
    threads: usize,
    sink: &mut dyn Sink,
    progress: &mut Progress,
    hash: bool,
) -> Result<Totals> {
    let threads = threads.max(1);
    let inflight = (2 * threads + 2).min(16);
    let (tok_tx, tok_rx) = sync_channel::<()>(inflight);
    for _ in 0..inflight {
        tok_tx.send(()).unwrap();
    }
    let (work_tx, work_rx) = sync_channel::<Arc<Chunk>>(inflight);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (hash_tx, hash_rx) = sync_channel::<Arc<Chunk>>(inflight);
    let (out_tx, out_rx) = sync_channel::<Encoded>(inflight);
    let failed = AtomicBool::new(false);
    let mut totals = Totals::default();

    let sink_ref: &mut dyn Sink = &mut *sink;
    let progress_ref: &mut Progress = &mut *progress;
    let result: Result<()> = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let rx = work_rx.clone();
            let tx = out_tx.clone();
            workers.push(s.spawn(move || -> Result<()> {
                let mut comp = Compressor::new(compress)?;
                loop {
                    let c = { rx.lock().unwrap().recv() };
                    let Ok(c) = c else { return Ok(()) };
                    if tx.send(encode(c, &mut comp)).is_err() {
                        return Ok(());
                    }
                }
            }));
        }
        drop(out_tx);
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            while let Ok(c) = hash_rx.recv() {
                h.update(&c.data()[..c.len]);
            }
            hex::encode(h.finalize())
        });
        let failed = &failed;
        let writer = s.spawn(move || -> Result<(u64, u64)> {
            let mut next = 0u64;
            let mut pending: BTreeMap<u64, Encoded> = BTreeMap::new();
            let mut zero = 0u64;
            let mut done = 0u64;
            let r = (|| -> Result<()> {
                while let Ok(e) = out_rx.recv() {
                    pending.insert(e.chunk.seq, e);
                    while let Some(e) = pending.remove(&next) {
                        sink_ref.put(&e)?;
                        zero += e.zero_bytes;
                        done += e.chunk.len as u64;
                        progress_ref.update(done, sink_ref.written());
                        next += 1;
                        let _ = tok_tx.send(());
                    }
                }
                Ok(())
            })();
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r.map(|_| (zero, done))
        });

        // The reader runs here.
        let mut free = Vec::new();
        let mut offset = 0u64;
        let mut seq = 0u64;
        let mut rerr: Result<()> = Ok(());
        let mut read = 0u64;
        let mut freeb = 0u64;
        while offset < size {
            if tok_rx.recv().is_err() || failed.load(Ordering::SeqCst) {
                break;
            }
            if freeze::aborted() {
                rerr = Err(anyhow::anyhow!(
                    "export aborted: {}",
                    freeze::abort_reason()
                ));
                break;
            }
            let c = match read_chunk(dev, layout, seq, offset, size, &mut free) {
                Ok(c) => c,
                Err(e) => {
                    rerr = Err(e);
                    break;
                }
            };
            read += c.read;
            freeb += c.free;
            offset += c.len as u64;
            seq += 1;
            let c = Arc::new(c);
            if hash {
                let _ = hash_tx.send(c.clone());
            }
            if work_tx.send(c).is_err() {
                break;
            }
        }
        drop(work_tx);
        drop(hash_tx);
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a compression worker panicked"))??;
        }
        let sha = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("the hasher panicked"))?;
        let (zero, done) = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        rerr?;
        if done != size {
            bail!("copied {done} of {size} bytes");
        }
        totals = Totals {
            read,
            free: freeb,
            zero,
            sha256: if hash { sha } else { String::new() },
        };
        Ok(())
    });
    result.context("copying the disk")?;
    sink.finish()?;
    progress.finish(sink.written());
    Ok(totals)
}
