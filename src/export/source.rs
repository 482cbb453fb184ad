//! The source disk: resolving `--source auto` (the disk holding the root directory) through partitions,
//! LVM and other device-mapper devices, opening it, and finding its mounted filesystems.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Positional reads of the whole buffer.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        FileExt::read_exact_at(self, buf, off)
            .with_context(|| format!("reading {} bytes at offset {off}", buf.len()))
    }
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub devnum: (u32, u32),
    pub mount_point: PathBuf,
    pub read_write: bool,
    pub fstype: String,
    pub source: String,
}

/// Parse /proc/self/mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 6 || r.len() < 3 {
            continue;
        }
        let Some((ma, mi)) = f[2].split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        let opts = f[5];
        v.push(Mount {
            devnum: (ma, mi),
            mount_point: PathBuf::from(crate::guest::facts::unescape_octal(f[4])),
            read_write: opts.split(',').any(|o| o == "rw"),
            fstype: r[0].to_string(),
            source: crate::guest::facts::unescape_octal(r[1]),
        });
    }
    v
}

pub fn mounts() -> Result<Vec<Mount>> {
    let t =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&t))
}

/// The mount holding `path` (longest mount point prefix; the last one mounted wins on ties).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

/// sysfs; unit tests point it at a fake tree with `CLOUDPREP_SYSFS` (not in other builds).
fn sys_block() -> PathBuf {
    #[cfg(test)]
    if let Ok(s) = std::env::var("CLOUDPREP_SYSFS") {
        return PathBuf::from(s);
    }
    PathBuf::from("/sys")
}

/// Kernel name of a block device number, e.g. (7, 1) -> "loop0p1".
pub fn devnum_name(dev: (u32, u32)) -> Option<String> {
    let p = sys_block().join(format!("dev/block/{}:{}", dev.0, dev.1));
    let t = std::fs::canonicalize(&p).ok()?;
    Some(t.file_name()?.to_string_lossy().into_owned())
}

/// The whole disks under block device `name`: a partition's parent, the slaves of dm/md devices
/// (recursively), or the device itself.
pub fn whole_disks(name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(name, &mut out, &mut BTreeSet::new(), 0);
    out
}

/// Every block device `name` is built on: itself, its whole disk, the slaves of dm/md devices and their
/// disks (recursively).
pub fn lineage(name: &str) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    walk(name, &mut BTreeSet::new(), &mut all, 0);
    all
}

