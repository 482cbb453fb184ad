//! ext2/3/4 block allocation: superblock, group descriptors and block bitmaps, so free blocks can be
//! exported as zeros without being read. Anything we do not understand falls back to a full copy.

use super::source::ReadAt;
use anyhow::{bail, Context, Result};

pub const MAGIC_OFFSET: u64 = 1024 + 0x38;

const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
/// Every incompat feature whose presence does not change what a block bitmap means.
const INCOMPAT_KNOWN: u32 = 0x2
    | 0x4
    | 0x10
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x20000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const BG_BLOCK_UNINIT: u16 = 0x2;

/// Parsed superblock fields we need.
#[derive(Debug, Clone)]
pub struct Super {
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub desc_size: u64,
    pub incompat: u32,
    pub ro_compat: u32,
    pub compat: u32,
    pub first_meta_bg: u64,
    pub backup_bgs: [u32; 2],
    pub reserved_gdt: u64,
    pub inodes_per_group: u64,
    pub inode_size: u64,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Is `sb` (the 1024 bytes at offset 1024 of a partition) an ext2/3/4 superblock?
pub fn is_ext(sb: &[u8]) -> bool {
    sb.len() >= 1024 && le16(sb, 0x38) == 0xef53
}

/// Parse a superblock. Err = a feature or value we do not support (the caller copies the whole partition).
pub fn parse_super(sb: &[u8]) -> Result<Super> {
    if !is_ext(sb) {
        bail!("no ext2/3/4 superblock");
    }
    let log = le32(sb, 0x18);
    if log > 6 {
        bail!("block size 1024<<{log} is not supported");
    }
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let compat = le32(sb, 0x5c);
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        bail!("unsupported incompatible feature bits {unknown:#x}");
    }
    if incompat & (INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV) != 0 {
        bail!("compression/journal-device filesystems are not supported");
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        bail!("the journal needs recovery (filesystem not cleanly unmounted or frozen): its bitmaps may be stale");
    }
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        bail!("bigalloc (cluster bitmaps) is not supported");
    }
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let mut blocks_count = le32(sb, 0x4) as u64;
    if is64 {
        blocks_count |= (le32(sb, 0x150) as u64) << 32;
    }
    let desc_size = if is64 { le16(sb, 0xfe) as u64 } else { 32 };
    if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
        bail!("implausible group descriptor size {desc_size}");
    }
    let s = Super {
        block_size: 1024 << log,
        blocks_count,
        first_data_block: le32(sb, 0x14) as u64,
        blocks_per_group: le32(sb, 0x20) as u64,
        desc_size,
        incompat,
        ro_compat,
        compat,
        first_meta_bg: le32(sb, 0x104) as u64,
        backup_bgs: [le32(sb, 0x24c), le32(sb, 0x250)],
        reserved_gdt: le16(sb, 0xce) as u64,
        inodes_per_group: le32(sb, 0x28) as u64,
        inode_size: if le32(sb, 0x4c) == 0 {
            128
        } else {
            le16(sb, 0x58) as u64
        },
    };
    if s.blocks_per_group == 0 || s.blocks_per_group > s.block_size * 8 {
        bail!("implausible blocks per group {}", s.blocks_per_group);
    }
    // Every on-disk value that sizes or places something is checked before it is used: a corrupt or
    // crafted superblock is an error (the partition is then copied whole), never an overflow.
    if s.first_data_block > 1 || s.first_data_block >= s.blocks_count {
        bail!(
            "implausible first data block {} (of {} blocks)",
            s.first_data_block,
            s.blocks_count
        );
    }
    if s.blocks_count.checked_mul(s.block_size).is_none() {
        bail!(
            "implausible block count {} (of {} bytes): larger than any disk",
            s.blocks_count,
            s.block_size
        );
    }
    if s.inodes_per_group == 0 || s.inodes_per_group > s.block_size * 8 {
        bail!("implausible inodes per group {}", s.inodes_per_group);
    }
    if s.inode_size < 128 || s.inode_size > s.block_size || !s.inode_size.is_power_of_two() {
        bail!("implausible inode size {}", s.inode_size);
    }
    Ok(s)
}

