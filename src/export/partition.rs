//! Partition tables: MBR (with extended/logical partitions) and GPT, parsed from raw sectors.

use anyhow::{bail, Result};

pub const SECTOR: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based number as the kernel names it (MBR logical partitions start at 5).
    pub number: u32,
    /// Byte offset and length on the disk.
    pub start: u64,
    pub len: u64,
    /// MBR type byte as hex ("83") or GPT type GUID (lowercase, dashed).
    pub ptype: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    None,
    Mbr(Vec<Partition>),
    Gpt(Vec<Partition>),
}

impl Table {
    pub fn partitions(&self) -> &[Partition] {
        match self {
            Table::None => &[],
            Table::Mbr(p) | Table::Gpt(p) => p,
        }
    }
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Parse the partition table of a disk of `disk_size` bytes. `read(offset, len)` returns bytes of the disk.
pub fn parse(disk_size: u64, read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>>) -> Result<Table> {
    if disk_size < SECTOR {
        return Ok(Table::None);
    }
    let mbr = read(0, SECTOR as usize)?;
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return Ok(Table::None);
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (e[4], le32(e, 8) as u64, le32(e, 12) as u64)
        })
        .collect();
    if entries.iter().any(|e| e.0 == 0xee) {
        if let Some(t) = parse_gpt(disk_size, read)? {
            return Ok(t);
        }
    }
    let mut parts = Vec::new();
    for (i, &(t, lba, count)) in entries.iter().enumerate() {
        if t == 0 || count == 0 {
            continue;
        }
        parts.push(Partition {
            number: i as u32 + 1,
            start: lba * SECTOR,
            len: count * SECTOR,
            ptype: format!("{t:02x}"),
        });
        if is_extended(t) {
            // The chain of EBRs: entry 0 is a logical partition relative to this EBR, entry 1 the next
            // EBR relative to the extended partition's start.
            let mut ebr = lba;
            let mut number = 5;
            for _ in 0..256 {
                if ebr * SECTOR + SECTOR > disk_size {
                    bail!(
                        "extended partition chain points past the end of the disk (sector {ebr})"
                    );
                }
                let s = read(ebr * SECTOR, SECTOR as usize)?;
                if s[510] != 0x55 || s[511] != 0xaa {
                    break;
                }
                let l = &s[446..462];
                if l[4] != 0 && le32(l, 12) != 0 {
                    parts.push(Partition {
                        number,
                        start: (ebr + le32(l, 8) as u64) * SECTOR,
                        len: le32(l, 12) as u64 * SECTOR,
                        ptype: format!("{:02x}", l[4]),
                    });
                    number += 1;
                }
                let n = &s[462..478];
                if !is_extended(n[4]) || le32(n, 8) == 0 {
                    break;
                }
                ebr = lba + le32(n, 8) as u64;
            }
        }
    }
    Ok(Table::Mbr(parts))
}

