//! FAT12/16/32 in pure Rust: read and write the EFI system partition of an offline guest when it is not
//! mounted (this host's kernel may have no vfat at all).
//!
//! The filesystem is untrusted input. Every field of the boot sector is checked before use, every cluster
//! number is range-checked, every chain walk is bounded (a cyclic chain is an error, not a hang), and no
//! read or write leaves the partition's byte range.
//!
//! Writing is plan -> apply: [`Volume`] records the changes (`create_dir_all`, `write_file`) in memory,
//! reads see them, and [`Volume::plan`] turns them into a list of (byte offset, new bytes) ranges. The
//! caller saves the old bytes of exactly those ranges ([`Plan::areas`]), journals them, then applies the
//! plan; writing the saved bytes back restores the partition byte for byte. The ranges are ordered so that
//! a crash half-way leaves the old files readable: new file data first (in clusters that were free), then
//! the FATs, then the directory entries, then the FAT32 FSInfo free count.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::os::unix::fs::FileExt;

/// Random-access reads of a device or image.
pub trait Dev {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
}

impl Dev for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
}

impl Dev for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let start = usize::try_from(off).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len() => {
                buf.copy_from_slice(&self[s..e]);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_VOLUME: u8 = 0x08;
pub const ATTR_DIR: u8 = 0x10;
pub const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0f;
const ENTRY: u64 = 32;
/// A directory holds at most 65536 entries (the FAT specification's limit).
const MAX_DIR_BYTES: u64 = 65536 * ENTRY;
/// The in-memory copy of one FAT is refused beyond this size.
const MAX_FAT_BYTES: u64 = 64 << 20;

/// The boot sector's geometry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpb {
    pub fat_type: FatType,
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub num_fats: u64,
    pub root_entries: u64,
    pub total_sectors: u64,
    pub fat_sectors: u64,
    /// FAT32: first cluster of the root directory.
    pub root_cluster: u32,
    /// FAT32: sector of the FSInfo structure, when the boot sector names one.
    pub fsinfo_sector: Option<u64>,
    /// Number of data clusters: valid cluster numbers are 2..=clusters+1.
    pub clusters: u32,
    /// FAT32 with mirroring off: the only FAT in use (otherwise every copy is written).
    pub active_fat: Option<u64>,
    pub volume_id: u32,
}

fn le16(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn le32(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64
}

impl Bpb {
    /// Parse and check the boot sector of a filesystem `part_len` bytes long.
    pub fn parse(s: &[u8], part_len: u64) -> Result<Bpb> {
        if s.len() < 512 {
            bail!("the boot sector is shorter than 512 bytes");
        }
        if s[510] != 0x55 || s[511] != 0xaa {
            bail!("no FAT boot sector (no 55AA signature)");
        }
        let bps = le16(s, 11);
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            bail!("bad bytes per sector {bps}");
        }
        let spc = s[13] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            bail!("bad sectors per cluster {spc}");
        }
        if bps * spc > 256 << 10 {
            bail!("cluster size {} is too large", bps * spc);
        }
        let reserved = le16(s, 14);
        if reserved == 0 {
            bail!("no reserved sectors");
        }
        let num_fats = s[16] as u64;
        if !(1..=4).contains(&num_fats) {
            bail!("bad number of FATs {num_fats}");
        }
        let root_entries = le16(s, 17);
        let total = match le16(s, 19) {
            0 => le32(s, 32),
            n => n,
        };
        let fat16_len = le16(s, 22);
        // Linux and dosfstools: a zero 16-bit FAT size means FAT32.
        let (fat_sectors, is32) = if fat16_len == 0 {
            (le32(s, 36), true)
        } else {
            (fat16_len, false)
        };
        if fat_sectors == 0 {
            bail!("the FAT size is zero");
        }
        if is32 && root_entries != 0 {
            bail!("a FAT32 boot sector with {root_entries} fixed root entries");
        }
        if !is32 && root_entries == 0 {
            bail!("a FAT12/16 boot sector without root directory entries");
        }
        if total == 0 {
            bail!("the total sector count is zero");
        }
        let bytes = total * bps;
        if bytes > part_len {
            bail!("the filesystem ({bytes} bytes) is larger than its partition ({part_len} bytes)");
        }
        let root_dir_sectors = (root_entries * ENTRY).div_ceil(bps);
        let data_start = reserved + num_fats * fat_sectors + root_dir_sectors;
        if data_start >= total {
            bail!("the data area starts at sector {data_start}, past the end ({total})");
        }
        let clusters = (total - data_start) / spc;
        if clusters == 0 {
            bail!("no data clusters");
        }
        let fat_type = if is32 {
            FatType::Fat32
        } else if clusters < 4085 {
            FatType::Fat12
        } else if clusters < 65525 {
            FatType::Fat16
        } else {
            bail!("{clusters} clusters is too many for a FAT16 filesystem");
        };
        let max_entries = match fat_type {
            FatType::Fat12 => fat_sectors * bps * 2 / 3,
            FatType::Fat16 => fat_sectors * bps / 2,
            FatType::Fat32 => fat_sectors * bps / 4,
        };
        if clusters + 2 > max_entries {
            bail!("the FAT ({fat_sectors} sectors) is too short for {clusters} clusters");
        }
        if clusters > 0x0fff_fff5 {
            bail!("{clusters} clusters is too many for FAT32");
        }
        let (mut root_cluster, mut fsinfo_sector, mut active_fat) = (0, None, None);
        if fat_type == FatType::Fat32 {
            root_cluster = le32(s, 44) as u32;
            if root_cluster < 2 || root_cluster as u64 > clusters + 1 {
                bail!("the root directory cluster {root_cluster} is out of range");
            }
            let fi = le16(s, 48);
            if fi != 0 && fi != 0xffff && fi < reserved {
                fsinfo_sector = Some(fi);
            }
            let flags = le16(s, 40);
            if flags & 0x80 != 0 {
                let a = flags & 0x0f;
                if a >= num_fats {
                    bail!("the active FAT {a} does not exist ({num_fats} FATs)");
                }
                active_fat = Some(a);
            }
        }
        let volume_id = if is32 { le32(s, 67) } else { le32(s, 39) } as u32;
        Ok(Bpb {
            fat_type,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            reserved_sectors: reserved,
            num_fats,
            root_entries,
            total_sectors: total,
            fat_sectors,
            root_cluster,
            fsinfo_sector,
            clusters: clusters as u32,
            active_fat,
            volume_id,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }
    fn fat_offset(&self, copy: u64) -> u64 {
        (self.reserved_sectors + copy * self.fat_sectors) * self.bytes_per_sector
    }
    fn root_offset(&self) -> u64 {
        self.fat_offset(self.num_fats)
    }
    fn root_len(&self) -> u64 {
        (self.root_entries * ENTRY).div_ceil(self.bytes_per_sector) * self.bytes_per_sector
    }
    fn data_offset(&self) -> u64 {
        self.root_offset() + self.root_len()
    }
    fn max_cluster(&self) -> u32 {
        self.clusters + 1
    }
    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset() + (c as u64 - 2) * self.cluster_size()
    }
    fn eoc(&self) -> u32 {
        match self.fat_type {
            FatType::Fat12 => 0xfff,
            FatType::Fat16 => 0xffff,
            FatType::Fat32 => 0x0fff_ffff,
        }
    }
    /// Bytes of the FAT that hold entries 0..=max_cluster.
    fn fat_bytes(&self) -> u64 {
        let n = self.clusters as u64 + 2;
        match self.fat_type {
            FatType::Fat12 => (n * 3).div_ceil(2),
            FatType::Fat16 => n * 2,
            FatType::Fat32 => n * 4,
        }
    }
}

