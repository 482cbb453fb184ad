//! Block devices and filesystems: disks, partitions, and each filesystem's type, UUID and label read from
//! its superblock (never by shelling out to blkid).
//!
//! The superblock and partition-table parsers are pure functions over the first [`PROBE_BYTES`] bytes of a
//! device; [`gather`] walks `/sys/class/block` and reads the device nodes.

use crate::guest::facts::{Disk, Filesystem, Mount};
use crate::guest::root::Root;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How much of a device the probes read: enough for the btrfs superblock (64 KiB + 4 KiB), a swap
/// signature on 64 KiB pages, and a GPT with 4 KiB sectors.
pub const PROBE_BYTES: usize = 0x11000;

/// What a superblock says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probed {
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn le16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

/// A 16-byte UUID as stored big-endian (ext*, xfs, btrfs, swap): `8-4-4-4-12` lowercase hex.
pub fn uuid_be(b: &[u8]) -> Option<String> {
    let b = b.get(..16)?;
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h = hex::encode(b);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A GPT GUID (first three fields little-endian): `8-4-4-4-12` lowercase hex.
pub fn guid_le(b: &[u8]) -> Option<String> {
    let b = b.get(..16)?;
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let mut v = b.to_vec();
    v[0..4].reverse();
    v[4..6].reverse();
    v[6..8].reverse();
    uuid_be(&v)
}

/// A NUL-padded label field; empty or all-NUL is `None`.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Identify the filesystem (or container) whose superblock starts `buf` (the first bytes of a device).
pub fn probe_superblock(buf: &[u8]) -> Option<Probed> {
    probe_luks(buf)
        .or_else(|| probe_lvm2(buf))
        .or_else(|| probe_xfs(buf))
        .or_else(|| probe_ext(buf))
        .or_else(|| probe_btrfs(buf))
        .or_else(|| probe_swap(buf))
        .or_else(|| probe_vfat(buf))
}

/// ext2/ext3/ext4: superblock at 1024, magic 0xEF53; type decided from the feature flags as blkid does.
pub fn probe_ext(buf: &[u8]) -> Option<Probed> {
    const SB: usize = 1024;
    if le16(buf, SB + 0x38)? != 0xEF53 {
        return None;
    }
    let compat = le32(buf, SB + 0x5C)?;
    let incompat = le32(buf, SB + 0x60)?;
    let ro_compat = le32(buf, SB + 0x64)?;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    // What ext3 understands; anything beyond it is ext4.
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    let fstype = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(Probed {
        fstype: fstype.into(),
        uuid: uuid_be(buf.get(SB + 0x68..SB + 0x78)?),
        label: label(buf.get(SB + 0x78..SB + 0x88)?),
    })
}

/// XFS: "XFSB" at 0, uuid at 32, 12-byte name at 108.
pub fn probe_xfs(buf: &[u8]) -> Option<Probed> {
    if buf.get(0..4)? != b"XFSB" {
        return None;
    }
    Some(Probed {
        fstype: "xfs".into(),
        uuid: uuid_be(buf.get(32..48)?),
        label: label(buf.get(108..120)?),
    })
}

/// btrfs: superblock at 64 KiB, magic `_BHRfS_M` at +0x40, fsid at +0x20, label at +0x12b.
pub fn probe_btrfs(buf: &[u8]) -> Option<Probed> {
    const SB: usize = 0x10000;
    if buf.get(SB + 0x40..SB + 0x48)? != b"_BHRfS_M" {
        return None;
    }
    Some(Probed {
        fstype: "btrfs".into(),
        uuid: uuid_be(buf.get(SB + 0x20..SB + 0x30)?),
        label: label(buf.get(SB + 0x12b..SB + 0x12b + 256)?),
    })
}

/// Linux swap: `SWAPSPACE2` (v1, with uuid at 1036 and label at 1052) or `SWAP-SPACE` (v0) in the last
/// ten bytes of the first page, for any page size up to 64 KiB.
pub fn probe_swap(buf: &[u8]) -> Option<Probed> {
    for page in [4096usize, 8192, 16384, 32768, 65536] {
        let Some(sig) = buf.get(page - 10..page) else {
            continue;
        };
        if sig == b"SWAPSPACE2" {
            return Some(Probed {
                fstype: "swap".into(),
                uuid: uuid_be(buf.get(1036..1052)?),
                label: label(buf.get(1052..1068)?),
            });
        }
        if sig == b"SWAP-SPACE" {
            return Some(Probed {
                fstype: "swap".into(),
                uuid: None,
                label: None,
            });
        }
    }
    None
}

/// FAT12/16/32: the boot sector's volume id becomes the `XXXX-XXXX` UUID.
pub fn probe_vfat(buf: &[u8]) -> Option<Probed> {
    if buf.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    let sector = le16(buf, 11)?;
    if !matches!(sector, 512 | 1024 | 2048 | 4096) || buf[13] == 0 || !buf[13].is_power_of_two() {
        return None;
    }
    let (id_off, label_off) = if buf.get(0x52..0x57)? == b"FAT32" {
        (0x43, 0x47)
    } else if buf.get(0x36..0x39)? == b"FAT" || buf.get(0x36..0x3b)? == b"MSDOS" {
        (0x27, 0x2B)
    } else {
        return None;
    };
    let id = le32(buf, id_off)?;
    let lbl = label(buf.get(label_off..label_off + 11)?).filter(|l| l != "NO NAME");
    Some(Probed {
        fstype: "vfat".into(),
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
        label: lbl,
    })
}

/// LUKS1/LUKS2: magic `LUKS\xba\xbe`, version at 6, UUID as text at 168 (label at 24 in LUKS2).
pub fn probe_luks(buf: &[u8]) -> Option<Probed> {
    if buf.get(0..6)? != b"LUKS\xba\xbe" {
        return None;
    }
    let version = be16(buf, 6)?;
    Some(Probed {
        fstype: "crypto_LUKS".into(),
        uuid: label(buf.get(168..208)?),
        label: if version == 2 {
            label(buf.get(24..72)?)
        } else {
            None
        },
    })
}

/// LVM2 physical volume: `LABELONE` in one of the first four sectors, `LVM2 001` type, PV UUID (32
/// characters) in the pv_header, shown `6-4-4-4-4-4-6` as lvm does.
pub fn probe_lvm2(buf: &[u8]) -> Option<Probed> {
    for sector in 0..4usize {
        let base = sector * 512;
        if buf.get(base..base + 8)? != b"LABELONE" || buf.get(base + 24..base + 32)? != b"LVM2 001"
        {
            continue;
        }
        let off = base + le32(buf, base + 20)? as usize;
        let raw = std::str::from_utf8(buf.get(off..off + 32)?).ok()?;
        let mut uuid = String::new();
        let mut i = 0;
        for (n, len) in [6, 4, 4, 4, 4, 4, 6].iter().enumerate() {
            if n > 0 {
                uuid.push('-');
            }
            uuid.push_str(raw.get(i..i + len)?);
            i += len;
        }
        return Some(Probed {
            fstype: "LVM2_member".into(),
            uuid: Some(uuid),
            label: None,
        });
    }
    None
}

/// One partition of a partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Partition number as the kernel numbers it (1-based).
    pub number: u32,
    pub partuuid: String,
}

