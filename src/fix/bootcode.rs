//! The boot code `grub-install` writes outside any filesystem on a BIOS disk: the first 440 bytes of the
//! MBR (boot.img) and the embedding area that holds core.img — the gap between the MBR and the first
//! partition on an MBR disk, the BIOS boot partition on a GPT disk. It is saved before grub-install runs
//! and written back by rollback, but only while the disk still has the same partition table (the same
//! disk signature, partitions and types): a rollback after the disk was repartitioned, or on another
//! machine where the device name now means another disk, leaves it alone and says so.
//!
//! The disk signature and partition table (bytes 440-511 of the MBR) are never written.

use crate::export::partition::{self, Table};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// GPT type of the partition GRUB embeds core.img in.
pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
/// MBR boot code: what precedes the disk signature.
const MBR_CODE: u64 = 440;
/// Larger embedding areas are saved up to this size (core.img is well below it).
const MAX_AREA: u64 = 8 << 20;

/// Byte ranges (offset, length) grub-install may write for a BIOS boot from this disk; None when the
/// disk has no partition table (no embedding area: grub-install refuses such a disk).
pub fn areas(table: &Table, disk_size: u64) -> Option<Vec<(u64, u64)>> {
    let mut v = vec![(0, MBR_CODE)];
    match table {
        Table::None => return None,
        Table::Mbr(parts) => {
            let first = parts
                .iter()
                .map(|p| p.start)
                .min()
                .unwrap_or(disk_size)
                .min(disk_size);
            let end = first.min(MAX_AREA);
            if end > partition::SECTOR {
                v.push((partition::SECTOR, end - partition::SECTOR));
            }
        }
        Table::Gpt(parts) => {
            if let Some(p) = parts.iter().find(|p| p.ptype == BIOS_BOOT) {
                v.push((p.start, p.len.min(MAX_AREA)));
            }
        }
    }
    Some(v)
}

/// What must be unchanged for a restore to be safe: the disk signature, the boot signature and the
/// parsed partition table (every partition's number, place, size and type).
pub fn identity(sector0: &[u8], table: &Table) -> String {
    let mut s = hex::encode(&sector0[MBR_CODE as usize..512]);
    s.push_str(&format!("{table:?}"));
    crate::fix::atomic::sha256(s.as_bytes())
}

/// A disk opened for reading its table and boot areas.
pub struct Disk {
    file: std::fs::File,
    size: u64,
    path: String,
}