/// A directory or file found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The long name when there is a valid one, else the 8.3 name as shown by Linux (lower-case flags applied).
    pub name: String,
    /// The 8.3 name as stored ("BOOTX64 EFI").
    pub short: [u8; 11],
    pub attr: u8,
    pub first_cluster: u32,
    pub size: u32,
    /// Offset of the short entry within the filesystem.
    slot: u64,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }
    /// "BOOTX64.EFI".
    pub fn short_name(&self) -> String {
        let b = String::from_utf8_lossy(&self.short[..8])
            .trim_end()
            .to_string();
        let e = String::from_utf8_lossy(&self.short[8..])
            .trim_end()
            .to_string();
        if e.is_empty() {
            b
        } else {
            format!("{b}.{e}")
        }
    }
    fn matches(&self, name: &str) -> bool {
        self.name.to_lowercase() == name.to_lowercase()
            || self.short_name().eq_ignore_ascii_case(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// The fixed root directory of FAT12/16.
    FixedRoot,
    Chain(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Data,
    Dir,
}

#[derive(Debug, Clone)]
struct FsInfo {
    offset: u64,
    free: u32,
    next: u32,
}

/// One planned write: `data` goes to byte `offset` of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The writes a set of changes needs, in the order they must be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The filesystem's byte range on the device: no range leaves it.
    pub base: u64,
    pub len: u64,
    pub writes: Vec<Range>,
    /// What the plan does, one line per change ("create \EFI\BOOT", "write \EFI\BOOT\BOOTX64.EFI (N bytes)").
    pub changes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    /// (device offset, length) of every write.
    pub fn areas(&self) -> Vec<(u64, u64)> {
        self.writes
            .iter()
            .map(|w| (w.offset, w.data.len() as u64))
            .collect()
    }
    /// The new bytes of every write, concatenated in the order of [`Plan::areas`].
    pub fn new_bytes(&self) -> Vec<u8> {
        self.writes.iter().flat_map(|w| w.data.clone()).collect()
    }
    fn check(&self) -> Result<()> {
        let end = self
            .base
            .checked_add(self.len)
            .context("partition range overflows")?;
        for w in &self.writes {
            let we = w.offset.checked_add(w.data.len() as u64);
            if w.offset < self.base || we.is_none_or(|e| e > end) {
                bail!(
                    "a planned FAT write at byte {} leaves the partition",
                    w.offset
                );
            }
        }
        Ok(())
    }
    /// Write every range to `file` in order, then flush it.
    pub fn apply(&self, file: &std::fs::File, name: &str) -> Result<()> {
        self.check()?;
        for w in &self.writes {
            file.write_all_at(&w.data, w.offset)
                .with_context(|| format!("writing {name} at byte {}", w.offset))?;
        }
        file.sync_all().with_context(|| format!("flushing {name}"))
    }
    /// The same on an image held in memory.
    pub fn apply_mem(&self, image: &mut [u8]) -> Result<()> {
        self.check()?;
        for w in &self.writes {
            let s = usize::try_from(w.offset)?;
            let e = s + w.data.len();
            if e > image.len() {
                bail!("a planned FAT write at byte {s} is past the image's end");
            }
            image[s..e].copy_from_slice(&w.data);
        }
        Ok(())
    }
}

/// An open FAT filesystem, with the changes planned so far.
pub struct Volume<'a> {
    dev: &'a dyn Dev,
    base: u64,
    len: u64,
    pub bpb: Bpb,
    /// The active FAT, with the planned changes.
    fat: Vec<u8>,
    fat_orig: Vec<u8>,
    pending: Vec<(u64, Vec<u8>, Kind)>,
    fsinfo: Option<FsInfo>,
    allocated: u64,
    freed: HashSet<u32>,
    last_alloc: Option<u32>,
    changes: Vec<String>,
    /// (date, time) stamped on new and changed entries.
    stamp: (u16, u16),
}