fn parse_gpt(
    disk_size: u64,
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>>,
) -> Result<Option<Table>> {
    let h = read(SECTOR, SECTOR as usize)?;
    if &h[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let entries_lba = le64(&h, 72);
    let n = le32(&h, 80) as u64;
    let esize = le32(&h, 84) as u64;
    // Checked: the entry array must lie on the disk, and is at most 4 MiB (128 entries of 128 bytes is
    // the norm).
    let array_end = entries_lba
        .checked_mul(SECTOR)
        .and_then(|o| o.checked_add(n * esize));
    if !(128..=4096).contains(&esize)
        || n > 65536
        || n * esize > 4 << 20
        || array_end.is_none_or(|e| e > disk_size)
    {
        bail!("GPT header has implausible entries (lba {entries_lba}, {n} x {esize} bytes)");
    }
    let buf = read(entries_lba * SECTOR, (n * esize) as usize)?;
    let mut parts = Vec::new();
    for i in 0..n as usize {
        let e = &buf[i * esize as usize..(i + 1) * esize as usize];
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        if last < first {
            continue;
        }
        // An entry whose byte range does not fit in 64 bits is no partition of this disk.
        let (Some(start), Some(len)) = (
            first.checked_mul(SECTOR),
            (last - first)
                .checked_add(1)
                .and_then(|c| c.checked_mul(SECTOR)),
        ) else {
            continue;
        };
        if start.checked_add(len).is_none() {
            continue;
        }
        parts.push(Partition {
            number: i as u32 + 1,
            start,
            len,
            ptype: guid(&e[0..16]),
        });
    }
    Ok(Some(Table::Gpt(parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> Vec<u8> {
        vec![0u8; 64 << 20]
    }

    fn put_entry(d: &mut [u8], sector_off: usize, idx: usize, t: u8, lba: u32, count: u32) {
        let o = sector_off + 446 + 16 * idx;
        d[o + 4] = t;
        d[o + 8..o + 12].copy_from_slice(&lba.to_le_bytes());
        d[o + 12..o + 16].copy_from_slice(&count.to_le_bytes());
        d[sector_off + 510] = 0x55;
        d[sector_off + 511] = 0xaa;
    }

    fn parse_vec(d: &[u8]) -> Table {
        let mut r = |o: u64, l: usize| Ok(d[o as usize..o as usize + l].to_vec());
        parse(d.len() as u64, &mut r).unwrap()
    }

    #[test]
    fn crafted_gpt_values_do_not_overflow() {
        let mut d = vec![0u8; 1 << 20];
        put_entry(&mut d, 0, 0, 0xee, 1, 2047);
        d[512..520].copy_from_slice(b"EFI PART");
        let set_hdr = |d: &mut Vec<u8>, lba: u64, n: u32, esize: u32| {
            d[512 + 72..512 + 80].copy_from_slice(&lba.to_le_bytes());
            d[512 + 80..512 + 84].copy_from_slice(&n.to_le_bytes());
            d[512 + 84..512 + 88].copy_from_slice(&esize.to_le_bytes());
        };
        let r = |d: &[u8]| {
            let mut rd = |o: u64, l: usize| {
                anyhow::ensure!(o as usize + l <= d.len(), "read past the end");
                Ok(d[o as usize..o as usize + l].to_vec())
            };
            parse(d.len() as u64, &mut rd)
        };
        // The entry array's LBA near 2^64: (lba + 1) * 512 would wrap to a small number.
        set_hdr(&mut d, u64::MAX / 512 + 2, 128, 128);
        assert!(r(&d).is_err());
        // 65536 entries of 4 KiB: 256 MiB to allocate.
        set_hdr(&mut d, 2, 65536, 4096);
        assert!(r(&d).is_err());
        // Entries whose sectors do not fit in 64-bit bytes are no partitions; a sane one is kept.
        set_hdr(&mut d, 2, 4, 128);
        let e = |d: &mut Vec<u8>, i: usize, first: u64, last: u64| {
            let o = 1024 + i * 128;
            d[o] = 0xaf;
            d[o + 32..o + 40].copy_from_slice(&first.to_le_bytes());
            d[o + 40..o + 48].copy_from_slice(&last.to_le_bytes());
        };
        e(&mut d, 0, u64::MAX / 256, u64::MAX / 256 + 10);
        e(&mut d, 1, 0, u64::MAX);
        e(&mut d, 2, 34, 1000);
        let t = r(&d).unwrap();
        assert_eq!(t.partitions().len(), 1, "{t:?}");
        assert_eq!(t.partitions()[0].start, 34 * 512);
    }

    #[test]
    fn no_signature_no_table() {
        assert_eq!(parse_vec(&disk()), Table::None);
    }

    #[test]
    fn mbr_with_logical_partitions() {
        let mut d = disk();
        put_entry(&mut d, 0, 0, 0x83, 63, 2048 - 63);
        put_entry(&mut d, 0, 1, 0x05, 4096, 20000);
        // First EBR at 4096: logical at +63, next EBR at ext+10000.
        put_entry(&mut d, 4096 * 512, 0, 0x82, 63, 5000);
        put_entry(&mut d, 4096 * 512, 1, 0x05, 10000, 8000);
        put_entry(&mut d, (4096 + 10000) * 512, 0, 0x83, 2048, 4000);
        let t = parse_vec(&d);
        let p = t.partitions();
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p[0].start, 63 * 512);
        assert_eq!(p[1].ptype, "05");
        assert_eq!(
            (p[2].number, p[2].start, p[2].ptype.as_str()),
            (5, (4096 + 63) * 512, "82")
        );
        assert_eq!(
            (p[3].number, p[3].start, p[3].len),
            (6, (14096 + 2048) * 512, 4000 * 512)
        );
    }

    #[test]
    fn ebr_loop_is_bounded() {
        let mut d = disk();
        put_entry(&mut d, 0, 0, 0x05, 2048, 20000);
        put_entry(&mut d, 2048 * 512, 0, 0x83, 63, 100);
        put_entry(&mut d, 2048 * 512, 1, 0x05, 0, 100); // points at itself: stop
        assert_eq!(parse_vec(&d).partitions().len(), 2);
    }

    #[test]
    fn gpt_entries() {
        let mut d = disk();
        put_entry(&mut d, 0, 0, 0xee, 1, 0xffff_ffff);
        let h = 512;
        d[h..h + 8].copy_from_slice(b"EFI PART");
        d[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        d[h + 80..h + 84].copy_from_slice(&128u32.to_le_bytes());
        d[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 1024 + 128; // second entry
        d[e] = 0xaf; // some type guid
        d[e + 32..e + 40].copy_from_slice(&2048u64.to_le_bytes());
        d[e + 40..e + 48].copy_from_slice(&4095u64.to_le_bytes());
        let t = parse_vec(&d);
        match &t {
            Table::Gpt(p) => {
                assert_eq!(p.len(), 1);
                assert_eq!(
                    (p[0].number, p[0].start, p[0].len),
                    (2, 2048 * 512, 2048 * 512)
                );
                assert!(p[0].ptype.starts_with("000000af-"));
            }
            _ => panic!("{t:?}"),
        }
    }
}