impl Disk {
    pub fn open(path: &str, write: bool) -> Result<Disk> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .with_context(|| format!("opening {path}"))?;
        let size = crate::export::source::device_size(&file, Path::new(path))?;
        Ok(Disk {
            file,
            size,
            path: path.to_string(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, off)
            .with_context(|| format!("reading {} at byte {off}", self.path))?;
        Ok(b)
    }

    /// The partition table, the first sector, and the identity of both.
    pub fn table(&self) -> Result<(Table, Vec<u8>, String)> {
        if self.size < partition::SECTOR {
            bail!("{} is smaller than one sector", self.path);
        }
        let table = partition::parse(self.size, &mut |o, l| self.read_at(o, l))
            .with_context(|| format!("reading the partition table of {}", self.path))?;
        let s0 = self.read_at(0, partition::SECTOR as usize)?;
        let id = identity(&s0, &table);
        Ok((table, s0, id))
    }

    /// The bytes of `areas`, concatenated.
    pub fn read_areas(&self, areas: &[(u64, u64)]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &(o, l) in areas {
            out.extend(self.read_at(o, l as usize)?);
        }
        Ok(out)
    }

    /// Write `data` (as read by [`Disk::read_areas`]) back to `areas`, then flush the disk.
    pub fn write_areas(&self, areas: &[(u64, u64)], data: &[u8]) -> Result<()> {
        let total: u64 = areas.iter().map(|a| a.1).sum();
        if total != data.len() as u64 {
            bail!("saved boot code is {} bytes, the areas {total}", data.len());
        }
        let mut at = 0usize;
        for &(o, l) in areas {
            // The disk signature and the partition table (bytes 440-511) are never written.
            let end = o.checked_add(l).filter(|&e| e <= self.size);
            if end.is_none_or(|e| o < partition::SECTOR && e > MBR_CODE) {
                bail!(
                    "refusing to write bytes {o}+{l} of {}: the partition table, or past the end",
                    self.path
                );
            }
            self.file
                .write_all_at(&data[at..at + l as usize], o)
                .with_context(|| format!("writing {} at byte {o}", self.path))?;
            at += l as usize;
        }
        self.file
            .sync_all()
            .with_context(|| format!("flushing {}", self.path))
    }
}

/// The disk a BIOS `grub-install` argv writes to: its last argument naming a device, unless the target
/// is not BIOS (`--target=x86_64-efi`, ...) or the command is not grub-install.
pub fn install_device(argv: &[String]) -> Option<String> {
    if argv.first().and_then(|p| p.rsplit('/').next()) != Some("grub-install") {
        return None;
    }
    if argv
        .iter()
        .any(|a| a.starts_with("--target=") && a != "--target=i386-pc")
    {
        return None;
    }
    argv.iter()
        .skip(1)
        .rev()
        .find(|a| a.starts_with("/dev/"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::partition::Partition;

    fn part(number: u32, start: u64, len: u64, ptype: &str) -> Partition {
        Partition {
            number,
            start,
            len,
            ptype: ptype.into(),
        }
    }

    #[test]
    fn mbr_gap_up_to_the_first_partition() {
        let t = Table::Mbr(vec![
            part(2, 600 << 20, 100 << 20, "82"),
            part(1, 1 << 20, 500 << 20, "83"),
        ]);
        assert_eq!(
            areas(&t, 1 << 30),
            Some(vec![(0, 440), (512, (1 << 20) - 512)])
        );
        // An old layout with the first partition on sector 63: a 31 KiB gap.
        let t = Table::Mbr(vec![part(1, 63 * 512, 100 << 20, "83")]);
        assert_eq!(areas(&t, 1 << 30), Some(vec![(0, 440), (512, 62 * 512)]));
        // A huge gap is saved only up to the cap; an empty table up to the cap too.
        let t = Table::Mbr(vec![part(1, 64 << 20, 100 << 20, "83")]);
        assert_eq!(areas(&t, 1 << 30).unwrap()[1], (512, MAX_AREA - 512));
        assert_eq!(
            areas(&Table::Mbr(vec![]), 1 << 30).unwrap()[1],
            (512, MAX_AREA - 512)
        );
        assert_eq!(areas(&Table::None, 1 << 30), None);
    }

    #[test]
    fn gpt_bios_boot_partition() {
        let t = Table::Gpt(vec![
            part(1, 1 << 20, 1 << 20, BIOS_BOOT),
            part(
                2,
                2 << 20,
                100 << 20,
                "0fc63daf-8483-4772-8e79-3d69d8477de4",
            ),
        ]);
        assert_eq!(areas(&t, 1 << 30), Some(vec![(0, 440), (1 << 20, 1 << 20)]));
        // No BIOS boot partition: only the protective MBR's code (grub-install would refuse to embed).
        let t = Table::Gpt(vec![part(
            1,
            1 << 20,
            100 << 20,
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        )]);
        assert_eq!(areas(&t, 1 << 30), Some(vec![(0, 440)]));
    }

    #[test]
    fn identity_ignores_the_boot_code_but_not_the_table() {
        let mut s0 = vec![0u8; 512];
        s0[510] = 0x55;
        s0[511] = 0xaa;
        let t = Table::Mbr(vec![part(1, 1 << 20, 1 << 30, "83")]);
        let id = identity(&s0, &t);
        let mut other = s0.clone();
        other[..440].fill(0xeb);
        assert_eq!(identity(&other, &t), id, "boot code is not identity");
        other[440] = 1; // disk signature
        assert_ne!(identity(&other, &t), id);
        let t2 = Table::Mbr(vec![part(1, 1 << 20, 1 << 30, "8e")]);
        assert_ne!(identity(&s0, &t2), id);
    }

    #[test]
    fn the_partition_table_is_never_written() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut img = vec![0u8; 1 << 16];
        img[440..512].fill(0x77);
        std::fs::write(f.path(), &img).unwrap();
        let d = Disk::open(f.path().to_str().unwrap(), true).unwrap();
        for areas in [
            vec![(446u64, 64u64)],
            vec![(0, 512)],
            vec![(500, 100)],
            vec![(60000, 8000)],
        ] {
            let n: u64 = areas.iter().map(|a| a.1).sum();
            assert!(
                d.write_areas(&areas, &vec![1u8; n as usize]).is_err(),
                "{areas:?}"
            );
        }
        assert!(d.write_areas(&[(u64::MAX - 2, 4)], &[1u8; 4]).is_err());
        d.write_areas(&[(0, 440), (512, 512)], &[2u8; 952]).unwrap();
        let now = std::fs::read(f.path()).unwrap();
        assert_eq!(now[440..512], img[440..512]);
        assert!(now[..440].iter().all(|&b| b == 2) && now[512..1024].iter().all(|&b| b == 2));
    }

    #[test]
    fn install_device_of_grub_install_argv() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            install_device(&a(&["grub-install", "/dev/vda"])),
            Some("/dev/vda".into())
        );
        assert_eq!(
            install_device(&a(&[
                "grub-install",
                "--target=i386-pc",
                "--recheck",
                "/dev/sdb"
            ])),
            Some("/dev/sdb".into())
        );
        assert_eq!(
            install_device(&a(&[
                "grub-install",
                "--target=x86_64-efi",
                "--efi-directory=/boot/efi"
            ])),
            None
        );
        assert_eq!(install_device(&a(&["grub-install"])), None);
        assert_eq!(
            install_device(&a(&["/usr/sbin/grub-install", "/dev/sda"])),
            Some("/dev/sda".into())
        );
        assert_eq!(install_device(&a(&["update-grub", "/dev/sda"])), None);
    }
}