impl<'a> Volume<'a> {
    /// Open the filesystem at bytes `base..base+len` of `dev`.
    pub fn open(dev: &'a dyn Dev, base: u64, len: u64) -> Result<Volume<'a>> {
        base.checked_add(len).context("partition range overflows")?;
        let mut s = vec![0u8; 512];
        if len < 512 {
            bail!("the partition is shorter than one sector");
        }
        dev.read_exact_at(&mut s, base)
            .context("reading the FAT boot sector")?;
        let bpb = Bpb::parse(&s, len)?;
        let fat_len = bpb.fat_bytes();
        if fat_len > MAX_FAT_BYTES {
            bail!("the FAT is {fat_len} bytes, more than cloudprep reads");
        }
        let mut v = Volume {
            dev,
            base,
            len,
            fat: Vec::new(),
            fat_orig: Vec::new(),
            pending: Vec::new(),
            fsinfo: None,
            allocated: 0,
            freed: HashSet::new(),
            last_alloc: None,
            changes: Vec::new(),
            stamp: fat_stamp(now_unix()),
            bpb,
        };
        let active = v.bpb.active_fat.unwrap_or(0);
        v.fat = v.read(v.bpb.fat_offset(active), fat_len as usize)?;
        v.fat_orig = v.fat.clone();
        if let Some(fs) = v.bpb.fsinfo_sector {
            let off = fs * v.bpb.bytes_per_sector;
            let b = v.read(off, 512)?;
            if le32(&b, 0) == 0x4161_5252
                && le32(&b, 484) == 0x6141_7272
                && le32(&b, 508) == 0xaa55_0000
            {
                v.fsinfo = Some(FsInfo {
                    offset: off,
                    free: le32(&b, 488) as u32,
                    next: le32(&b, 492) as u32,
                });
            }
        }
        Ok(v)
    }

    /// Stamp new and changed entries with this time (seconds since the epoch, UTC) instead of now.
    pub fn set_time(&mut self, unix: i64) {
        self.stamp = fat_stamp(unix);
    }

    /// Bytes `off..off+len` of the filesystem, with the planned writes laid over them.
    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let end = off.checked_add(len as u64).context("offset overflows")?;
        if end > self.len {
            bail!(
                "FAT read at byte {off} (+{len}) is past the partition's end ({})",
                self.len
            );
        }
        let mut b = vec![0u8; len];
        self.dev
            .read_exact_at(&mut b, self.base + off)
            .with_context(|| format!("reading the FAT filesystem at byte {off}"))?;
        for (po, pd, _) in &self.pending {
            let (s, e) = ((*po).max(off), (po + pd.len() as u64).min(end));
            if s < e {
                b[(s - off) as usize..(e - off) as usize]
                    .copy_from_slice(&pd[(s - po) as usize..(e - po) as usize]);
            }
        }
        Ok(b)
    }

    fn write(&mut self, off: u64, data: Vec<u8>, kind: Kind) -> Result<()> {
        let end = off
            .checked_add(data.len() as u64)
            .context("offset overflows")?;
        if end > self.len {
            bail!("FAT write at byte {off} is past the partition's end");
        }
        self.pending.push((off, data, kind));
        Ok(())
    }

    // ----- the FAT -----

    fn entry(&self, c: u32) -> u32 {
        let c = c as usize;
        match self.bpb.fat_type {
            FatType::Fat12 => {
                let o = c * 3 / 2;
                let v = u16::from_le_bytes([self.fat[o], self.fat[o + 1]]);
                (if c % 2 == 1 { v >> 4 } else { v & 0xfff }) as u32
            }
            FatType::Fat16 => u16::from_le_bytes([self.fat[2 * c], self.fat[2 * c + 1]]) as u32,
            FatType::Fat32 => {
                u32::from_le_bytes(self.fat[4 * c..4 * c + 4].try_into().unwrap()) & 0x0fff_ffff
            }
        }
    }

    fn set_entry(&mut self, c: u32, v: u32) {
        let c = c as usize;
        match self.bpb.fat_type {
            FatType::Fat12 => {
                let o = c * 3 / 2;
                let old = u16::from_le_bytes([self.fat[o], self.fat[o + 1]]);
                let v = v as u16 & 0xfff;
                let new = if c % 2 == 1 {
                    (old & 0x000f) | (v << 4)
                } else {
                    (old & 0xf000) | v
                };
                self.fat[o..o + 2].copy_from_slice(&new.to_le_bytes());
            }
            FatType::Fat16 => self.fat[2 * c..2 * c + 2].copy_from_slice(&(v as u16).to_le_bytes()),
            FatType::Fat32 => {
                let old = u32::from_le_bytes(self.fat[4 * c..4 * c + 4].try_into().unwrap());
                let new = (old & 0xf000_0000) | (v & 0x0fff_ffff);
                self.fat[4 * c..4 * c + 4].copy_from_slice(&new.to_le_bytes());
            }
        }
    }