impl Super {
    pub fn groups(&self) -> u64 {
        (self.blocks_count - self.first_data_block).div_ceil(self.blocks_per_group)
    }

    fn is_power_of(mut g: u64, p: u64) -> bool {
        while g > 1 && g % p == 0 {
            g /= p;
        }
        g == 1
    }

    /// Does group `g` hold a superblock backup (and so a copy of the descriptors)?
    pub fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] as u64 || g == self.backup_bgs[1] as u64;
        }
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        g == 1 || Self::is_power_of(g, 3) || Self::is_power_of(g, 5) || Self::is_power_of(g, 7)
    }

    /// Filesystem block number of descriptor block `i`.
    pub fn desc_block(&self, i: u64) -> u64 {
        let per_block = self.block_size / self.desc_size;
        if self.incompat & INCOMPAT_META_BG != 0 && i >= self.first_meta_bg {
            let g = i * per_block;
            self.first_data_block + g * self.blocks_per_group + u64::from(self.has_super(g))
        } else {
            self.first_data_block + 1 + i
        }
    }
}

/// Per-group bitmap location; `None` = no valid bitmap (BLOCK_UNINIT): read and zero-detect the group.
#[derive(Debug)]
pub struct Ext4Map {
    pub sb: Super,
    /// Partition offset on the disk.
    pub base: u64,
    bitmaps: Vec<Option<u64>>,
    /// Every group's bitmaps and inode table (start block, blocks), sorted: what a BLOCK_UNINIT group
    /// may hold besides its superblock/descriptor backups.
    meta: Vec<(u64, u64)>,
    desc_blocks: u64,
    cached: Option<(u64, Vec<u8>)>,
}

impl Ext4Map {
    /// Read the superblock and all group descriptors of the filesystem at byte `base` of `dev`.
    pub fn open(dev: &dyn ReadAt, base: u64, part_len: u64) -> Result<Ext4Map> {
        let mut sbuf = vec![0u8; 1024];
        dev.read_exact_at(&mut sbuf, base + 1024)?;
        let sb = parse_super(&sbuf)?;
        // parse_super checked that the product fits.
        if sb.blocks_count * sb.block_size > part_len {
            bail!(
                "filesystem ({} blocks of {}) is larger than its partition ({part_len} bytes)",
                sb.blocks_count,
                sb.block_size
            );
        }
        let groups = sb.groups();
        let per_block = sb.block_size / sb.desc_size;
        let nblocks = groups.div_ceil(per_block);
        let mut bitmaps = Vec::with_capacity(groups as usize);
        let mut meta = Vec::with_capacity(3 * groups as usize);
        let itable_blocks = (sb.inodes_per_group * sb.inode_size).div_ceil(sb.block_size);
        let mut buf = vec![0u8; sb.block_size as usize];
        for i in 0..nblocks {
            let blk = sb.desc_block(i);
            dev.read_exact_at(&mut buf, base + blk * sb.block_size)
                .with_context(|| format!("reading group descriptor block {blk}"))?;
            for j in 0..per_block {
                let g = i * per_block + j;
                if g >= groups {
                    break;
                }
                let d = &buf[(j * sb.desc_size) as usize..((j + 1) * sb.desc_size) as usize];
                let mut bm = le32(d, 0) as u64;
                if sb.desc_size >= 64 {
                    bm |= (le32(d, 0x20) as u64) << 32;
                }
                let (mut ib, mut it) = (le32(d, 4) as u64, le32(d, 8) as u64);
                if sb.desc_size >= 64 {
                    ib |= (le32(d, 0x24) as u64) << 32;
                    it |= (le32(d, 0x28) as u64) << 32;
                }
                if ib >= sb.blocks_count
                    || it
                        .checked_add(itable_blocks)
                        .is_none_or(|end| end > sb.blocks_count)
                {
                    bail!("group {g} has an invalid inode bitmap or table location ({ib}, {it})");
                }
                meta.push((bm, 1));
                meta.push((ib, 1));
                meta.push((it, itable_blocks));
                let flags = le16(d, 0x12);
                if flags & BG_BLOCK_UNINIT != 0 {
                    bitmaps.push(None);
                } else {
                    if bm == 0 || bm >= sb.blocks_count {
                        bail!("group {g} has an invalid block bitmap location {bm}");
                    }
                    bitmaps.push(Some(bm));
                }
            }
        }
        meta.sort_unstable();
        Ok(Ext4Map {
            sb,
            base,
            bitmaps,
            meta,
            desc_blocks: nblocks,
            cached: None,
        })
    }

