//! Where `cloudprep export` writes.
//!
//! * A regular file: a temporary file in the target's directory (created `O_EXCL`, mode 0600: the image
//!   holds `/etc/shadow` and host keys), fsynced, renamed over the target, and the directory fsynced. An
//!   interrupted or failed export removes the temporary file.
//! * A block device: written in place. It is opened `O_RDWR|O_EXCL` without `O_CREAT` (the kernel refuses
//!   the exclusive open while the device, or one of its partitions, is mounted or held by LVM, md or
//!   swap), its size is checked against what will be written, and it is never replaced: no temporary file
//!   in `/dev`, no rename over the node. Its first cluster is zeroed before the copy, so an interrupted
//!   export never leaves a valid-looking image header behind.
//!
//! Anything else that exists at the target path (a character device, a FIFO, a socket, a directory) is
//! refused, and so is a path under `/dev` that is not a block device.

use super::source::{self, Source};
use super::{freeze, ImageFormat, CLUSTER};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

enum Kind {
    /// A temporary file in the target's directory, renamed over the target by [`Output::commit`].
    File { tmp: PathBuf, dir: PathBuf },
    /// A block device written in place.
    Device { size: u64 },
}

/// The opened output of an export.
pub struct Output {
    pub path: PathBuf,
    pub file: File,
    kind: Kind,
    done: bool,
}

/// The smallest qcow2 image: header, L1 table and refcount table clusters and one refcount block.
fn qcow2_minimum(vsize: u64) -> u64 {
    let l1 = (vsize.div_ceil(CLUSTER as u64 * (CLUSTER as u64 / 8)) * 8).div_ceil(CLUSTER as u64);
    (3 + l1) * CLUSTER as u64
}

/// What an output of `format` for a disk of `vsize` bytes needs at least: raw the whole disk; qcow2 its
/// metadata (the data it adds is known only while writing: a device too small for it fails then, naming
/// the device and its size).
pub fn needed(format: ImageFormat, vsize: u64) -> u64 {
    match format {
        ImageFormat::Raw => vsize,
        ImageFormat::Qcow2 => qcow2_minimum(vsize),
    }
}

/// Refuse an output that cannot take an export of `src` as `format` (see the module doc). Used by
/// [`Output::open`] and by `arm`, which checks the target it is given now rather than at power-off.
pub fn check(path: &Path, src: &Source, format: ImageFormat) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(md) if md.file_type().is_block_device() => {
            check_device(path, &md, src, format)?;
            drop(open_device(path, md.rdev())?);
            Ok(())
        }
        Ok(md) if !md.is_file() => bail!(
            "refusing to write the image to {}: it exists and is neither a regular file nor a block device",
            path.display()
        ),
        Ok(_) => src.check_output(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if in_dev(path) {
                bail!(
                    "{} does not exist: an output under /dev must be an existing block device \
                     (an image file there would live in RAM and be lost at power-off)",
                    path.display()
                );
            }
            src.check_output(path)
        }
        Err(e) => Err(e).with_context(|| format!("output {}", path.display())),
    }
}

fn check_device(
    path: &Path,
    md: &std::fs::Metadata,
    src: &Source,
    format: ImageFormat,
) -> Result<()> {
    let rdev = md.rdev();
    let smd = src.file.metadata()?;
    if smd.file_type().is_block_device() && smd.rdev() == rdev {
        bail!(
            "refusing to write the image onto the source {} itself",
            src.path.display()
        );
    }
    if let Some(n) = source::devnum_name((libc::major(rdev), libc::minor(rdev))) {
        if let Some(disk) = &src.disk_name {
            if source::whole_disks(&n).contains(disk) {
                bail!(
                    "refusing to write the image to {}: it is on the disk being exported ({})",
                    path.display(),
                    src.path.display()
                );
            }
        }
        if let Some(m) = mounted_on(&n)? {
            bail!(
                "refusing to write the image to {}: {} is mounted on {} (unmount it first)",
                path.display(),
                m.source,
                m.mount_point.display()
            );
        }
    }
    let size = {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        source::device_size(&f, path)?
    };
    let need = needed(format, src.size);
    if size < need {
        bail!(
            "refusing to write the image to {}: the device holds {size} bytes, the {} image needs {need}",
            path.display(),
            match format {
                ImageFormat::Raw => "raw",
                ImageFormat::Qcow2 => "qcow2",
            }
        );
    }
    Ok(())
}

/// Open block device `path` exclusively for writing in place (no `O_CREAT`): the kernel refuses while it,
/// or one of its partitions, is mounted or held.
fn open_device(path: &Path, rdev: u64) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!(
                    "refusing to write the image to {}: the device is in use (mounted, or held by LVM, md, \
                     dm or swap)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {}", path.display()))
            }
        })?;
    // The node may have been replaced between the checks and the open.
    let md = file.metadata()?;
    if !md.file_type().is_block_device() || md.rdev() != rdev {
        bail!("{} changed while it was being opened", path.display());
    }
    Ok(file)
}

impl Output {
    /// Open the output `path` for an export of `src` as `format`, after [`check`]. Nothing is frozen yet:
    /// every refusal happens before the source is touched.
    pub fn open(path: &Path, src: &Source, format: ImageFormat) -> Result<Output> {
        check(path, src, format)?;
        let md = std::fs::metadata(path);
        match md {
            Ok(md) if md.file_type().is_block_device() => Self::device(path, md.rdev()),
            _ => Self::file(path),
        }
    }