    fn check_cluster(&self, c: u32, what: &str) -> Result<()> {
        if c < 2 || c > self.bpb.max_cluster() {
            bail!(
                "{what}: cluster {c} is outside the data area (2..={})",
                self.bpb.max_cluster()
            );
        }
        Ok(())
    }

    /// The next cluster after `c`, None at the end of the chain.
    fn next(&self, c: u32, what: &str) -> Result<Option<u32>> {
        let v = self.entry(c);
        let eoc = self.bpb.eoc();
        if v >= eoc - 7 {
            return Ok(None);
        }
        if v == eoc - 8 {
            bail!("{what}: cluster {c} leads to a cluster marked bad");
        }
        if v == 0 {
            bail!("{what}: cluster {c} is marked free in the middle of the chain");
        }
        self.check_cluster(v, what)?;
        Ok(Some(v))
    }

    /// The chain starting at `first`, at most `max` clusters (more is an error: too long or cyclic).
    fn chain(&self, first: u32, max: u64, what: &str) -> Result<Vec<u32>> {
        self.check_cluster(first, what)?;
        let limit = max.min(self.bpb.clusters as u64);
        let mut v = vec![first];
        let mut c = first;
        while let Some(n) = self.next(c, what)? {
            if v.len() as u64 >= limit {
                bail!(
                    "{what}: the cluster chain is longer than {limit} clusters (cyclic or corrupt)"
                );
            }
            v.push(n);
            c = n;
        }
        Ok(v)
    }

    /// `n` free clusters (first fit), chained and marked end-of-chain.
    fn alloc(&mut self, n: u64) -> Result<Vec<u32>> {
        let mut got = Vec::new();
        let mut c = 2u32;
        while (got.len() as u64) < n {
            if c > self.bpb.max_cluster() {
                bail!(
                    "the filesystem is full ({} more clusters needed)",
                    n - got.len() as u64
                );
            }
            if self.entry(c) == 0 && !self.freed.contains(&c) {
                got.push(c);
            }
            c += 1;
        }
        for (i, &c) in got.iter().enumerate() {
            let next = got.get(i + 1).copied().unwrap_or(self.bpb.eoc());
            self.set_entry(c, next);
        }
        self.allocated += n;
        if let Some(&l) = got.last() {
            self.last_alloc = Some(l);
        }
        Ok(got)
    }

    fn free_chain(&mut self, chain: &[u32]) {
        for &c in chain {
            self.set_entry(c, 0);
            self.freed.insert(c);
        }
    }

    // ----- directories -----

    /// (offset, length) of each piece of a directory.
    fn dir_extents(&self, d: Dir) -> Result<Vec<(u64, u64)>> {
        Ok(match d {
            Dir::FixedRoot => vec![(self.bpb.root_offset(), self.bpb.root_len())],
            Dir::Chain(c) => {
                let cs = self.bpb.cluster_size();
                self.chain(c, MAX_DIR_BYTES.div_ceil(cs), "a directory")?
                    .into_iter()
                    .map(|c| (self.bpb.cluster_offset(c), cs))
                    .collect()
            }
        })
    }

    /// Every 32-byte slot of a directory: (offset, bytes).
    fn slots(&self, d: Dir) -> Result<Vec<(u64, [u8; 32])>> {
        let mut v = Vec::new();
        for (off, len) in self.dir_extents(d)? {
            let b = self.read(off, len as usize)?;
            for (i, e) in b.chunks_exact(32).enumerate() {
                v.push((off + i as u64 * ENTRY, e.try_into().unwrap()));
            }
        }
        Ok(v)
    }