    /// A BLOCK_UNINIT group has no bitmap on disk: like the kernel, treat as used its superblock and
    /// descriptor backups and any group's bitmaps/inode table inside it, and everything else as free.
    /// With meta_bg (backup descriptors elsewhere) such groups are read instead.
    fn uninit_free(&self, g: u64, gstart: u64, from: u64, to: u64, out: &mut Vec<(u64, u64)>) {
        if self.sb.incompat & INCOMPAT_META_BG != 0 {
            return;
        }
        let mut used: Vec<(u64, u64)> = Vec::new();
        if self.sb.has_super(g) {
            used.push((gstart, gstart + 1 + self.desc_blocks + self.sb.reserved_gdt));
        }
        let gend = gstart + self.sb.blocks_per_group;
        let i = self.meta.partition_point(|m| m.0 + m.1 <= gstart);
        for &(s, n) in &self.meta[i..] {
            if s >= gend {
                break;
            }
            used.push((s, s + n));
        }
        used.sort_unstable();
        let bs = self.sb.block_size;
        let mut push = |a: u64, b: u64| {
            if a < b {
                let (s, e) = (self.base + a * bs, self.base + b * bs);
                match out.last_mut() {
                    Some(l) if l.1 == s => l.1 = e,
                    _ => out.push((s, e)),
                }
            }
        };
        let mut cur = from;
        for (s, e) in used {
            let (s, e) = (s.max(from), e.min(to));
            if s >= e {
                continue;
            }
            push(cur, s);
            cur = cur.max(e);
        }
        push(cur, to);
    }

