//! What the exporter knows about the guest disk: regions that are always copied (partition tables,
//! boot code, the gap before the first partition, unknown partitions), ext2/3/4 partitions whose free
//! blocks become zeros without being read, and swap partitions of which only the header page is kept.

use super::ext4::{self, Ext4Map};
use super::partition::{self, Table};
use super::source::ReadAt;
use super::swap;
use anyhow::Result;

pub enum Kind {
    /// Read everything and zero-detect.
    Copy,
    Ext4(Box<Ext4Map>),
    /// Swap: keep the first page, the rest is free.
    Swap,
}

pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: Kind,
}

pub struct Layout {
    pub size: u64,
    pub table: Table,
    pub regions: Vec<Region>,
    /// Human-readable notes (one per partition: what we do with it, and fallbacks).
    pub notes: Vec<String>,
    cursor: usize,
}

impl Layout {
    /// Everything copied (no partition knowledge): `--no-fs-skip`.
    pub fn plain(size: u64) -> Layout {
        Layout {
            size,
            table: Table::None,
            regions: Vec::new(),
            notes: Vec::new(),
            cursor: 0,
        }
    }

    /// Inspect the disk: partition table, then each partition's content.
    pub fn inspect(dev: &dyn ReadAt, size: u64) -> Result<Layout> {
        let mut read = |off: u64, len: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; len];
            dev.read_exact_at(&mut b, off)?;
            Ok(b)
        };
        let table = match partition::parse(size, &mut read) {
            Ok(t) => t,
            Err(e) => {
                let mut l = Layout::plain(size);
                l.notes.push(format!(
                    "partition table not understood ({e:#}): copying every byte"
                ));
                return Ok(l);
            }
        };
        let mut l = Layout::plain(size);
        let mut parts: Vec<partition::Partition> = table.partitions().to_vec();
        parts.sort_by_key(|p| p.start);
        // A whole-disk filesystem without a partition table is inspected like one partition.
        if parts.is_empty() {
            parts.push(partition::Partition {
                number: 0,
                start: 0,
                len: size,
                ptype: "disk".into(),
            });
        }
        let mut last_end = 0u64;
        for p in &parts {
            let name = if p.number == 0 {
                "disk".to_string()
            } else {
                format!("partition {}", p.number)
            };
            if p.start < last_end
                || p.start.checked_add(p.len).is_none_or(|end| end > size)
                || p.len < 8192
            {
                l.notes.push(format!(
                    "{name}: overlaps another or lies past the end of the disk: copied"
                ));
                continue;
            }
            if matches!(p.ptype.as_str(), "05" | "0f" | "85") {
                continue; // extended container: its EBRs are copied, logicals listed separately
            }
            let mut head = vec![0u8; 4096];
            dev.read_exact_at(&mut head, p.start)?;
            let mut sb = vec![0u8; 1024];
            dev.read_exact_at(&mut sb, p.start + 1024)?;
            if swap::is_swap(&head) {
                l.regions.push(Region {
                    start: p.start,
                    end: p.start + p.len,
                    kind: Kind::Swap,
                });
                l.notes.push(format!(
                    "{name}: swap, header page kept, the rest exported as zeros"
                ));
                last_end = p.start + p.len;
            } else if ext4::is_ext(&sb) {
                match Ext4Map::open(dev, p.start, p.len) {
                    Ok(m) => {
                        l.notes.push(format!(
                            "{name}: ext2/3/4, {} groups of {} x {} bytes: free blocks exported as zeros",
                            m.sb.groups(),
                            m.sb.blocks_per_group,
                            m.sb.block_size
                        ));
                        l.regions.push(Region {
                            start: p.start,
                            end: p.start + p.len,
                            kind: Kind::Ext4(Box::new(m)),
                        });
                        last_end = p.start + p.len;
                    }
                    Err(e) => l
                        .notes
                        .push(format!("{name}: ext2/3/4 copied whole: {e:#}")),
                }
            } else {
                l.notes
                    .push(format!("{name} (type {}): read and zero-detected", p.ptype));
            }
        }
        l.table = table;
        Ok(l)
    }

    /// Byte ranges within `[start, end)` that are known free (ext free blocks, swap pages after the
    /// header). Ranges are sector-aligned and sorted; `start` must not decrease between calls.
    pub fn free_ranges(
        &mut self,
        dev: &dyn ReadAt,
        start: u64,
        end: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        out.clear();
        while self.cursor < self.regions.len() && self.regions[self.cursor].end <= start {
            self.cursor += 1;
        }
        let mut i = self.cursor;
        while i < self.regions.len() && self.regions[i].start < end {
            let r = &mut self.regions[i];
            let s = start.max(r.start);
            let e = end.min(r.end);
            match &mut r.kind {
                Kind::Copy => {}
                Kind::Swap => {
                    let s = s.max(r.start + swap::PAGE);
                    if s < e {
                        out.push((s, e));
                    }
                }
                Kind::Ext4(m) => m.free_ranges(dev, s, e, out)?,
            }
            i += 1;
        }
        Ok(())
    }
}