    fn entries(&self, d: Dir) -> Result<Vec<Node>> {
        let mut out = Vec::new();
        // The long name being assembled: expected next ordinal, checksum, UTF-16 units by position.
        let mut lfn: Option<(u8, u8, Vec<u16>)> = None;
        for (off, e) in self.slots(d)? {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 {
                lfn = None;
                continue;
            }
            if e[11] & 0x3f == ATTR_LFN {
                let ord = e[0] & 0x1f;
                if e[0] & 0x40 != 0 && (1..=20).contains(&ord) {
                    let mut units = vec![0xffffu16; ord as usize * 13];
                    lfn_units(&e, &mut units[(ord as usize - 1) * 13..]);
                    lfn = Some((ord, e[13], units));
                } else if let Some((exp, sum, units)) = lfn.as_mut() {
                    if ord >= 1 && ord + 1 == *exp && e[13] == *sum {
                        lfn_units(&e, &mut units[(ord as usize - 1) * 13..]);
                        *exp = ord;
                    } else {
                        lfn = None;
                    }
                }
                continue;
            }
            let long = lfn.take();
            if e[11] & ATTR_VOLUME != 0 {
                continue;
            }
            let mut short: [u8; 11] = e[..11].try_into().unwrap();
            if short[0] == 0x05 {
                short[0] = 0xe5;
            }
            if &short == b".          " || &short == b"..         " {
                continue;
            }
            let long = long.and_then(|(exp, sum, units)| {
                (exp == 1 && sum == lfn_checksum(&short)).then(|| {
                    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                    let units: Vec<u16> = units[..end]
                        .iter()
                        .copied()
                        .filter(|&u| u != 0xffff)
                        .collect();
                    String::from_utf16_lossy(&units)
                })
            });
            let name = long
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| shown_short(&short, e[12]));
            let hi = if self.bpb.fat_type == FatType::Fat32 {
                le16(&e, 20)
            } else {
                0
            };
            out.push(Node {
                name,
                short,
                attr: e[11],
                first_cluster: ((hi << 16) | le16(&e, 26)) as u32,
                size: le32(&e, 28) as u32,
                slot: off,
            });
        }
        Ok(out)
    }

    fn root(&self) -> Dir {
        match self.bpb.fat_type {
            FatType::Fat32 => Dir::Chain(self.bpb.root_cluster),
            _ => Dir::FixedRoot,
        }
    }

    fn dir_of(&self, n: &Node) -> Result<Dir> {
        if n.first_cluster == 0 {
            // ".." of a first-level directory points at the root with cluster 0.
            return Ok(self.root());
        }
        self.check_cluster(n.first_cluster, &n.name)?;
        Ok(Dir::Chain(n.first_cluster))
    }

    /// The directory at `path` (components; the root for none).
    fn find_dir(&self, parts: &[&str]) -> Result<Option<Dir>> {
        let mut d = self.root();
        for (i, p) in parts.iter().enumerate() {
            match self.entries(d)?.into_iter().find(|n| n.matches(p)) {
                Some(n) if n.is_dir() => d = self.dir_of(&n)?,
                Some(_) => bail!("{} is a file, not a directory", join(&parts[..=i])),
                None => return Ok(None),
            }
        }
        Ok(Some(d))
    }

    /// The entry at `path` ("EFI/BOOT/BOOTX64.EFI" or "\EFI\BOOT\BOOTX64.EFI"; names compared without case).
    pub fn lookup(&self, path: &str) -> Result<Option<Node>> {
        let parts = split(path)?;
        let Some((last, dirs)) = parts.split_last() else {
            bail!("the root directory has no entry");
        };
        let Some(d) = self.find_dir(dirs)? else {
            return Ok(None);
        };
        Ok(self.entries(d)?.into_iter().find(|n| n.matches(last)))
    }

    /// The entries of the directory at `path` (without "." and ".."); None when it does not exist.
    pub fn list(&self, path: &str) -> Result<Option<Vec<Node>>> {
        match self.find_dir(&split(path)?)? {
            Some(d) => Ok(Some(self.entries(d)?)),
            None => Ok(None),
        }
    }

    /// The content of the file at `path`: None when it does not exist; an error when it is larger than
    /// `max` bytes, a directory, or its cluster chain is broken.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        match self.lookup(path)? {
            Some(n) if n.is_dir() => bail!("{} is a directory", dos(path)),
            Some(n) => self.read_node(&n, max).map(Some),
            None => Ok(None),
        }
    }

    fn read_node(&self, n: &Node, max: u64) -> Result<Vec<u8>> {
        let size = n.size as u64;
        if size > max {
            bail!(
                "{} is {size} bytes, more than the {max} cloudprep reads",
                n.name
            );
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let cs = self.bpb.cluster_size();
        let need = size.div_ceil(cs);
        let mut out = Vec::with_capacity(size as usize);
        let mut c = n.first_cluster;
        self.check_cluster(c, &n.name)?;
        for i in 0..need {
            let take = (size - out.len() as u64).min(cs);
            out.extend(self.read(self.bpb.cluster_offset(c), take as usize)?);
            if i + 1 < need {
                c = match self.next(c, &n.name)? {
                    Some(x) => x,
                    None => bail!(
                        "{}: the cluster chain ends before the file's {size} bytes",
                        n.name
                    ),
                };
            }
        }
        Ok(out)
    }

    // ----- planned changes -----

    /// Create the directory `path` and its missing parents (nothing when it exists).
    pub fn create_dir_all(&mut self, path: &str) -> Result<()> {
        let parts = split(path)?;
        let mut d = self.root();
        for (i, p) in parts.iter().enumerate() {
            match self.entries(d)?.into_iter().find(|n| n.matches(p)) {
                Some(n) if n.is_dir() => d = self.dir_of(&n)?,
                Some(_) => bail!("{} exists and is not a directory", dos(&join(&parts[..=i]))),
                None => {
                    let c = self.alloc(1)?[0];
                    let cs = self.bpb.cluster_size();
                    let mut b = vec![0u8; cs as usize];
                    // ".." names the root as cluster 0.
                    let parent = match d {
                        Dir::Chain(pc) if d != self.root() => pc,
                        _ => 0,
                    };
                    b[..32].copy_from_slice(&self.raw_entry(b".          ", ATTR_DIR, c, 0, 0));
                    b[32..64].copy_from_slice(&self.raw_entry(
                        b"..         ",
                        ATTR_DIR,
                        parent,
                        0,
                        0,
                    ));
                    self.write(self.bpb.cluster_offset(c), b, Kind::Dir)?;
                    self.add_entry(d, p, ATTR_DIR, c, 0)?;
                    self.changes
                        .push(format!("create directory {}", dos(&join(&parts[..=i]))));
                    d = Dir::Chain(c);
                }
            }
        }
        Ok(())
    }

    /// Write `data` as the file `path` (its directory must exist): a new file, or a new content for an
    /// existing one (new clusters, then the old ones freed). Nothing when the file already holds `data`.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let parts = split(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            bail!("no file name in {path:?}");
        };
        let size = u32::try_from(data.len()).context("a FAT file holds at most 4 GiB")?;
        let Some(d) = self.find_dir(dirs)? else {
            bail!("the directory {} does not exist", dos(&join(dirs)));
        };
        let existing = self.entries(d)?.into_iter().find(|n| n.matches(name));
        if let Some(n) = &existing {
            if n.is_dir() {
                bail!("{} is a directory", dos(path));
            }
            if n.size == size && self.read_node(n, size as u64).ok().as_deref() == Some(data) {
                return Ok(());
            }
        }
        let cs = self.bpb.cluster_size();
        let chain = self.alloc((data.len() as u64).div_ceil(cs))?;
        for (i, &c) in chain.iter().enumerate() {
            let s = i * cs as usize;
            let mut b = data[s..data.len().min(s + cs as usize)].to_vec();
            b.resize(cs as usize, 0);
            self.write(self.bpb.cluster_offset(c), b, Kind::Data)?;
        }
        let first = chain.first().copied().unwrap_or(0);
        match existing {
            Some(n) => {
                if n.first_cluster != 0 {
                    // The whole chain is freed, also clusters past the file's size (bounded: a
                    // cyclic chain is an error).
                    let old = self.chain(n.first_cluster, u64::MAX, &n.name)?;
                    self.free_chain(&old);
                }
                let mut e = self.read(n.slot, 32)?;
                self.set_cluster_size(&mut e, first, size);
                let (date, time) = self.stamp;
                e[18..20].copy_from_slice(&date.to_le_bytes());
                e[22..24].copy_from_slice(&time.to_le_bytes());
                e[24..26].copy_from_slice(&date.to_le_bytes());
                e[11] |= ATTR_ARCHIVE;
                self.write(n.slot, e, Kind::Dir)?;
                self.changes
                    .push(format!("replace {} ({size} bytes)", dos(path)));
            }
            None => {
                self.add_entry(d, name, ATTR_ARCHIVE, first, size)?;
                self.changes
                    .push(format!("write {} ({size} bytes)", dos(path)));
            }
        }
        Ok(())
    }

    fn set_cluster_size(&self, e: &mut [u8], first: u32, size: u32) {
        let hi = if self.bpb.fat_type == FatType::Fat32 {
            (first >> 16) as u16
        } else {
            0
        };
        e[20..22].copy_from_slice(&hi.to_le_bytes());
        e[26..28].copy_from_slice(&(first as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
    }

    fn raw_entry(&self, short: &[u8; 11], attr: u8, first: u32, size: u32, case: u8) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(short);
        if e[0] == 0xe5 {
            e[0] = 0x05;
        }
        e[11] = attr;
        e[12] = case;
        let (date, time) = self.stamp;
        e[14..16].copy_from_slice(&time.to_le_bytes());
        e[16..18].copy_from_slice(&date.to_le_bytes());
        e[18..20].copy_from_slice(&date.to_le_bytes());
        e[22..24].copy_from_slice(&time.to_le_bytes());
        e[24..26].copy_from_slice(&date.to_le_bytes());
        self.set_cluster_size(&mut e, first, size);
        e
    }

    /// Add an entry named `name` to directory `d` (a long name when it is not a plain 8.3 name).
    fn add_entry(&mut self, d: Dir, name: &str, attr: u8, first: u32, size: u32) -> Result<()> {
        check_name(name)?;
        let mut slots = self.slots(d)?;
        let taken: Vec<[u8; 11]> = {
            let end = slots
                .iter()
                .position(|(_, e)| e[0] == 0)
                .unwrap_or(slots.len());
            slots[..end]
                .iter()
                .filter(|(_, e)| e[0] != 0xe5 && e[11] & 0x3f != ATTR_LFN)
                .map(|(_, e)| e[..11].try_into().unwrap())
                .collect()
        };
        let mut raw: Vec<[u8; 32]> = Vec::new();
        match short_name(name) {
            Some((short, case)) => raw.push(self.raw_entry(&short, attr, first, size, case)),
            None => {
                let short = alias(name, &taken)?;
                raw.extend(lfn_entries(name, lfn_checksum(&short))?);
                raw.push(self.raw_entry(&short, attr, first, size, 0));
            }
        }
        let n = raw.len();
        let free = |slots: &[(u64, [u8; 32])]| {
            let mut run = 0;
            let mut ended = false;
            for (i, (_, e)) in slots.iter().enumerate() {
                ended |= e[0] == 0;
                if ended || e[0] == 0xe5 {
                    run += 1;
                    if run == n {
                        return Some(i + 1 - n);
                    }
                } else {
                    run = 0;
                }
            }
            None
        };
        let at = loop {
            if let Some(at) = free(&slots) {
                break at;
            }
            let Dir::Chain(first_c) = d else {
                bail!("the root directory is full");
            };
            let cs = self.bpb.cluster_size();
            let chain = self.chain(first_c, MAX_DIR_BYTES.div_ceil(cs), "a directory")?;
            if (chain.len() as u64 + 1) * cs > MAX_DIR_BYTES {
                bail!("the directory is full (65536 entries)");
            }
            let c = self.alloc(1)?[0];
            self.set_entry(*chain.last().unwrap(), c);
            let off = self.bpb.cluster_offset(c);
            self.write(off, vec![0u8; cs as usize], Kind::Dir)?;
            for i in 0..cs / ENTRY {
                slots.push((off + i * ENTRY, [0u8; 32]));
            }
        };
        for (i, e) in raw.into_iter().enumerate() {
            self.write(slots[at + i].0, e.to_vec(), Kind::Dir)?;
        }
        Ok(())
    }

    /// The writes that make the planned changes, ordered: file data, FATs, directories, FSInfo.
    pub fn plan(&self) -> Result<Plan> {
        let mut writes = Vec::new();
        let merged = |kind: Kind| -> Result<Vec<Range>> {
            let mut iv: Vec<(u64, u64)> = self
                .pending
                .iter()
                .filter(|p| p.2 == kind)
                .map(|p| (p.0, p.0 + p.1.len() as u64))
                .collect();
            iv.sort();
            let mut out: Vec<(u64, u64)> = Vec::new();
            for (s, e) in iv {
                match out.last_mut() {
                    Some(l) if s <= l.1 => l.1 = l.1.max(e),
                    _ => out.push((s, e)),
                }
            }
            out.into_iter()
                .map(|(s, e)| {
                    Ok(Range {
                        offset: self.base + s,
                        data: self.read(s, (e - s) as usize)?,
                    })
                })
                .collect()
        };
        writes.extend(merged(Kind::Data)?);
        let bps = self.bpb.bytes_per_sector as usize;
        let copies: Vec<u64> = match self.bpb.active_fat {
            Some(a) => vec![a],
            None => (0..self.bpb.num_fats).collect(),
        };
        for copy in copies {
            for (i, (new, old)) in self
                .fat
                .chunks(bps)
                .zip(self.fat_orig.chunks(bps))
                .enumerate()
            {
                if new != old {
                    writes.push(Range {
                        offset: self.base + self.bpb.fat_offset(copy) + (i * bps) as u64,
                        data: new.to_vec(),
                    });
                }
            }
        }
        writes.extend(merged(Kind::Dir)?);
        if let Some(fi) = &self.fsinfo {
            let mut free = fi.free;
            if free != u32::MAX {
                let f = free as i64 - self.allocated as i64 + self.freed.len() as i64;
                free = if (0..=self.bpb.clusters as i64).contains(&f) {
                    f as u32
                } else {
                    u32::MAX
                };
            }
            let next = self.last_alloc.unwrap_or(fi.next);
            if (free, next) != (fi.free, fi.next) {
                let mut b = free.to_le_bytes().to_vec();
                b.extend(next.to_le_bytes());
                writes.push(Range {
                    offset: self.base + fi.offset + 488,
                    data: b,
                });
            }
        }
        let plan = Plan {
            base: self.base,
            len: self.len,
            writes,
            changes: self.changes.clone(),
        };
        plan.check()?;
        Ok(plan)
    }
}

