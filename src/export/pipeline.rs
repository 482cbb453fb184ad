//! The copy pipeline: one reader (skips free ranges, zero-fills them), compression workers on every
//! core, a hasher (SHA-256 of the guest-visible content) and one in-order writer.
//!
//! Memory is bounded whatever the disk size: chunks that carry data use one of a fixed pool of 1 MiB
//! buffers (returned to the pool when both the writer and the hasher are done with the chunk; a source
//! that cannot change is read again by the hasher, which then holds no pooled buffer); chunks
//! that are wholly free carry no buffer, only their position, so the reader, the workers and the writer
//! run through free space at once while the hasher — the one stage that must see every guest byte — is
//! up to [`WINDOW`] chunks behind, always with work queued. Digesting is optional (`hash = false`).

use super::layout::Layout;
use super::source::ReadAt;
use super::Compression;
use super::{freeze, progress::Progress, CLUSTER};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHUNK: usize = 1 << 20;
pub const BLOCK: usize = 4096;
const SECTOR: u64 = 512;
/// Chunks (1 MiB of guest space each) the reader may be ahead of the writer, and the hasher behind the
/// reader. Wholly free chunks cost a few hundred bytes each, so this bounds bookkeeping, not buffers.
pub const WINDOW: usize = 1024;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A data buffer and the pool it goes back to.
type Pooled = (Vec<u8>, Option<SyncSender<Vec<u8>>>);

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
    /// Where `data` goes back when the chunk is dropped.
    pool: Option<SyncSender<Vec<u8>>>,
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

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            if !self.data.is_empty() {
                let _ = p.try_send(std::mem::take(&mut self.data));
            }
        }
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
    /// Hex SHA-256 of the guest content; empty when not computed.
    pub sha256: String,
}

pub fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    // Fold 8 words at a time: vectorizes, and returns early at the first non-zero block of 128 bytes.
    pre.iter().all(|&x| x == 0)
        && post.iter().all(|&x| x == 0)
        && mid
            .chunks(8)
            .all(|w| w.iter().fold(0u128, |a, &x| a | x) == 0)
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
    let sectors = c.len.div_ceil(SECTOR as usize);
    for i in 0..nblocks {
        let s = i * BLOCK;
        let z = is_zero(&c.data[s..s + BLOCK]);
        zero4k.push(z);
        if z {
            let first = s / SECTOR as usize;
            let last = ((s + BLOCK) / SECTOR as usize).min(sectors);
            let read_sectors = (first..last)
                .filter(|&sct| c.free_mask[sct / 64] & (1 << (sct % 64)) == 0)
                .count() as u64;
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
/// contiguous pieces possible into a buffer from `buffer` (called only when something must be read).
fn read_chunk(
    dev: &dyn ReadAt,
    layout: &mut Layout,
    seq: u64,
    offset: u64,
    size: u64,
    free: &mut Vec<(u64, u64)>,
    buffer: &mut dyn FnMut() -> Result<Pooled>,
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
            pool: None,
        });
    }
    let (mut data, pool) = buffer()?;
    // A pooled buffer holds the previous chunk's bytes: every byte not read below is zeroed here.
    data.resize(padded, 0);
    data[len..].fill(0);
    let mut free_mask = vec![0u64; CHUNK / SECTOR as usize / 64];
    let mut freeb = 0u64;
    let read = fill(dev, offset, &mut data[..len], free, |s, e| {
        for sct in ((s - offset) / SECTOR)..((e - offset).div_ceil(SECTOR)) {
            free_mask[(sct / 64) as usize] |= 1 << (sct % 64);
        }
        freeb += e - s;
    })?;
    Ok(Chunk {
        seq,
        offset,
        len,
        data,
        read,
        free: freeb,
        free_mask,
        pool,
    })
}

/// Fill `data` with the guest bytes from `offset` on: ranges in `free` (absolute, sorted; clipped here)
/// are zeroed and not read, and each clipped range is passed to `on_free`. Returns the bytes read.
fn fill(
    dev: &dyn ReadAt,
    offset: u64,
    data: &mut [u8],
    free: &[(u64, u64)],
    mut on_free: impl FnMut(u64, u64),
) -> Result<u64> {
    let end = offset + data.len() as u64;
    let mut pos = offset;
    let mut read = 0u64;
    let mut do_read = |from: u64, to: u64, data: &mut [u8]| -> Result<()> {
        if from < to {
            dev.read_exact_at(
                &mut data[(from - offset) as usize..(to - offset) as usize],
                from,
            )?;
            read += to - from;
        }
        Ok(())
    };
    for &(s, e) in free {
        let (s, e) = (s.max(offset), e.min(end));
        if s >= e {
            continue;
        }
        do_read(pos, s, data)?;
        data[(s - offset) as usize..(e - offset) as usize].fill(0);
        on_free(s, e);
        pos = e;
    }
    do_read(pos, end, data)?;
    Ok(read)
}

