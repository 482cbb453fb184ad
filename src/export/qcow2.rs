//! qcow2 v3 output (cluster 64 KiB, refcount order 4, no extended L2, no external data file).
//!
//! * [`Qcow2File`]: one pass into a seekable file. Host clusters are allocated in order; each 2 GiB host
//!   region starts with its own refcount block, so refcounts never need more than one block in memory;
//!   L2 tables, refcount blocks, the refcount table (preallocated for the worst case), L1 and the header
//!   are written in place when their range is complete.
//! * [`Qcow2Stream`]: to a pipe, after an allocation pass (which clusters hold data): the layout of an
//!   uncompressed image is then fully determined, so header, L1, refcount table and blocks come first and
//!   each L2 table right before its data. Compressed images cannot stream (their sizes are not known
//!   before compressing).
//! * [`guest_hash`]: an independent reader (for `--verify`) that hashes the guest-visible content.

use super::pipeline::{Enc, Encoded, Sink};
use super::Compression;
use super::CLUSTER;
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

const C: u64 = CLUSTER as u64;
const CLUSTER_BITS: u32 = 16;
const L2_ENTRIES: u64 = C / 8;
const RB_ENTRIES: u64 = C / 2; // refcount order 4: 16-bit refcounts
const RT_ENTRIES: u64 = C / 8;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// x = 62 - (cluster_bits - 8): bits below x hold the compressed data's host offset.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;

pub fn l1_entries(vsize: u64) -> u64 {
    vsize.div_ceil(C).div_ceil(L2_ENTRIES).max(1)
}

fn clusters_for(bytes: u64) -> u64 {
    bytes.div_ceil(C).max(1)
}