fn lfn_units(e: &[u8; 32], out: &mut [u16]) {
    let pos = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    for (i, &p) in pos.iter().enumerate() {
        out[i] = u16::from_le_bytes([e[p], e[p + 1]]);
    }
}

/// The checksum of an 8.3 name that long-name entries carry.
pub fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |s, &c| (s >> 1 | (s & 1) << 7).wrapping_add(c))
}

fn lfn_entries(name: &str, sum: u8) -> Result<Vec<[u8; 32]>> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > 255 {
        bail!("the name {name:?} is longer than 255 characters");
    }
    let n = units.len().div_ceil(13);
    let mut padded = units.clone();
    if padded.len() < n * 13 {
        padded.push(0);
    }
    padded.resize(n * 13, 0xffff);
    let pos = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    let mut out = Vec::new();
    for ord in (1..=n).rev() {
        let mut e = [0u8; 32];
        e[0] = ord as u8 | if ord == n { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = sum;
        for (i, &p) in pos.iter().enumerate() {
            e[p..p + 2].copy_from_slice(&padded[(ord - 1) * 13 + i].to_le_bytes());
        }
        out.push(e);
    }
    Ok(out)
}

const SHORT_SPECIAL: &[u8] = b"$%'-_@~`!(){}^#&";

fn short_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || SHORT_SPECIAL.contains(&c)
}