    /// Byte ranges (disk offsets) within `[start, end)` that are free blocks of this filesystem.
    pub fn free_ranges(
        &mut self,
        dev: &dyn ReadAt,
        start: u64,
        end: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let bs = self.sb.block_size;
        let rel_s = start.saturating_sub(self.base);
        let rel_e = end.saturating_sub(self.base);
        let first = rel_s.div_ceil(bs).max(self.sb.first_data_block);
        let last = (rel_e / bs).min(self.sb.blocks_count); // exclusive
        let mut b = first;
        while b < last {
            let g = (b - self.sb.first_data_block) / self.sb.blocks_per_group;
            let gstart = self.sb.first_data_block + g * self.sb.blocks_per_group;
            let gend = (gstart + self.sb.blocks_per_group).min(last);
            let Some(bm) = self.bitmaps.get(g as usize).copied().flatten() else {
                self.uninit_free(g, gstart, b, gend, out);
                b = gend;
                continue;
            };
            if self.cached.as_ref().map(|c| c.0) != Some(g) {
                let mut buf = vec![0u8; bs as usize];
                dev.read_exact_at(&mut buf, self.base + bm * bs)
                    .with_context(|| format!("reading the block bitmap of group {g}"))?;
                self.cached = Some((g, buf));
            }
            let bits = &self.cached.as_ref().unwrap().1;
            while b < gend {
                let i = (b - gstart) as usize;
                if bits[i / 8] & (1 << (i % 8)) == 0 {
                    let s = self.base + b * bs;
                    match out.last_mut() {
                        Some(l) if l.1 == s => l.1 = s + bs,
                        _ => out.push((s, s + bs)),
                    }
                }
                b += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x4..0x8].copy_from_slice(&100_000u32.to_le_bytes());
        sb[0x18] = 2; // 4096
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        sb[0x64] = 1; // sparse_super
        sb[0x28..0x2c].copy_from_slice(&8192u32.to_le_bytes());
        let s = parse_super(&sb).unwrap();
        assert_eq!(s.block_size, 4096);
        assert_eq!(s.groups(), 4);
        let backups: Vec<u64> = (0..30).filter(|&g| s.has_super(g)).collect();
        assert_eq!(backups, vec![0, 1, 3, 5, 7, 9, 25, 27]);
        assert_eq!(s.desc_block(0), 1);
    }

    /// A valid 4 KiB-block superblock of 100000 blocks, to corrupt.
    fn good_super() -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x4..0x8].copy_from_slice(&100_000u32.to_le_bytes());
        sb[0x18] = 2;
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        sb[0x28..0x2c].copy_from_slice(&8192u32.to_le_bytes());
        sb
    }

    #[test]
    fn crafted_superblocks_are_errors_not_overflows() {
        assert!(parse_super(&good_super()).is_ok());
        let bad = |f: &dyn Fn(&mut Vec<u8>), what: &str| {
            let mut sb = good_super();
            f(&mut sb);
            let e = parse_super(&sb).expect_err(what).to_string();
            assert!(e.contains("implausible"), "{what}: {e}");
        };
        // s_first_data_block = 0xffffffff: blocks_count - first_data_block would wrap.
        bad(
            &|sb| sb[0x14..0x18].copy_from_slice(&u32::MAX.to_le_bytes()),
            "first data block",
        );
        bad(
            &|sb| sb[0x4..0x8].copy_from_slice(&0u32.to_le_bytes()),
            "no blocks",
        );
        // 64-bit block count of 2^63: blocks_count * block_size would wrap.
        bad(
            &|sb| {
                sb[0x60] = INCOMPAT_64BIT as u8;
                sb[0xfe] = 64;
                sb[0x150..0x154].copy_from_slice(&0x8000_0000u32.to_le_bytes());
            },
            "block count",
        );
        bad(
            &|sb| sb[0x28..0x2c].copy_from_slice(&0u32.to_le_bytes()),
            "inodes per group",
        );
        bad(
            &|sb| {
                sb[0x4c] = 1;
                sb[0x58..0x5a].copy_from_slice(&0xffffu16.to_le_bytes());
            },
            "inode size",
        );
    }

    #[test]
    fn refuses_recover_and_unknown_features() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x4] = 100;
        sb[0x20] = 8;
        sb[0x60] = 0x4;
        assert!(parse_super(&sb)
            .unwrap_err()
            .to_string()
            .contains("recovery"));
        sb[0x60] = 0;
        sb[0x63] = 0x80; // 0x80000000 unknown
        assert!(parse_super(&sb).is_err());
        sb[0x63] = 0;
        sb[0x38] = 0;
        assert!(parse_super(&sb).is_err());
    }

    #[test]
    fn real_mkfs_free_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        for (opts, bs) in [
            (vec!["-t", "ext4", "-b", "4096"], 4096u64),
            (vec!["-t", "ext2", "-b", "1024"], 1024),
        ] {
            let st = std::process::Command::new("mke2fs")
                .args(["-q", "-F"])
                .args(&opts)
                .arg(&img)
                .status();
            let st = st.expect("running mke2fs (package e2fsprogs, installed by x.sh)");
            assert!(st.success());
            let f = std::fs::File::open(&img).unwrap();
            let mut m = Ext4Map::open(&f, 0, 64 << 20).unwrap();
            assert_eq!(m.sb.block_size, bs);
            let mut out = Vec::new();
            m.free_ranges(&f, 0, 64 << 20, &mut out).unwrap();
            let free: u64 = out.iter().map(|r| r.1 - r.0).sum();
            // A fresh filesystem is mostly free, and its first blocks (superblock, descriptors) are not.
            assert!(free > 40 << 20, "free {free}");
            assert!(out[0].0 > 2048);
        }
    }
}