    fn file(path: &Path) -> Result<Output> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fname = path
            .file_name()
            .context("the output needs a file name")?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{fname}.cloudprep-{}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        freeze::set_temp(Some(tmp.clone()));
        Ok(Output {
            path: path.to_path_buf(),
            file,
            kind: Kind::File { tmp, dir },
            done: false,
        })
    }

    fn device(path: &Path, rdev: u64) -> Result<Output> {
        let file = open_device(path, rdev)?;
        let size = source::device_size(&file, path)?;
        // An interrupted export must not leave the previous image's header (or a partial new one) valid.
        let head = (CLUSTER as u64).min(size) as usize;
        file.write_all_at(&vec![0u8; head], 0)
            .with_context(|| format!("writing to {}", path.display()))?;
        Ok(Output {
            path: path.to_path_buf(),
            file,
            kind: Kind::Device { size },
            done: false,
        })
    }

    /// The device's size when the output is a block device.
    pub fn device_size(&self) -> Option<u64> {
        match self.kind {
            Kind::Device { size } => Some(size),
            Kind::File { .. } => None,
        }
    }

    /// Explain a failed copy: a device too small for the qcow2 image says so.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let enospc = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC))
        });
        match self.kind {
            Kind::Device { size } if enospc => e.context(format!(
                "the image does not fit on {} ({size} bytes)",
                self.path.display()
            )),
            _ => e,
        }
    }

    /// Make the written output final: a file is renamed over the target and its directory fsynced; a
    /// device was written in place (the caller has fsynced it).
    pub fn commit(mut self) -> Result<()> {
        if let Kind::File { tmp, dir } = &self.kind {
            std::fs::rename(tmp, &self.path)
                .with_context(|| format!("renaming to {}", self.path.display()))?;
            freeze::set_temp(None);
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing directory {}", dir.display()))?;
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Kind::File { tmp, .. } = &self.kind {
            if !self.done {
                let _ = std::fs::remove_file(tmp);
                freeze::set_temp(None);
            }
        }
    }
}

/// `-o -`: refuse a standard output that is a file on one of the source's mounted filesystems (while
/// frozen, writing it would block until the watchdog fires; and the image would be inside itself).
pub fn check_stdout(src: &Source) -> Result<()> {
    let fd = std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned();
    let Ok(md) = fd.map(File::from).and_then(|f| f.metadata()) else {
        return Ok(());
    };
    if !md.is_file() {
        return Ok(());
    }
    // Which mount holds it: by its path (a btrfs file's device number is not the mount's).
    let Ok(path) = std::fs::read_link("/proc/self/fd/1") else {
        return Ok(());
    };
    let Some(holder) = source::mount_holding(&path).ok().flatten() else {
        return Ok(());
    };
    let dev = (libc::major(md.dev()), libc::minor(md.dev()));
    if let Some(m) = src
        .mounted()?
        .iter()
        .find(|m| m.devnum == dev || m.mount_point == holder.mount_point)
    {
        bail!(
            "standard output is a file on {} ({}), a filesystem of the disk being exported: redirect it to \
             another disk",
            m.mount_point.display(),
            m.source
        );
    }
    Ok(())
}

/// Is `path` under `/dev` (after resolving its directory)?
fn in_dev(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .starts_with("/dev")
}

/// A mount whose device is block device `name`, one of its partitions, or built on it (dm, md).
fn mounted_on(name: &str) -> Result<Option<source::Mount>> {
    for m in source::mounts()? {
        let Some(n) = source::mount_device(&m) else {
            continue;
        };
        if source::lineage(&n).contains(name) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// Set the final length of an output: a file is truncated/extended; a block device keeps its size and
/// must be large enough.
pub fn set_len(file: &File, len: u64) -> Result<()> {
    let md = file.metadata().context("reading the output's metadata")?;
    if md.file_type().is_block_device() {
        let size = source::device_size(file, Path::new("the output device"))?;
        if len > size {
            bail!("the image needs {len} bytes, the output device holds {size}");
        }
        return Ok(());
    }
    file.set_len(len).context("setting the output's size")
}

/// Zero `len` bytes at `off` of a block device: BLKZEROOUT for the 512-aligned part (the kernel offloads
/// it or writes zeros itself), plain writes for the rest.
pub fn zero_range(file: &File, off: u64, len: u64) -> Result<()> {
    static ZEROS: [u8; 65536] = [0; 65536];
    let end = off + len;
    let a = off.next_multiple_of(512);
    let b = end / 512 * 512;
    let mut plain = vec![(off, end)];
    if b > a && b - a >= 65536 {
        let range = [a, b - a];
        // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer, which is valid.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(file),
                BLKZEROOUT,
                range.as_ptr(),
            )
        };
        if r == 0 {
            plain = vec![(off, a), (b, end)];
        }
    }
    for (mut s, e) in plain {
        while s < e {
            let n = (e - s).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], s)
                .context("writing zeros to the output device")?;
            s += n as u64;
        }
    }
    Ok(())
}

/// `_IO(0x12, 127)`.
const BLKZEROOUT: libc::Ioctl = nix::request_code_none!(0x12, 127) as libc::Ioctl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_needed() {
        assert_eq!(needed(ImageFormat::Raw, 12345), 12345);
        // 1 GiB: one L1 cluster, plus header, refcount table and block.
        assert_eq!(needed(ImageFormat::Qcow2, 1 << 30), 4 * 65536);
        assert!(needed(ImageFormat::Qcow2, 1 << 50) > needed(ImageFormat::Qcow2, 1 << 40));
    }

    #[test]
    fn dev_paths() {
        assert!(in_dev(Path::new("/dev/vdb")));
        assert!(in_dev(Path::new("/dev/disk/by-id/x")) || !Path::new("/dev/disk/by-id").exists());
        assert!(!in_dev(Path::new("/var/tmp/x.raw")));
    }
}