/// The 8.3 entry name and the lower-case flags (0x08 base, 0x10 extension) when `name` is a plain 8.3
/// name in one case per part, so no long name is needed.
pub fn short_name(name: &str) -> Option<([u8; 11], u8)> {
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.contains('.') && ext.is_empty())
    {
        return None;
    }
    if !base.bytes().chain(ext.bytes()).all(short_char) {
        return None;
    }
    let mut case = 0;
    for (part, flag) in [(base, 0x08), (ext, 0x10)] {
        let lower = part.bytes().any(|c| c.is_ascii_lowercase());
        let upper = part.bytes().any(|c| c.is_ascii_uppercase());
        if lower && upper {
            return None;
        }
        if lower {
            case |= flag;
        }
    }
    let mut s = [b' '; 11];
    s[..base.len()].copy_from_slice(base.to_ascii_uppercase().as_bytes());
    s[8..8 + ext.len()].copy_from_slice(ext.to_ascii_uppercase().as_bytes());
    Some((s, case))
}

/// A unique 8.3 alias ("LONGNA~1.EFI") for a long name.
fn alias(name: &str, taken: &[[u8; 11]]) -> Result<[u8; 11]> {
    let clean = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && short_char(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let (base, ext) = match name.trim_start_matches('.').rsplit_once('.') {
        Some((b, e)) => (clean(b), clean(e)),
        None => (clean(name), Vec::new()),
    };
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    for n in 1..1_000_000u32 {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut s = [b' '; 11];
        s[..keep].copy_from_slice(&base[..keep]);
        s[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let e = &ext[..ext.len().min(3)];
        s[8..8 + e.len()].copy_from_slice(e);
        if !taken.contains(&s) {
            return Ok(s);
        }
    }
    bail!("no free 8.3 alias for {name:?}")
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.ends_with(['.', ' '])
        || name
            .chars()
            .any(|c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c))
    {
        bail!("{name:?} is not a valid FAT file name");
    }
    Ok(())
}

/// An 8.3 name as Linux shows it: "grubx64.efi" when the lower-case flags are set.
fn shown_short(s: &[u8; 11], case: u8) -> String {
    let part = |b: &[u8], lower: bool| {
        let t = String::from_utf8_lossy(b).trim_end().to_string();
        if lower {
            t.to_ascii_lowercase()
        } else {
            t
        }
    };
    let b = part(&s[..8], case & 0x08 != 0);
    let e = part(&s[8..], case & 0x10 != 0);
    if e.is_empty() {
        b
    } else {
        format!("{b}.{e}")
    }
}

fn split(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        bail!("{path:?}: '.' and '..' are not allowed in a FAT path");
    }
    Ok(parts)
}