fn walk(name: &str, out: &mut BTreeSet<String>, all: &mut BTreeSet<String>, depth: u32) {
    if depth > 16 {
        return;
    }
    all.insert(name.to_string());
    let p = sys_block().join("class/block").join(name);
    if p.join("partition").exists() {
        if let Some(parent) = std::fs::canonicalize(&p)
            .ok()
            .and_then(|c| c.parent().map(|x| x.to_path_buf()))
        {
            if let Some(n) = parent.file_name() {
                walk(&n.to_string_lossy(), out, all, depth + 1);
                return;
            }
        }
    }
    let mut slaves: Vec<String> = std::fs::read_dir(p.join("slaves"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    slaves.sort();
    if slaves.is_empty() {
        out.insert(name.to_string());
    } else {
        for s in slaves {
            walk(&s, out, all, depth + 1);
        }
    }
}

/// Resolve `--source auto`: the single whole disk holding `root`.
pub fn auto_disk(root: &Path) -> Result<PathBuf> {
    let root =
        std::fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
    let ms = mounts()?;
    let m = mount_of(&ms, &root).with_context(|| format!("no mount holds {}", root.display()))?;
    let name = mount_device(m).with_context(|| {
        format!(
            "{} is on {} ({}), which is not a block device",
            root.display(),
            m.source,
            m.fstype
        )
    })?;
    let disks = whole_disks(&name);
    match disks.len() {
        1 => Ok(PathBuf::from("/dev").join(disks.into_iter().next().unwrap())),
        0 => bail!("found no disk under {name}"),
        _ => bail!(
            "{} ({name}) spans several disks ({}): export each disk separately with --source DEVICE",
            root.display(),
            disks.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Kernel name of the block device a mount lives on. btrfs (and other filesystems that report an
/// anonymous `0:NN` device number) are mapped through the mount source's device node.
pub fn mount_device(m: &Mount) -> Option<String> {
    devnum_name(m.devnum).or_else(|| source_device(&m.source))
}

/// Kernel name of the block device at `path` (a mount source such as `/dev/loop0p2`).
fn source_device(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let md = std::fs::metadata(path).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let r = md.rdev();
    devnum_name((libc::major(r), libc::minor(r)))
}

/// Kernel name of the block device holding the filesystem at `dir`. The device number of a file is not
/// always the mount's (a btrfs subvolume has its own anonymous one, different from mountinfo's): without
/// a block device behind it, the mount holding the path decides, mapped through its source.
pub fn dir_device(dir: &Path) -> Result<Option<String>> {
    let md =
        std::fs::metadata(dir).with_context(|| format!("output directory {}", dir.display()))?;
    let d = md.dev();
    if let Some(n) = devnum_name((libc::major(d), libc::minor(d))) {
        return Ok(Some(n));
    }
    Ok(mount_holding(dir)?.as_ref().and_then(mount_device))
}

/// The mount holding `path` (resolved; the longest mount point that is a prefix of it).
pub fn mount_holding(path: &Path) -> Result<Option<Mount>> {
    let p = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let ms = mounts()?;
    Ok(mount_of(&ms, &p).cloned())
}

/// An opened source: a block device or an image file.
pub struct Source {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    /// Kernel name when the source is a block device ("loop3", "sda").
    pub disk_name: Option<String>,
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of a block device (BLKGETSIZE64) or a regular file.
pub fn device_size(file: &File, path: &Path) -> Result<u64> {
    let md = file
        .metadata()
        .with_context(|| format!("reading the metadata of {}", path.display()))?;
    if !md.file_type().is_block_device() {
        return Ok(md.len());
    }
    let mut sz = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(file), &mut sz) }
        .with_context(|| format!("BLKGETSIZE64 on {}", path.display()))?;
    Ok(sz)
}

pub fn open(spec: &str, root: &Path) -> Result<Source> {
    let path = if spec == "auto" {
        auto_disk(root)?
    } else {
        PathBuf::from(spec)
    };
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let md = file.metadata()?;
    let (size, disk_name) = if md.file_type().is_block_device() {
        let r = md.rdev();
        (
            device_size(&file, &path)?,
            devnum_name((libc::major(r), libc::minor(r))),
        )
    } else if md.is_file() {
        (md.len(), None)
    } else {
        bail!(
            "{} is neither a block device nor a regular file",
            path.display()
        );
    };
    // Sequential access: let the kernel read ahead generously.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_SEQUENTIAL,
        );
    }
    Ok(Source {
        path,
        file,
        size,
        disk_name,
    })
}

nix::ioctl_none!(blkflsbuf, 0x12, 97);

impl Source {
    /// Drop cached pages of the source. Filesystems write through their partition's (or dm device's)
    /// page cache, not the whole disk's: pages of the whole disk cached before a freeze may be stale.
    pub fn invalidate_cache(&self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        if self.disk_name.is_some() {
            let _ = unsafe { blkflsbuf(fd) };
        }
        unsafe {
            libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
            libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
    }

    /// Mounted filesystems that live on this disk (also through partitions, LVM, dm).
    pub fn mounted(&self) -> Result<Vec<Mount>> {
        let Some(disk) = &self.disk_name else {
            return Ok(Vec::new());
        };
        let mut seen = BTreeSet::new();
        let mut v = Vec::new();
        for m in mounts()? {
            let Some(n) = mount_device(&m) else {
                continue;
            };
            if whole_disks(&n).contains(disk) && seen.insert(m.mount_point.clone()) {
                v.push(m);
            }
        }
        Ok(v)
    }

    /// Refuse an output path that lives on the source disk (or is the source image itself).
    pub fn check_output(&self, out: &Path) -> Result<()> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let smd = self.file.metadata()?;
        if let Ok(o) = std::fs::metadata(out) {
            if o.dev() == smd.dev() && o.ino() == smd.ino() {
                bail!(
                    "refusing to overwrite the source {} with the output",
                    self.path.display()
                );
            }
        }
        let dir_dev = dir_device(&dir)?;
        if let Some(disk) = &self.disk_name {
            if let Some(n) = dir_dev {
                if whole_disks(&n).contains(disk) {
                    bail!(
                        "refusing to write {} onto the disk being exported ({}): choose an output on another disk",
                        out.display(),
                        self.path.display()
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n\
30 22 8:1 / /boot rw,relatime shared:2 - ext2 /dev/sda1 rw\n\
31 22 0:5 / /dev rw,nosuid - devtmpfs udev rw\n\
40 22 8:2 / /mnt/with\\040space ro,relatime - ext4 /dev/sda2 ro\n\
garbage line\n\
41 22 x:y / /bad rw - ext4 /dev/x rw\n";

    #[test]
    fn mountinfo_and_longest_prefix() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].mount_point, PathBuf::from("/mnt/with space"));
        assert!(!m[3].read_write);
        assert!(m[0].read_write);
        assert_eq!(
            mount_of(&m, Path::new("/boot/grub")).unwrap().devnum,
            (8, 1)
        );
        assert_eq!(mount_of(&m, Path::new("/bootx")).unwrap().devnum, (253, 0));
        assert_eq!(mount_of(&m, Path::new("/")).unwrap().fstype, "ext4");
    }

    #[test]
    fn sysfs_walk_through_lvm_and_partitions() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        let mk = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        mk("devices/virtual/block/dm-0/slaves");
        mk("devices/pci/block/sda/sda2");
        mk("devices/pci/block/sdb/sdb1");
        std::fs::write(s.join("devices/pci/block/sda/sda2/partition"), "2").unwrap();
        std::fs::write(s.join("devices/pci/block/sdb/sdb1/partition"), "1").unwrap();
        mk("class/block");
        let ln = |t: &str, l: &str| std::os::unix::fs::symlink(s.join(t), s.join(l)).unwrap();
        ln("devices/virtual/block/dm-0", "class/block/dm-0");
        ln("devices/pci/block/sda/sda2", "class/block/sda2");
        ln("devices/pci/block/sdb/sdb1", "class/block/sdb1");
        ln("devices/pci/block/sda", "class/block/sda");
        ln(
            "devices/pci/block/sda/sda2",
            "devices/virtual/block/dm-0/slaves/sda2",
        );
        std::env::set_var("CLOUDPREP_SYSFS", s);
        assert_eq!(
            whole_disks("dm-0").into_iter().collect::<Vec<_>>(),
            vec!["sda"]
        );
        assert_eq!(
            whole_disks("sda").into_iter().collect::<Vec<_>>(),
            vec!["sda"]
        );
        ln(
            "devices/pci/block/sdb/sdb1",
            "devices/virtual/block/dm-0/slaves/sdb1",
        );
        assert_eq!(
            whole_disks("dm-0").into_iter().collect::<Vec<_>>(),
            vec!["sda", "sdb"]
        );
        std::env::remove_var("CLOUDPREP_SYSFS");
    }
}