pub fn header(
    vsize: u64,
    l1_off: u64,
    rt_off: u64,
    rt_clusters: u64,
    comp: Compression,
) -> Vec<u8> {
    let mut h = vec![0u8; CLUSTER];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&vsize.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_entries(vsize) as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_off.to_be_bytes());
    h[48..56].copy_from_slice(&rt_off.to_be_bytes());
    h[56..60].copy_from_slice(&(rt_clusters as u32).to_be_bytes());
    let incompat = if comp == Compression::Zstd {
        INCOMPAT_COMPRESSION_TYPE
    } else {
        0
    };
    h[72..80].copy_from_slice(&incompat.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
    h[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
    h[104] = u8::from(comp == Compression::Zstd); // compression_type: 0 zlib, 1 zstd
                                                  // Header extensions follow at 112: the zero bytes there are the end-of-extensions marker.
    h
}

/// L2 entry of a compressed cluster stored at `off` with `len` bytes.
pub fn compressed_entry(off: u64, len: u64) -> u64 {
    let extra = ((off + len - 1) >> 9) - (off >> 9);
    COMPRESSED | (extra << CSIZE_SHIFT) | off
}

fn be64s(v: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(v.len() * 8);
    for x in v {
        b.extend_from_slice(&x.to_be_bytes());
    }
    b
}

fn pad_cluster(mut b: Vec<u8>) -> Vec<u8> {
    b.resize(b.len().div_ceil(CLUSTER).max(1) * CLUSTER, 0);
    b
}

/// Single-pass qcow2 into a seekable file.
pub struct Qcow2File {
    file: File,
    vsize: u64,
    comp: Compression,
    fixed: u64,
    l1: Vec<u64>,
    l1_off: u64,
    rt: Vec<u64>,
    rt_off: u64,
    rtc: u64,
    next_free: u64,
    region: Option<(u64, u64, Vec<u16>)>,
    l2: Option<(u64, u64, Vec<u64>)>,
    pack: Option<u64>,
    written: u64,
    guest_cluster: u64,
    /// Written in place on a block device: bytes never written are not zeros (see [`Qcow2File::in_place`]).
    in_place: bool,
}

/// Zeros to pad a compressed run to its sector end on a block device.
static PAD: [u8; 512] = [0; 512];

impl Qcow2File {
    /// For a block device: the sector tail after each compressed run is zeroed (QEMU reads whole
    /// sectors of a compressed cluster, and a file's unwritten bytes are zeros, a device's are stale).
    pub fn in_place(mut self, yes: bool) -> Self {
        self.in_place = yes;
        self
    }

    pub fn new(file: File, vsize: u64, comp: Compression) -> Result<Qcow2File> {
        let l1n = l1_entries(vsize);
        let l1c = clusters_for(l1n * 8);
        let vclusters = vsize.div_ceil(C);
        // Worst case host size: every guest cluster twice (compression padding), all L2s, refblocks.
        let bound = 1 + l1c + 2 * vclusters + l1n + 64;
        let regions = bound.div_ceil(RB_ENTRIES) + 2;
        let rtc = clusters_for(regions * 8);
        let fixed = 1 + l1c + rtc;
        ensure!(fixed < RB_ENTRIES, "disk too large for the qcow2 layout");
        Ok(Qcow2File {
            file,
            vsize,
            comp,
            fixed,
            l1: vec![0; l1n as usize],
            l1_off: C,
            rt: vec![0; (rtc * RT_ENTRIES) as usize],
            rt_off: (1 + l1c) * C,
            rtc,
            next_free: fixed,
            region: None,
            l2: None,
            pack: None,
            written: 0,
            guest_cluster: 0,
            in_place: false,
        })
    }

    fn finish_region(&mut self) -> Result<()> {
        if let Some((_, c, counts)) = self.region.take() {
            let mut b = Vec::with_capacity(CLUSTER);
            for x in counts {
                b.extend_from_slice(&x.to_be_bytes());
            }
            self.file
                .write_all_at(&b, c * C)
                .context("writing a refcount block")?;
            self.written += C;
        }
        Ok(())
    }

    fn inc(&mut self, c: u64) -> Result<()> {
        let (r, _, counts) = self.region.as_mut().unwrap();
        ensure!(
            c / RB_ENTRIES == *r,
            "internal: refcount outside the current region"
        );
        let e = &mut counts[(c % RB_ENTRIES) as usize];
        *e = e.checked_add(1).context("refcount overflow")?;
        Ok(())
    }

    fn alloc_cluster(&mut self) -> Result<u64> {
        loop {
            let c = self.next_free;
            let r = c / RB_ENTRIES;
            if self.region.as_ref().map(|x| x.0) != Some(r) {
                self.finish_region()?;
                ensure!((r as usize) < self.rt.len(), "refcount table too small");
                self.region = Some((r, c, vec![0u16; RB_ENTRIES as usize]));
                if r == 0 {
                    for f in 0..self.fixed {
                        self.inc(f)?;
                    }
                }
                self.inc(c)?;
                self.rt[r as usize] = c * C;
                self.next_free = c + 1;
                self.pack = None;
                continue;
            }
            self.next_free = c + 1;
            self.inc(c)?;
            return Ok(c);
        }
    }

    /// Host offset for `len` bytes of compressed data, packed after the previous ones.
    fn place(&mut self, len: u64) -> Result<u64> {
        if let Some(p) = self.pack {
            if p % C != 0 {
                let cl = p / C;
                let last = (p + len - 1) / C;
                if last == cl {
                    self.inc(cl)?;
                    self.pack = Some(p + len);
                    return Ok(p);
                }
                if last == cl + 1 && self.next_free == cl + 1 && (cl + 1) % RB_ENTRIES != 0 {
                    self.inc(cl)?;
                    let n = self.alloc_cluster()?;
                    ensure!(n == cl + 1, "internal: compressed run not contiguous");
                    self.pack = Some(p + len);
                    return Ok(p);
                }
            }
        }
        let c = self.alloc_cluster()?;
        self.pack = Some(c * C + len);
        Ok(c * C)
    }

    fn flush_l2(&mut self) -> Result<()> {
        if let Some((_, off, t)) = self.l2.take() {
            self.file
                .write_all_at(&be64s(&t), off)
                .context("writing an L2 table")?;
            self.written += C;
        }
        Ok(())
    }

    fn entry(&mut self, k: u64) -> Result<&mut u64> {
        let li = k / L2_ENTRIES;
        if self.l2.as_ref().map(|x| x.0) != Some(li) {
            self.flush_l2()?;
            let c = self.alloc_cluster()?;
            self.l1[li as usize] = (c * C) | COPIED;
            self.l2 = Some((li, c * C, vec![0; L2_ENTRIES as usize]));
        }
        Ok(&mut self.l2.as_mut().unwrap().2[(k % L2_ENTRIES) as usize])
    }
}

impl Sink for Qcow2File {
    fn put(&mut self, e: &Encoded) -> Result<()> {
        let c = &e.chunk;
        ensure!(
            c.offset / C == self.guest_cluster,
            "internal: chunks out of order"
        );
        // The chunk's data goes out straight from its buffers: contiguous host runs, one pwritev each.
        let mut pieces: Vec<(u64, &[u8])> = Vec::with_capacity(e.clusters.len());
        for (i, enc) in e.clusters.iter().enumerate() {
            let k = self.guest_cluster + i as u64;
            let data = &c.data()[i * CLUSTER..(i + 1) * CLUSTER];
            match enc {
                Enc::Zero => {}
                Enc::Plain => {
                    self.entry(k)?;
                    let h = self.alloc_cluster()?;
                    pieces.push((h * C, data));
                    *self.entry(k)? = (h * C) | COPIED;
                }
                Enc::Packed(v) => {
                    self.entry(k)?;
                    let off = self.place(v.len() as u64)?;
                    pieces.push((off, v));
                    *self.entry(k)? = compressed_entry(off, v.len() as u64);
                    let end = off + v.len() as u64;
                    if self.in_place && end % 512 != 0 {
                        // Overwritten by the next packed run when it follows (written later).
                        pieces.push((end, &PAD[..(512 - end % 512) as usize]));
                    }
                }
            }
        }
        self.guest_cluster += e.clusters.len() as u64;
        let mut i = 0;
        while i < pieces.len() {
            let start = pieces[i].0;
            let mut end = start + pieces[i].1.len() as u64;
            let mut j = i + 1;
            while j < pieces.len() && pieces[j].0 == end {
                end += pieces[j].1.len() as u64;
                j += 1;
            }
            let bufs: Vec<&[u8]> = pieces[i..j].iter().map(|p| p.1).collect();
            pwritev_all(&self.file, &bufs, start).context("writing the qcow2 image")?;
            self.written += end - start;
            i = j;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_l2()?;
        if self.region.is_none() {
            // Nothing allocated: region 0 still needs its refcount block.
            let c = self.alloc_cluster()?;
            self.next_free = c; // give back the probe cluster
            let (_, _, counts) = self.region.as_mut().unwrap();
            counts[(c % RB_ENTRIES) as usize] = 0;
        }
        self.finish_region()?;
        self.file
            .write_all_at(&pad_cluster(be64s(&self.l1)), self.l1_off)
            .context("writing L1")?;
        self.file
            .write_all_at(&be64s(&self.rt), self.rt_off)
            .context("writing the refcount table")?;
        self.file
            .write_all_at(
                &header(self.vsize, self.l1_off, self.rt_off, self.rtc, self.comp),
                0,
            )
            .context("writing the qcow2 header")?;
        super::output::set_len(&self.file, self.next_free * C)?;
        self.written = self.next_free * C;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// Write all of `bufs` (in order) at `off`, in as few `pwritev` calls as the kernel allows.
pub fn pwritev_all(f: &File, bufs: &[&[u8]], mut off: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let n = iov.len().min(first + 1024);
        // SAFETY: the iovecs point into `bufs`, which outlive the call; the kernel only reads them.
        let r = unsafe {
            libc::pwritev(
                f.as_raw_fd(),
                iov[first..n].as_ptr(),
                (n - first) as libc::c_int,
                off as libc::off_t,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut r = r as usize;
        off += r as u64;
        while r > 0 {
            let v = &mut iov[first];
            if r >= v.iov_len {
                r -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing within the same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(r) } as *mut libc::c_void;
                v.iov_len -= r;
                r = 0;
            }
        }
    }
    Ok(())
}

/// Which guest clusters hold data (the allocation pass for streaming).
pub struct AllocMap {
    pub bits: Vec<u64>,
    pub clusters: u64,
}

impl AllocMap {
    pub fn new(vsize: u64) -> AllocMap {
        let clusters = vsize.div_ceil(C);
        AllocMap {
            bits: vec![0; clusters.div_ceil(64) as usize],
            clusters,
        }
    }
    pub fn get(&self, k: u64) -> bool {
        self.bits[(k / 64) as usize] & (1 << (k % 64)) != 0
    }
    fn set(&mut self, k: u64) {
        self.bits[(k / 64) as usize] |= 1 << (k % 64);
    }
}

/// Pass-1 sink: records non-zero clusters.
pub struct MapSink {
    pub map: AllocMap,
}

impl Sink for MapSink {
    fn put(&mut self, e: &Encoded) -> Result<()> {
        let base = e.chunk.offset / C;
        for (i, enc) in e.clusters.iter().enumerate() {
            if !matches!(enc, Enc::Zero) {
                self.map.set(base + i as u64);
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    fn written(&self) -> u64 {
        0
    }
}

/// Uncompressed qcow2 to a pipe, laid out from an allocation map.
pub struct Qcow2Stream<'a> {
    out: &'a mut (dyn Write + Send),
    map: AllocMap,
    /// Host offset of the next L2 table / data cluster.
    next: u64,
    total: u64,
    written: u64,
    zero: Vec<u8>,
}

impl<'a> Qcow2Stream<'a> {
    pub fn new(
        out: &'a mut (dyn Write + Send),
        vsize: u64,
        map: AllocMap,
    ) -> Result<Qcow2Stream<'a>> {
        let l1n = l1_entries(vsize);
        let l1c = clusters_for(l1n * 8);
        let n_data = map.bits.iter().map(|b| b.count_ones() as u64).sum::<u64>();
        let n_l2 = (0..l1n).filter(|&i| l2_has_data(&map, i)).count() as u64;
        let (mut rtc, mut rbc) = (1u64, 1u64);
        loop {
            let h = 1 + l1c + rtc + rbc + n_l2 + n_data;
            let (nrb, nrt) = (
                h.div_ceil(RB_ENTRIES),
                h.div_ceil(RB_ENTRIES).div_ceil(RT_ENTRIES),
            );
            if nrb == rbc && nrt == rtc {
                break;
            }
            rbc = nrb.max(rbc);
            rtc = nrt.max(rtc);
        }
        let total = 1 + l1c + rtc + rbc + n_l2 + n_data;
        let rt_off = (1 + l1c) * C;
        let rb_off = rt_off + rtc * C;
        let mut s = Qcow2Stream {
            out,
            map,
            next: rb_off + rbc * C,
            total,
            written: 0,
            zero: vec![0; CLUSTER],
        };
        // L1: walk the ranges in order, as the data will come.
        let mut l1 = vec![0u64; l1n as usize];
        let mut h = s.next;
        for (i, e) in l1.iter_mut().enumerate() {
            let n = l2_count(&s.map, i as u64);
            if n > 0 {
                *e = h | COPIED;
                h += (1 + n) * C;
            }
        }
        ensure!(h == total * C, "internal: stream layout mismatch");
        s.emit(&header(vsize, C, rt_off, rtc, Compression::None))?;
        s.emit(&pad_cluster(be64s(&l1)))?;
        let rt: Vec<u64> = (0..rtc * RT_ENTRIES)
            .map(|i| if i < rbc { rb_off + i * C } else { 0 })
            .collect();
        s.emit(&be64s(&rt))?;
        let mut rb = Vec::with_capacity(CLUSTER);
        for i in 0..rbc * RB_ENTRIES {
            rb.extend_from_slice(&u16::from(i < total).to_be_bytes());
            if rb.len() == CLUSTER {
                s.emit(&rb)?;
                rb.clear();
            }
        }
        Ok(s)
    }

    fn emit(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).context("writing the qcow2 stream")?;
        self.written += b.len() as u64;
        Ok(())
    }
}

fn l2_count(map: &AllocMap, i: u64) -> u64 {
    let s = i * L2_ENTRIES;
    let e = (s + L2_ENTRIES).min(map.clusters);
    // L2_ENTRIES is a multiple of 64: whole words.
    map.bits[(s / 64) as usize..e.div_ceil(64) as usize]
        .iter()
        .map(|b| b.count_ones() as u64)
        .sum()
}

fn l2_has_data(map: &AllocMap, i: u64) -> bool {
    l2_count(map, i) > 0
}

impl Sink for Qcow2Stream<'_> {
    fn put(&mut self, e: &Encoded) -> Result<()> {
        let base = e.chunk.offset / C;
        for (i, enc) in e.clusters.iter().enumerate() {
            let k = base + i as u64;
            if k % L2_ENTRIES == 0 && l2_has_data(&self.map, k / L2_ENTRIES) {
                let mut t = vec![0u64; L2_ENTRIES as usize];
                let mut h = self.next + C;
                for (j, t) in t.iter_mut().enumerate() {
                    let kk = k + j as u64;
                    if kk < self.map.clusters && self.map.get(kk) {
                        *t = h | COPIED;
                        h += C;
                    }
                }
                self.emit(&be64s(&t))?;
                self.next += C;
            }
            let data = &e.chunk.data()[i * CLUSTER..(i + 1) * CLUSTER];
            match (self.map.get(k), enc) {
                (true, _) => {
                    self.emit(data)?;
                    self.next += C;
                }
                (false, Enc::Zero) => {}
                (false, _) => bail!(
                    "the source changed between the allocation pass and the copy (cluster {k}): use --consistency freeze"
                ),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        ensure!(
            self.written == self.total * C,
            "qcow2 stream ended at {} of {} bytes",
            self.written,
            self.total * C
        );
        let _ = &self.zero;
        self.out.flush().context("flushing the qcow2 stream")
    }

    fn written(&self) -> u64 {
        self.written
    }
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// Read a qcow2 image we (or anyone without backing files or encryption) wrote and hash its guest content.
pub fn guest_hash(f: &File) -> Result<(u64, String)> {
    let mut h = vec![0u8; 112];
    f.read_exact_at(&mut h, 0)
        .context("reading the qcow2 header")?;
    ensure!(&h[0..4] == b"QFI\xfb", "not a qcow2 image");
    let bits = u32::from_be_bytes(h[20..24].try_into().unwrap());
    ensure!(
        bits == CLUSTER_BITS,
        "cluster bits {bits} not supported by the verifier"
    );
    ensure!(
        be64(&h, 8) == 0,
        "backing files are not supported by the verifier"
    );
    let vsize = be64(&h, 24);
    let l1n = u32::from_be_bytes(h[36..40].try_into().unwrap()) as usize;
    let l1_off = be64(&h, 40);
    let version = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let zstd =
        version >= 3 && u32::from_be_bytes(h[100..104].try_into().unwrap()) > 104 && h[104] == 1;
    let mut l1b = vec![0u8; l1n * 8];
    f.read_exact_at(&mut l1b, l1_off)?;
    let mut sha = Sha256::new();
    let zero = vec![0u8; CLUSTER];
    let mut cbuf = vec![0u8; CLUSTER];
    let mut l2b = vec![0u8; CLUSTER];
    let mut inflater = flate2::Decompress::new_with_window_bits(false, 12);
    let mut remaining = vsize;
    let clusters = vsize.div_ceil(C);
    let mut k = 0u64;
    while k < clusters {
        let li = (k / L2_ENTRIES) as usize;
        let l1e = be64(&l1b, li * 8) & OFFSET_MASK;
        let n = (clusters - k).min(L2_ENTRIES);
        if l1e == 0 {
            for _ in 0..n {
                let take = remaining.min(C) as usize;
                sha.update(&zero[..take]);
                remaining -= take as u64;
            }
            k += n;
            continue;
        }
        f.read_exact_at(&mut l2b, l1e)?;
        for j in 0..n as usize {
            let e = be64(&l2b, j * 8);
            let take = remaining.min(C) as usize;
            if e & COMPRESSED != 0 {
                let off = e & ((1 << CSIZE_SHIFT) - 1);
                let nsec = ((e >> CSIZE_SHIFT) & ((1 << (CLUSTER_BITS - 8)) - 1)) + 1;
                let csize = nsec * 512 - (off & 511);
                let mut cin = vec![0u8; csize as usize];
                let got = f.read_at(&mut cin, off)?;
                cin.truncate(got);
                if zstd {
                    let mut d = zstd::bulk::Decompressor::new()?;
                    // Trailing bytes of the last sector may belong to the next cluster: decode one frame.
                    let fl = zstd::zstd_safe::find_frame_compressed_size(&cin)
                        .map_err(|c| anyhow::anyhow!("zstd frame error {c} at cluster {k}"))?;
                    let n = d.decompress_to_buffer(&cin[..fl], &mut cbuf)?;
                    ensure!(
                        n == CLUSTER,
                        "zstd cluster {} decompressed to {n} bytes",
                        k + j as u64
                    );
                } else {
                    inflater.reset(false);
                    inflater.decompress(&cin, &mut cbuf, flate2::FlushDecompress::Finish)?;
                    ensure!(
                        inflater.total_out() == C,
                        "deflate cluster {} decompressed to {} bytes",
                        k + j as u64,
                        inflater.total_out()
                    );
                }
                sha.update(&cbuf[..take]);
            } else if e & OFFSET_MASK != 0 && e & 1 == 0 {
                f.read_exact_at(&mut cbuf, e & OFFSET_MASK)
                    .with_context(|| format!("reading cluster {}", k + j as u64))?;
                sha.update(&cbuf[..take]);
            } else {
                sha.update(&zero[..take]);
            }
            remaining -= take as u64;
        }
        k += n;
    }
    Ok((vsize, hex::encode(sha.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_entry_encoding() {
        // 100 bytes at 0x10_0000 + 500: crosses one sector boundary -> one additional sector.
        let e = compressed_entry(0x10_0000 + 500, 100);
        assert_eq!(e & (1 << 63), 0, "never COPIED");
        assert_ne!(e & COMPRESSED, 0);
        assert_eq!(e & ((1 << 54) - 1), 0x10_0000 + 500);
        assert_eq!((e >> 54) & 0xff, 1);
        assert_eq!((compressed_entry(0x10_0000, 512) >> 54) & 0xff, 0);
    }

    #[test]
    fn header_fields() {
        let h = header(10 << 30, C, 2 * C, 1, Compression::Zstd);
        assert_eq!(&h[..4], b"QFI\xfb");
        assert_eq!(be64(&h, 72), 8);
        assert_eq!(h[104], 1);
        assert_eq!(u32::from_be_bytes(h[100..104].try_into().unwrap()), 112);
        assert_eq!(u32::from_be_bytes(h[96..100].try_into().unwrap()), 4);
        assert_eq!(u32::from_be_bytes(h[36..40].try_into().unwrap()), 20);
        let z = header(1 << 20, C, 2 * C, 1, Compression::Zlib);
        assert_eq!((be64(&z, 72), z[104]), (0, 0));
    }
}