fn join(parts: &[&str]) -> String {
    parts.join("/")
}

/// `\EFI\BOOT\BOOTX64.EFI` for messages.
pub fn dos(path: &str) -> String {
    format!(
        "\\{}",
        path.split(['/', '\\'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\\")
    )
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// FAT (date, time) of a Unix time (UTC), clamped to 1980..=2107.
pub fn fat_stamp(unix: i64) -> (u16, u16) {
    let days = unix.div_euclid(86400);
    let secs = unix.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if y < 1980 {
        return ((1 << 5) | 1, 0);
    }
    if y > 2107 {
        return ((127 << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29);
    }
    let date = (((y - 1980) << 9) | (m << 5) | d) as u16;
    let time = (((secs / 3600) << 11) | ((secs % 3600 / 60) << 5) | (secs % 60 / 2)) as u16;
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_case_flags() {
        assert_eq!(short_name("BOOTX64.EFI"), Some((*b"BOOTX64 EFI", 0)));
        assert_eq!(short_name("grubx64.efi"), Some((*b"GRUBX64 EFI", 0x18)));
        assert_eq!(short_name("grub.cfg"), Some((*b"GRUB    CFG", 0x18)));
        assert_eq!(short_name("EFI"), Some((*b"EFI        ", 0)));
        assert_eq!(short_name("debian"), Some((*b"DEBIAN     ", 0x08)));
        assert_eq!(short_name("Debian"), None, "mixed case needs a long name");
        assert_eq!(short_name("shimx64.efi.signed"), None);
        assert_eq!(short_name("a long name"), None);
        assert_eq!(short_name("toolongname.efi"), None);
        assert_eq!(short_name(".hidden"), None);
        assert_eq!(short_name("x."), None);
    }

    #[test]
    fn aliases_are_unique() {
        let a = alias("shimx64.efi.signed", &[]).unwrap();
        assert_eq!(&a, b"SHIMX6~1SIG");
        let b = alias("shimx64.efi.signed", &[a]).unwrap();
        assert_eq!(&b, b"SHIMX6~2SIG");
        assert_eq!(&alias("ä b", &[]).unwrap(), b"_B~1       ");
    }

    #[test]
    fn checksum_and_long_entries() {
        // The checksum of "BOOTX64 EFI" as mtools writes it.
        let s = *b"SHIMX6~1SIG";
        let sum = lfn_checksum(&s);
        let e = lfn_entries("shimx64.efi.signed", sum).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0][0], 0x42);
        assert_eq!(e[1][0], 0x01);
        let mut units = [0u16; 26];
        lfn_units(&e[1], &mut units[..13]);
        lfn_units(&e[0], &mut units[13..]);
        let end = units.iter().position(|&u| u == 0).unwrap();
        assert_eq!(
            String::from_utf16(&units[..end]).unwrap(),
            "shimx64.efi.signed"
        );
        assert!(lfn_entries(&"x".repeat(256), 0).is_err());
    }

    #[test]
    fn stamps() {
        // 2026-12-02 08:21:58 UTC
        let (d, t) = fat_stamp(1_796_199_718);
        assert_eq!((d >> 9, (d >> 5) & 15, d & 31), (46, 12, 2));
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (8, 21, 58));
        assert_eq!(fat_stamp(0), ((1 << 5) | 1, 0));
    }

    #[test]
    fn paths() {
        assert_eq!(
            split("\\EFI\\BOOT\\BOOTX64.EFI").unwrap(),
            vec!["EFI", "BOOT", "BOOTX64.EFI"]
        );
        assert_eq!(split("/EFI//debian/").unwrap(), vec!["EFI", "debian"]);
        assert!(split("EFI/../x").is_err());
        assert_eq!(dos("EFI/BOOT/BOOTX64.EFI"), "\\EFI\\BOOT\\BOOTX64.EFI");
    }

    #[test]
    fn boot_sector_checks() {
        let mut s = vec![0u8; 512];
        assert!(Bpb::parse(&s, 1 << 20).is_err());
        s[510] = 0x55;
        s[511] = 0xaa;
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14] = 4;
        s[16] = 2;
        s[17..19].copy_from_slice(&512u16.to_le_bytes());
        s[19..21].copy_from_slice(&40960u16.to_le_bytes()); // 20 MiB
        s[22..24].copy_from_slice(&40u16.to_le_bytes());
        let b = Bpb::parse(&s, 20 << 20).unwrap();
        assert_eq!(b.fat_type, FatType::Fat16);
        assert_eq!(b.clusters, (40960 - 4 - 80 - 32) / 4);
        assert!(Bpb::parse(&s, (20 << 20) - 1)
            .unwrap_err()
            .to_string()
            .contains("larger than its partition"));
        let mut t = s.clone();
        t[13] = 3;
        assert!(Bpb::parse(&t, 20 << 20).is_err());
        let mut t = s.clone();
        t[22..24].copy_from_slice(&10u16.to_le_bytes());
        assert!(Bpb::parse(&t, 20 << 20)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        let mut t = s.clone();
        t[16] = 0;
        assert!(Bpb::parse(&t, 20 << 20).is_err());
    }
}