/// What the hasher gets for a chunk: the chunk itself (its buffer is kept until hashed), or, when the
/// source cannot change during the copy, only where to read it again (so the reader's buffers go back to
/// the pool as soon as the writer is done, and the hasher can lag behind by the whole window).
enum ToHash {
    Held(Arc<Chunk>),
    Reread {
        offset: u64,
        len: usize,
        /// Known-free ranges around the chunk (absolute offsets, sorted): zeros, not read.
        free: Vec<(u64, u64)>,
    },
}

/// Where each stage spent its time (logged at debug level: `-vv`).
#[derive(Debug, Default)]
struct Timing {
    /// Reader: reading + zero-filling / waiting for a free buffer / waiting for the writer's window
    /// or a full queue.
    read: Duration,
    wait_buffer: Duration,
    wait_queue: Duration,
    /// Hasher: hashing / waiting for chunks.
    hash: Duration,
    hash_idle: Duration,
    /// Workers (all together): encoding.
    encode: Duration,
    /// Writer: in the sink / waiting for encoded chunks.
    write: Duration,
    write_idle: Duration,
}

#[allow(clippy::too_many_arguments)]
/// Run the whole copy of `dev` (guest size `size`) into `sink`; `hash`: compute the SHA-256 of the
/// guest content; `stable`: the source cannot change during the copy (not mounted read-write, frozen or
/// read-only), so the hasher may read a chunk again instead of holding its buffer.
pub fn run(
    dev: &(dyn ReadAt + Sync),
    layout: &mut Layout,
    size: u64,
    compress: Compression,
    threads: usize,
    sink: &mut dyn Sink,
    progress: &mut Progress,
    hash: bool,
    stable: bool,
) -> Result<Totals> {
    let start = Instant::now();
    let threads = threads.max(1);
    // Data buffers: enough for every worker to hold one while the writer and the hasher hold others,
    // with slack so the hasher keeps working while the writer waits on the output (16 MiB at least).
    let buffers = (2 * threads + 12).clamp(16, 32);
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(buffers);
    for _ in 0..buffers {
        pool_tx.send(Vec::with_capacity(CHUNK)).unwrap();
    }
    let (tok_tx, tok_rx) = sync_channel::<()>(WINDOW);
    for _ in 0..WINDOW {
        tok_tx.send(()).unwrap();
    }
    let (work_tx, work_rx) = sync_channel::<Arc<Chunk>>(WINDOW);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (hash_tx, hash_rx) = sync_channel::<ToHash>(WINDOW);
    let (out_tx, out_rx) = sync_channel::<Encoded>(WINDOW);
    let failed = AtomicBool::new(false);
    let mut totals = Totals::default();
    let mut timing = Timing::default();

    let sink_ref: &mut dyn Sink = &mut *sink;
    let progress_ref: &mut Progress = &mut *progress;
    let timing_ref = &mut timing;
    let result: Result<()> = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let rx = work_rx.clone();
            let tx = out_tx.clone();
            workers.push(s.spawn(move || -> Result<Duration> {
                let mut comp = Compressor::new(compress)?;
                let mut busy = Duration::ZERO;
                loop {
                    let c = { rx.lock().unwrap().recv() };
                    let Ok(c) = c else { return Ok(busy) };
                    let t = Instant::now();
                    let e = encode(c, &mut comp);
                    busy += t.elapsed();
                    if tx.send(e).is_err() {
                        return Ok(busy);
                    }
                }
            }));
        }
        // Only the workers hold the queue's receiving end: if they all stop, the reader's send fails.
        drop(work_rx);
        drop(out_tx);
        let hasher = hash.then(|| s.spawn(move || hasher(hash_rx, dev)));
        let failed = &failed;
        let writer = s.spawn(move || -> Result<(u64, u64, Duration, Duration)> {
            let mut next = 0u64;
            let mut pending: BTreeMap<u64, Encoded> = BTreeMap::new();
            let mut zero = 0u64;
            let mut done = 0u64;
            let (mut busy, mut idle) = (Duration::ZERO, Duration::ZERO);
            let r = (|| -> Result<()> {
                loop {
                    let t = Instant::now();
                    let Ok(e) = out_rx.recv() else { break };
                    let t2 = Instant::now();
                    idle += t2 - t;
                    pending.insert(e.chunk.seq, e);
                    while let Some(e) = pending.remove(&next) {
                        sink_ref.put(&e)?;
                        zero += e.zero_bytes;
                        done += e.chunk.len as u64;
                        progress_ref.update(done, sink_ref.written());
                        next += 1;
                        drop(e);
                        let _ = tok_tx.send(());
                    }
                    busy += t2.elapsed();
                }
                Ok(())
            })();
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r.map(|_| (zero, done, busy, idle))
        });

        // The reader runs here.
        let mut free = Vec::new();
        let mut offset = 0u64;
        let mut seq = 0u64;
        let mut rerr: Result<()> = Ok(());
        let mut read = 0u64;
        let mut freeb = 0u64;
        let mut wait_buffer = Duration::ZERO;
        let mut get_buffer = || -> Result<Pooled> {
            let t = Instant::now();
            let b = pool_rx
                .recv()
                .map_err(|_| anyhow::anyhow!("internal: buffer pool closed"))?;
            wait_buffer += t.elapsed();
            Ok((b, Some(pool_tx.clone())))
        };
        let (mut t_read, mut t_queue) = (Duration::ZERO, Duration::ZERO);
        while offset < size {
            let t = Instant::now();
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
            let t1 = Instant::now();
            t_queue += t1 - t;
            let c = match read_chunk(dev, layout, seq, offset, size, &mut free, &mut get_buffer) {
                Ok(c) => c,
                Err(e) => {
                    rerr = Err(e);
                    break;
                }
            };
            let t2 = Instant::now();
            t_read += t2 - t1;
            read += c.read;
            freeb += c.free;
            offset += c.len as u64;
            seq += 1;
            let c = Arc::new(c);
            if hash {
                let m = if stable && !c.all_free() {
                    ToHash::Reread {
                        offset: c.offset,
                        len: c.len,
                        free: free.clone(),
                    }
                } else {
                    ToHash::Held(c.clone())
                };
                if hash_tx.send(m).is_err() {
                    break;
                }
            }
            if work_tx.send(c).is_err() {
                break;
            }
            t_queue += t2.elapsed();
        }
        timing_ref.wait_buffer = wait_buffer;
        timing_ref.read = t_read.saturating_sub(wait_buffer);
        timing_ref.wait_queue = t_queue;
        drop(work_tx);
        drop(hash_tx);
        for w in workers {
            timing_ref.encode += w
                .join()
                .map_err(|_| anyhow::anyhow!("a compression worker panicked"))??;
        }
        let (zero, done, wbusy, widle) = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        (timing_ref.write, timing_ref.write_idle) = (wbusy, widle);
        let sha = match hasher {
            Some(h) => {
                let (sha, busy, idle) = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("the hasher panicked"))??;
                (timing_ref.hash, timing_ref.hash_idle) = (busy, idle);
                sha
            }
            None => String::new(),
        };
        rerr?;
        if done != size {
            bail!("copied {done} of {size} bytes");
        }
        totals = Totals {
            read,
            free: freeb,
            zero,
            sha256: sha,
        };
        Ok(())
    });
    result.context("copying the disk")?;
    let t = Instant::now();
    sink.finish()?;
    let finish = t.elapsed();
    progress.finish(sink.written());
    log::debug!(
        "export pipeline: {:.2} s total; reader: read {:.2} s, waited {:.2} s for a buffer, {:.2} s for the \
         window/queues; hasher: {:.2} s hashing, {:.2} s idle; workers: {:.2} s encoding ({threads} threads, \
         {buffers} buffers); writer: {:.2} s writing, {:.2} s idle; sink finish {:.2} s",
        start.elapsed().as_secs_f64(),
        timing.read.as_secs_f64(),
        timing.wait_buffer.as_secs_f64(),
        timing.wait_queue.as_secs_f64(),
        timing.hash.as_secs_f64(),
        timing.hash_idle.as_secs_f64(),
        timing.encode.as_secs_f64(),
        timing.write.as_secs_f64(),
        timing.write_idle.as_secs_f64(),
        finish.as_secs_f64()
    );
    Ok(totals)
}