/// Partition UUIDs from the start of a disk: GPT unique partition GUIDs, or for an MBR disk
/// `SSSSSSSS-NN` from the disk signature (logical partitions numbered from 5 as the kernel does).
pub fn parse_partition_table(buf: &[u8]) -> Vec<PartEntry> {
    for sector in [512usize, 4096] {
        if buf.get(sector..sector + 8) == Some(b"EFI PART".as_slice()) {
            return parse_gpt(buf, sector);
        }
    }
    if buf.get(510..512) != Some([0x55, 0xAA].as_slice()) {
        return Vec::new();
    }
    let Some(sig) = le32(buf, 0x1B8) else {
        return Vec::new();
    };
    if sig == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..4usize {
        let e = 0x1BE + i * 16;
        let ptype = buf[e + 4];
        if ptype == 0 || ptype == 0xEE {
            continue;
        }
        out.push(PartEntry {
            number: i as u32 + 1,
            partuuid: format!("{:08x}-{:02x}", sig, i + 1),
        });
    }
    out
}

fn parse_gpt(buf: &[u8], sector: usize) -> Vec<PartEntry> {
    let mut out = Vec::new();
    let (Some(lba), Some(n), Some(size)) = (
        le64(buf, sector + 72),
        le32(buf, sector + 80),
        le32(buf, sector + 84),
    ) else {
        return out;
    };
    let size = size as usize;
    if size < 128 || n > 1024 {
        return out;
    }
    let start = (lba as usize).saturating_mul(sector);
    for i in 0..n as usize {
        let e = start + i * size;
        let Some(ent) = buf.get(e..e + 128) else {
            break;
        };
        if ent[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        if let Some(u) = guid_le(&ent[16..32]) {
            out.push(PartEntry {
                number: i as u32 + 1,
                partuuid: u,
            });
        }
    }
    out
}

/// One `/sys/class/block` entry.
#[derive(Debug, Clone, Default)]
struct Node {
    name: String,
    dev: String,
    /// 512-byte sectors.
    sectors: u64,
    /// Partition number when this is a partition.
    partition: Option<u32>,
    /// Parent disk of a partition.
    parent: Option<String>,
    slaves: Vec<String>,
    dm_name: Option<String>,
    removable: bool,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sys_nodes(sys: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(sys) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let mut n = Node {
            name: name.clone(),
            dev: read_trim(&p.join("dev")).unwrap_or_default(),
            sectors: read_trim(&p.join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            partition: read_trim(&p.join("partition")).and_then(|s| s.parse().ok()),
            dm_name: read_trim(&p.join("dm/name")),
            removable: read_trim(&p.join("removable")).as_deref() == Some("1"),
            ..Default::default()
        };
        if n.partition.is_some() {
            // /sys/class/block/sda1 -> ../../devices/.../sda/sda1
            if let Ok(real) = std::fs::canonicalize(&p) {
                n.parent = real
                    .parent()
                    .and_then(|q| q.file_name())
                    .map(|s| s.to_string_lossy().into_owned());
            }
        }
        if let Ok(rd) = std::fs::read_dir(p.join("slaves")) {
            n.slaves = rd
                .flatten()
                .map(|s| s.file_name().to_string_lossy().into_owned())
                .collect();
            n.slaves.sort();
        }
        out.insert(name, n);
    }
    out
}

fn node_path(dev_dir: &Path, n: &Node) -> String {
    if let Some(dm) = &n.dm_name {
        let m = dev_dir.join("mapper").join(dm);
        if m.exists() {
            return m.display().to_string();
        }
    }
    dev_dir.join(&n.name).display().to_string()
}

/// Whole disks (by sysfs name) under a node, through partitions and device-mapper/md slaves.
fn backing_disks(nodes: &BTreeMap<String, Node>, name: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(n) = nodes.get(name) else {
        return out;
    };
    if depth > 16 {
        return out;
    }
    if let Some(p) = &n.parent {
        out.extend(backing_disks(nodes, p, depth + 1));
    } else if n.slaves.is_empty() {
        out.insert(n.name.clone());
    } else {
        for s in &n.slaves {
            out.extend(backing_disks(nodes, s, depth + 1));
        }
    }
    out
}

fn disk_kind(name: &str, n: &Node) -> &'static str {
    if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("sr") {
        "cdrom"
    } else if name.starts_with("fd") {
        "floppy"
    } else if name.starts_with("dm-") || n.dm_name.is_some() {
        "dm"
    } else if name.starts_with("md") {
        "md"
    } else if name.starts_with("ram") || name.starts_with("zram") {
        "ram"
    } else if n.removable {
        "removable"
    } else {
        "disk"
    }
}

/// The first [`PROBE_BYTES`] of a device (fewer when it is smaller).
pub fn read_head(dev: &str) -> Option<Vec<u8>> {
    let f = std::fs::File::open(dev).ok()?;
    let mut buf = Vec::with_capacity(PROBE_BYTES);
    f.take(PROBE_BYTES as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// `/dev/disk/by-uuid`-style directory: device path -> uuid.
fn by_uuid(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(real) = std::fs::canonicalize(e.path()) {
                out.insert(
                    real.display().to_string(),
                    e.file_name().to_string_lossy().into_owned(),
                );
            }
        }
    }
    out
}

/// Disks, filesystems, and the host device holding the guest's `/`.
///
/// Live: every block device. Offline (`--root`): only the devices backing mounts at or below the root,
/// their slaves, and the partitions of the disks holding them (the guest's own disks).
pub fn gather(root: &Root, mounts: &[Mount]) -> (Vec<Disk>, Vec<Filesystem>, Option<String>) {
    gather_from(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        root.is_live(),
        mounts,
    )
}

fn gather_from(
    sys: &Path,
    dev_dir: &Path,
    live: bool,
    mounts: &[Mount],
) -> (Vec<Disk>, Vec<Filesystem>, Option<String>) {
    let nodes = sys_nodes(sys);
    let by_dev: BTreeMap<&str, &str> = nodes
        .values()
        .map(|n| (n.dev.as_str(), n.name.as_str()))
        .collect();
    let mount_node = |m: &Mount| -> Option<String> {
        if let Some(n) = by_dev.get(m.dev.as_str()) {
            return Some(n.to_string());
        }
        // btrfs and friends report an anonymous device number: go by the source path.
        let src = std::fs::canonicalize(&m.source).ok()?;
        let name = src.file_name()?.to_string_lossy().into_owned();
        nodes.contains_key(&name).then_some(name)
    };

    let wanted: BTreeSet<String> = if live {
        nodes.keys().cloned().collect()
    } else {
        let mut w = BTreeSet::new();
        let mut stack: Vec<String> = mounts.iter().filter_map(mount_node).collect();
        while let Some(n) = stack.pop() {
            if !w.insert(n.clone()) {
                continue;
            }
            if let Some(node) = nodes.get(&n) {
                stack.extend(node.slaves.iter().cloned());
            }
            for d in backing_disks(&nodes, &n, 0) {
                if !w.contains(&d) {
                    stack.push(d.clone());
                }
                stack.extend(
                    nodes
                        .values()
                        .filter(|p| p.parent.as_deref() == Some(d.as_str()))
                        .map(|p| p.name.clone())
                        .filter(|p| !w.contains(p)),
                );
            }
        }
        w
    };

    let mut disks = Vec::new();
    let mut partuuids: BTreeMap<String, String> = BTreeMap::new();
    for n in nodes.values().filter(|n| n.partition.is_none()) {
        if !wanted.contains(&n.name) {
            continue;
        }
        let kind = disk_kind(&n.name, n);
        let mut parts: Vec<&Node> = nodes
            .values()
            .filter(|p| p.parent.as_deref() == Some(n.name.as_str()))
            .collect();
        parts.sort_by_key(|p| p.partition);
        if !parts.is_empty() && n.sectors > 0 && kind != "floppy" {
            if let Some(head) = read_head(&node_path(dev_dir, n)) {
                for e in parse_partition_table(&head) {
                    if let Some(p) = parts.iter().find(|p| p.partition == Some(e.number)) {
                        partuuids.insert(p.name.clone(), e.partuuid);
                    }
                }
                // MBR logical partitions (5+) are numbered by the kernel: follow its numbering.
                if let Some(sig) = le32(&head, 0x1B8).filter(|_| {
                    head.get(510..512) == Some([0x55, 0xAA].as_slice())
                        && head.get(512..520).is_none_or(|s| s != b"EFI PART")
                        && head.get(4096..4104).is_none_or(|s| s != b"EFI PART")
                }) {
                    for p in &parts {
                        if let Some(num) = p.partition.filter(|&x| x > 4) {
                            partuuids
                                .entry(p.name.clone())
                                .or_insert_with(|| format!("{sig:08x}-{num:02x}"));
                        }
                    }
                }
            }
        }
        disks.push(Disk {
            name: n.name.clone(),
            size: n.sectors * 512,
            partitions: parts.iter().map(|p| p.name.clone()).collect(),
            removable: n.removable,
            kind: kind.into(),
            dev: n.dev.clone(),
            slaves: n.slaves.clone(),
        });
    }

    let uuids = by_uuid(&dev_dir.join("disk/by-uuid"));
    let mut filesystems = Vec::new();
    for n in nodes.values() {
        if !wanted.contains(&n.name) || n.sectors == 0 {
            continue;
        }
        let kind = disk_kind(&n.name, n);
        if matches!(kind, "floppy" | "ram") && n.partition.is_none() {
            continue;
        }
        // A partitioned disk carries a partition table, not a filesystem.
        if n.partition.is_none() && nodes.values().any(|p| p.parent.as_ref() == Some(&n.name)) {
            continue;
        }
        let path = node_path(dev_dir, n);
        let probed = read_head(&path).and_then(|h| probe_superblock(&h));
        let mut fs = Filesystem {
            device: path.clone(),
            fstype: probed
                .as_ref()
                .map(|p| p.fstype.clone())
                .unwrap_or_default(),
            uuid: probed.as_ref().and_then(|p| p.uuid.clone()),
            label: probed.as_ref().and_then(|p| p.label.clone()),
            partuuid: partuuids.get(&n.name).cloned(),
            size: Some(n.sectors * 512),
            dev: n.dev.clone(),
            disks: backing_disks(&nodes, &n.name, 0).into_iter().collect(),
            partition: n.partition,
        };
        if fs.uuid.is_none() {
            fs.uuid = uuids
                .get(&path)
                .or_else(|| uuids.get(&dev_dir.join(&n.name).display().to_string()))
                .cloned();
        }
        if fs.fstype.is_empty() {
            // Unreadable (or unknown) but mounted: the kernel knows its type.
            if let Some(m) = mounts.iter().find(|m| m.dev == n.dev) {
                fs.fstype = m.fstype.clone();
            }
        }
        if fs.fstype.is_empty() && fs.uuid.is_none() && fs.partuuid.is_none() {
            continue;
        }
        filesystems.push(fs);
    }

    let root_device =
        mounts
            .iter()
            .rev()
            .find(|m| m.target == "/")
            .and_then(|m| match mount_node(m) {
                Some(n) => nodes.get(&n).map(|n| node_path(dev_dir, n)),
                None => m.source.starts_with("/dev/").then(|| m.source.clone()),
            });
    (disks, filesystems, root_device)
}

/// Host path of a device node for a `/dev/...` path as the running system names it (symlinks such as
/// `/dev/disk/by-id/...` resolved).
pub fn canonical_device(path: &str) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn image(size_mib: u64) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        (d, p)
    }

    fn run(cmd: &str, args: &[&str]) {
        let out = Command::new(cmd)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e} (install it via x.sh setup)"));
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn head(p: &Path) -> Vec<u8> {
        read_head(p.to_str().unwrap()).unwrap()
    }

    const U: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn ext_family_from_mkfs() {
        for (tool, want) in [
            ("mkfs.ext4", "ext4"),
            ("mkfs.ext3", "ext3"),
            ("mkfs.ext2", "ext2"),
        ] {
            let (_d, p) = image(8);
            run(
                tool,
                &["-q", "-F", "-U", U, "-L", "rootfs", p.to_str().unwrap()],
            );
            let got = probe_superblock(&head(&p)).unwrap();
            assert_eq!(got.fstype, want, "{tool}");
            assert_eq!(got.uuid.as_deref(), Some(U));
            assert_eq!(got.label.as_deref(), Some("rootfs"));
        }
    }

    #[test]
    fn xfs_from_mkfs() {
        let (_d, p) = image(320);
        run(
            "mkfs.xfs",
            &[
                "-q",
                "-f",
                "-m",
                &format!("uuid={U}"),
                "-L",
                "data",
                p.to_str().unwrap(),
            ],
        );
        let got = probe_superblock(&head(&p)).unwrap();
        assert_eq!((got.fstype.as_str(), got.uuid.as_deref()), ("xfs", Some(U)));
        assert_eq!(got.label.as_deref(), Some("data"));
    }

    #[test]
    fn btrfs_from_mkfs() {
        let (_d, p) = image(128);
        run(
            "mkfs.btrfs",
            &["-q", "-f", "-U", U, "-L", "pool", p.to_str().unwrap()],
        );
        let got = probe_superblock(&head(&p)).unwrap();
        assert_eq!(
            (got.fstype.as_str(), got.uuid.as_deref()),
            ("btrfs", Some(U))
        );
        assert_eq!(got.label.as_deref(), Some("pool"));
    }

    #[test]
    fn swap_from_mkswap() {
        let (_d, p) = image(4);
        run("mkswap", &["-U", U, "-L", "swap0", p.to_str().unwrap()]);
        let got = probe_superblock(&head(&p)).unwrap();
        assert_eq!(
            (got.fstype.as_str(), got.uuid.as_deref()),
            ("swap", Some(U))
        );
        assert_eq!(got.label.as_deref(), Some("swap0"));
    }

    #[test]
    fn vfat_from_mkfs() {
        for (bits, size) in [("16", 16), ("32", 64)] {
            let (_d, p) = image(size);
            run(
                "mkfs.vfat",
                &[
                    "-F",
                    bits,
                    "-i",
                    "DEADBEEF",
                    "-n",
                    "EFI",
                    p.to_str().unwrap(),
                ],
            );
            let got = probe_superblock(&head(&p)).unwrap();
            assert_eq!(got.fstype, "vfat", "FAT{bits}");
            assert_eq!(got.uuid.as_deref(), Some("DEAD-BEEF"), "FAT{bits}");
            assert_eq!(got.label.as_deref(), Some("EFI"));
        }
        let (_d, p) = image(16);
        run("mkfs.vfat", &["-i", "0000abcd", p.to_str().unwrap()]);
        let got = probe_superblock(&head(&p)).unwrap();
        assert_eq!(got.uuid.as_deref(), Some("0000-ABCD"));
        assert_eq!(got.label, None);
    }

    #[test]
    fn luks_from_cryptsetup() {
        for ty in ["luks1", "luks2"] {
            let (d, p) = image(32);
            let key = d.path().join("key");
            std::fs::write(&key, "secret").unwrap();
            run(
                "cryptsetup",
                &[
                    "luksFormat",
                    "-q",
                    "--type",
                    ty,
                    "--uuid",
                    U,
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--key-file",
                    key.to_str().unwrap(),
                    p.to_str().unwrap(),
                ],
            );
            let got = probe_superblock(&head(&p)).unwrap();
            assert_eq!(got.fstype, "crypto_LUKS", "{ty}");
            assert_eq!(got.uuid.as_deref(), Some(U), "{ty}");
        }
    }

    #[test]
    fn lvm2_label() {
        // Layout of lvm2's label_header + pv_header (label in sector 1, as pvcreate writes it).
        let mut b = vec![0u8; 4096];
        b[512..520].copy_from_slice(b"LABELONE");
        b[512 + 8..512 + 16].copy_from_slice(&1u64.to_le_bytes());
        b[512 + 20..512 + 24].copy_from_slice(&32u32.to_le_bytes());
        b[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        b[544..576].copy_from_slice(b"abcdefGHIJklmnOPQRstuvWXYZ012345");
        let got = probe_superblock(&b).unwrap();
        assert_eq!(got.fstype, "LVM2_member");
        assert_eq!(
            got.uuid.as_deref(),
            Some("abcdef-GHIJ-klmn-OPQR-stuv-WXYZ-012345")
        );
    }

    #[test]
    fn garbage_is_nothing() {
        assert_eq!(probe_superblock(&[]), None);
        assert_eq!(probe_superblock(&[0u8; 300]), None);
        assert_eq!(probe_superblock(&vec![0xffu8; PROBE_BYTES]), None);
        assert!(parse_partition_table(&[1, 2, 3]).is_empty());
    }

    fn sfdisk(p: &Path, script: &str) {
        use std::io::Write;
        let mut c = Command::new("sfdisk")
            .args(["-q", p.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success());
    }

    #[test]
    fn mbr_partuuids_from_sfdisk() {
        let (_d, p) = image(64);
        sfdisk(
            &p,
            "label: dos\nlabel-id: 0x1a2b3c4d\n,16M,L\n,8M,S\n,,E\n,8M,L\n",
        );
        let t = parse_partition_table(&head(&p));
        let got: Vec<(u32, &str)> = t.iter().map(|e| (e.number, e.partuuid.as_str())).collect();
        assert_eq!(
            got,
            vec![(1, "1a2b3c4d-01"), (2, "1a2b3c4d-02"), (3, "1a2b3c4d-03")]
        );
    }

    #[test]
    fn gpt_partuuids_from_sfdisk() {
        let (_d, p) = image(64);
        sfdisk(
            &p,
            "label: gpt\nsize=16M,type=L,uuid=11111111-2222-4333-8444-555555555555\nsize=8M,type=S,uuid=6E3B2A10-0C4D-4E5F-9A8B-7C6D5E4F3A2B\n",
        );
        let t = parse_partition_table(&head(&p));
        let got: Vec<(u32, &str)> = t.iter().map(|e| (e.number, e.partuuid.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "11111111-2222-4333-8444-555555555555"),
                (2, "6e3b2a10-0c4d-4e5f-9a8b-7c6d5e4f3a2b")
            ]
        );
    }

    /// A fake sysfs (`devices/…` with `class/block` symlinks, as the kernel lays it out) and a /dev of
    /// regular files holding real superblocks: sda{1,2}, sdb1 and dm-0 (LVM over sda2 + sdb1), sdc1.
    #[test]
    fn gather_walks_partitions_and_dm_slaves() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let class = sys.join("class/block");
        let dev = t.path().join("dev");
        std::fs::create_dir_all(&class).unwrap();
        std::fs::create_dir_all(dev.join("mapper")).unwrap();
        let mut minor = 0;
        let mut node = |path: &str, sectors: u64, part: Option<u32>| {
            let dir = sys.join("devices").join(path);
            std::fs::create_dir_all(&dir).unwrap();
            minor += 1;
            std::fs::write(dir.join("dev"), format!("8:{minor}\n")).unwrap();
            std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            if let Some(p) = part {
                std::fs::write(dir.join("partition"), format!("{p}\n")).unwrap();
            }
            let name = Path::new(path).file_name().unwrap();
            symlink(&dir, class.join(name)).unwrap();
            dir
        };
        node("pci/sda", 100, None);
        node("pci/sda/sda1", 10, Some(1));
        node("pci/sda/sda2", 10, Some(2));
        node("pci/sdb", 100, None);
        node("pci/sdb/sdb1", 10, Some(1));
        node("pci/sdc", 100, None);
        node("pci/sdc/sdc1", 10, Some(1));
        let dm = node("virtual/block/dm-0", 20, None);
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        std::fs::write(dm.join("dm/name"), "vg-root\n").unwrap();
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink(sys.join("devices/pci/sda/sda2"), dm.join("slaves/sda2")).unwrap();
        symlink(sys.join("devices/pci/sdb/sdb1"), dm.join("slaves/sdb1")).unwrap();
        for (f, tool, args) in [
            ("sda1", "mkfs.ext2", vec!["-q", "-F", "-U", U]),
            ("sdc1", "mkfs.ext4", vec!["-q", "-F"]),
            ("vg-root", "mkfs.ext4", vec!["-q", "-F", "-L", "root"]),
        ] {
            let p = if f == "vg-root" {
                dev.join("mapper").join(f)
            } else {
                dev.join(f)
            };
            std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
            let mut a = args.clone();
            a.push(p.to_str().unwrap());
            run(tool, &a);
        }
        let mount = |target: &str, majmin: &str| Mount {
            target: target.into(),
            source: "x".into(),
            fstype: "ext4".into(),
            options: "rw".into(),
            dev: majmin.into(),
        };
        // dm-0 is minor 8 (eighth node), sda1 minor 2.
        let mounts = vec![mount("/", "8:8"), mount("/boot", "8:2")];
        let (disks, fss, root) = gather_from(&class, &dev, false, &mounts);
        let vg = dev.join("mapper/vg-root").display().to_string();
        assert_eq!(root.as_deref(), Some(vg.as_str()));
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        // sdc backs nothing of the guest: not probed offline.
        assert_eq!(names, vec!["dm-0", "sda", "sdb"]);
        assert_eq!(disks[1].partitions, vec!["sda1", "sda2"]);
        assert_eq!(disks[0].kind, "dm");
        let root_fs = fss.iter().find(|f| f.device == vg).unwrap();
        assert_eq!(root_fs.disks, vec!["sda", "sdb"]);
        assert_eq!(root_fs.label.as_deref(), Some("root"));
        let boot = fss.iter().find(|f| f.device.ends_with("/sda1")).unwrap();
        assert_eq!(
            (boot.fstype.as_str(), boot.uuid.as_deref()),
            ("ext2", Some(U))
        );
        assert_eq!(boot.partition, Some(1));
        assert!(!fss.iter().any(|f| f.device.ends_with("sdc1")));
        // Live: everything.
        let (disks, fss, _) = gather_from(&class, &dev, true, &mounts);
        assert_eq!(disks.len(), 4);
        assert!(fss
            .iter()
            .any(|f| f.device.ends_with("sdc1") && f.fstype == "ext4"));
    }

    #[test]
    fn offline_gather_without_sysfs_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let (disks, fs, root) = gather_from(d.path(), d.path(), false, &[]);
        assert!(disks.is_empty() && fs.is_empty() && root.is_none());
    }
}