/// SHA-256 of the chunks in order; wholly free chunks are hashed from a static zero buffer, chunks sent
/// as [`ToHash::Reread`] are read again from `dev` into the hasher's own buffer.
fn hasher(rx: Receiver<ToHash>, dev: &dyn ReadAt) -> Result<(String, Duration, Duration)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut busy, mut idle) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let Ok(m) = rx.recv() else { break };
        let t2 = Instant::now();
        idle += t2 - t;
        match m {
            ToHash::Held(c) => h.update(&c.data()[..c.len]),
            ToHash::Reread { offset, len, free } => {
                let b = &mut buf[..len];
                fill(dev, offset, b, &free, |_, _| {}).with_context(|| {
                    format!("reading the source again at byte {offset} for the digest")
                })?;
                h.update(&*b);
            }
        }
        busy += t2.elapsed();
    }
    Ok((hex::encode(h.finalize()), busy, idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_any_nonzero_byte() {
        let mut b = vec![0u8; 3 * BLOCK + 7];
        assert!(is_zero(&b));
        assert!(is_zero(&b[1..]));
        for i in [0, 1, 15, 16, 127, 128, 4095, 4096, 3 * BLOCK + 6] {
            b[i] = 1;
            assert!(!is_zero(&b), "byte {i}");
            assert!(!is_zero(&b[1.min(i)..]), "unaligned, byte {i}");
            b[i] = 0;
        }
    }
}
