//! Installing the removable fallback loader (`\EFI\BOOT\BOOTX64.EFI`) into the EFI system partition by
//! copying the guest's own boot loader files inside the ESP.
//!
//! The plan carries it as a command cloudprep runs itself (`cloudprep esp-install ...`, never a guest
//! program), so `audit` and `fix --dry-run` show it as it will run:
//! - `--dir /boot/efi`: the ESP is mounted there; the copies are ordinary guest file writes (backed up,
//!   atomic, journaled, undone by rollback like every other file).
//! - `--device DEV --offset N --length L`: the ESP is not mounted (or the host cannot mount vfat); the
//!   FAT is written directly by [`crate::guest::fat`]. Before the writes, the old bytes of every range are saved
//!   in the run directory and journaled ([`super::journal::Entry::EspWrite`]); rollback writes them back,
//!   but only while every range still holds either what the run wrote or what was there before.

use crate::checks::{order, Phase, PlannedCommand};
use crate::guest::fat;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileExt;

pub const PROGRAM: &str = "cloudprep";
pub const SUBCOMMAND: &str = "esp-install";
/// An EFI binary larger than this is not copied (shim and GRUB are a few MiB).
pub const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The guest directory the ESP is mounted at.
    Dir(String),
    /// The ESP's byte range on a host block device or image.
    Device {
        device: String,
        offset: u64,
        length: u64,
    },
}

/// Copy each (source, destination) file, both paths relative to the ESP's root (`EFI/debian/grubx64.efi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub target: Target,
    pub copies: Vec<(String, String)>,
}

impl Install {
    pub fn command(&self, reason: &str) -> PlannedCommand {
        let mut argv: Vec<String> = vec![PROGRAM.into(), SUBCOMMAND.into()];
        match &self.target {
            Target::Dir(d) => argv.extend(["--dir".into(), d.clone()]),
            Target::Device {
                device,
                offset,
                length,
            } => argv.extend([
                "--device".into(),
                device.clone(),
                "--offset".into(),
                offset.to_string(),
                "--length".into(),
                length.to_string(),
            ]),
        }
        for (s, d) in &self.copies {
            argv.push(format!("{s}={d}"));
        }
        PlannedCommand {
            argv,
            phase: Phase::Post,
            order: order::GRUB_INSTALL,
            reason: reason.to_string(),
            stdin: None,
        }
    }

    /// The install an argv describes; None when it is not a `cloudprep esp-install` argv.
    pub fn parse(argv: &[String]) -> Option<Result<Install>> {
        if argv.first().map(String::as_str) != Some(PROGRAM)
            || argv.get(1).map(String::as_str) != Some(SUBCOMMAND)
        {
            return None;
        }
        Some(parse_args(&argv[2..]))
    }
}

fn parse_args(args: &[String]) -> Result<Install> {
    let (mut dir, mut device, mut offset, mut length) = (None, None, None, None);
    let mut copies = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--dir" => dir = Some(val()?),
            "--device" => device = Some(val()?),
            "--offset" => offset = Some(val()?.parse::<u64>().context("--offset")?),
            "--length" => length = Some(val()?.parse::<u64>().context("--length")?),
            c => match c.split_once('=') {
                Some((s, d)) if !s.is_empty() && !d.is_empty() => {
                    copies.push((s.to_string(), d.to_string()))
                }
                _ => bail!("esp-install: unexpected argument {c:?}"),
            },
        }
    }
    let target = match (dir, device, offset, length) {
        (Some(d), None, None, None) => Target::Dir(d),
        (None, Some(device), Some(offset), Some(length)) => Target::Device {
            device,
            offset,
            length,
        },
        _ => bail!("esp-install needs --dir, or --device with --offset and --length"),
    };
    if copies.is_empty() {
        bail!("esp-install: nothing to copy");
    }
    Ok(Install { target, copies })
}

/// The FAT writes that make the copies on an unmounted ESP (empty when they are already there).
pub fn plan_fat(
    dev: &dyn fat::Dev,
    offset: u64,
    length: u64,
    copies: &[(String, String)],
) -> Result<fat::Plan> {
    let mut v = fat::Volume::open(dev, offset, length)?;
    for (src, dst) in copies {
        let data = v
            .read_file(src, MAX_FILE)?
            .with_context(|| format!("{} is not in the EFI system partition", fat::dos(src)))?;
        if let Some((parent, _)) = dst.rsplit_once('/') {
            v.create_dir_all(parent)?;
        }
        v.write_file(dst, &data)?;
    }
    v.plan()
}

/// The bytes of `areas` (offset, length) of `file`, concatenated.
pub fn read_areas(file: &std::fs::File, name: &str, areas: &[(u64, u64)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for &(o, l) in areas {
        let mut b = vec![0u8; usize::try_from(l)?];
        file.read_exact_at(&mut b, o)
            .with_context(|| format!("reading {name} at byte {o}"))?;
        out.extend(b);
    }
    Ok(out)
}

/// Write `data` (as read by [`read_areas`]) to `areas`, then flush.
pub fn write_areas(
    file: &std::fs::File,
    name: &str,
    areas: &[(u64, u64)],
    data: &[u8],
) -> Result<()> {
    let total: u64 = areas.iter().map(|a| a.1).sum();
    if total != data.len() as u64 {
        bail!(
            "saved ESP bytes are {} bytes, the ranges {total}",
            data.len()
        );
    }
    let mut at = 0usize;
    for &(o, l) in areas {
        file.write_all_at(&data[at..at + l as usize], o)
            .with_context(|| format!("writing {name} at byte {o}"))?;
        at += l as usize;
    }
    file.sync_all().with_context(|| format!("flushing {name}"))
}

/// What rollback does with saved ESP ranges, given what each range holds now: restore the old bytes only
/// when every range holds either the bytes the run wrote or the old ones (a run interrupted half-way);
/// leave the device alone when something else wrote there since (or it is another device now).
#[derive(Debug, PartialEq, Eq)]
pub enum Restore {
    /// Every range already holds the old bytes.
    Nothing,
    Write,
    /// Range index that holds neither.
    Changed(usize),
}

pub fn restore_decision(areas: &[(u64, u64)], now: &[u8], old: &[u8], new: &[u8]) -> Restore {
    let mut at = 0usize;
    let mut all_old = true;
    for (i, &(_, l)) in areas.iter().enumerate() {
        let r = at..at + l as usize;
        let (n, o, w) = (now.get(r.clone()), old.get(r.clone()), new.get(r.clone()));
        if n != o {
            all_old = false;
            if n != w || n.is_none() {
                return Restore::Changed(i);
            }
        }
        at = r.end;
    }
    if all_old {
        Restore::Nothing
    } else {
        Restore::Write
    }
}

/// Open a device (or image) to read or write the ESP on it, with its clean cached pages dropped first: a
/// partition and its whole disk are separate block devices with separate page caches, so what was written
/// through one may be stale in the other's cache.
pub fn open_device(device: &str, write: bool) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(device)
        .with_context(|| format!("opening {device}"))?;
    // SAFETY: valid fd; advice only.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(f)
}

/// Where the block device `device` (or a partition of it) is mounted, if anywhere.
pub fn mounted_at(device: &str) -> Result<Option<String>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(device).with_context(|| format!("reading {device}"))?;
    if !m.file_type().is_block_device() {
        return Ok(None);
    }
    let (maj, min) = (libc::major(m.rdev()), libc::minor(m.rdev()));
    let mut devs = vec![format!("{maj}:{min}")];
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    if let Ok(rd) = std::fs::read_dir(&sys) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                if let Ok(d) = std::fs::read_to_string(e.path().join("dev")) {
                    devs.push(d.trim().to_string());
                }
            }
        }
    }
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(crate::guest::facts::parse_mountinfo(&text)
        .into_iter()
        .find(|m| devs.contains(&m.dev))
        .map(|m| m.target))
}

/// Roll back one journaled [`super::journal::Entry::EspWrite`]: `Ok(Some(why))` when the device is
/// left alone on purpose.
pub fn restore(run: &super::atomic::Dir, e: &super::journal::Entry) -> Result<Option<String>> {
    let super::journal::Entry::EspWrite {
        device,
        areas,
        backup,
        sha256,
        written,
        written_sha256,
    } = e
    else {
        return Ok(None);
    };
    // Saved copies only from the run's own files/ (`esp-N.old`/`esp-N.new`), never a path the journal names.
    let load = |rel: &str, sum: &str| -> Result<Vec<u8>> {
        let name = rel
            .strip_prefix("files/esp-")
            .and_then(|n| n.strip_suffix(".old").or_else(|| n.strip_suffix(".new")))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| &rel["files/".len()..])
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the journal names the saved copy {rel:?}: not one cloudprep writes"
                )
            })?;
        let b = match run.open_sub("files")?.read(name)? {
            super::atomic::Existing::File { bytes, .. } => bytes,
            _ => bail!(
                "the saved copy {}/{rel} is missing or not a regular file",
                run.guest
            ),
        };
        if super::atomic::sha256(&b) != sum {
            bail!("the saved copy {}/{rel} is damaged", run.guest);
        }
        Ok(b)
    };
    let old = load(backup, sha256)?;
    let new = load(written, written_sha256)?;
    let file = open_device(device, true)?;
    let now = read_areas(&file, device, areas)?;
    match restore_decision(areas, &now, &old, &new) {
        Restore::Nothing => Ok(None),
        Restore::Write => {
            if let Some(m) = mounted_at(device)? {
                return Ok(Some(format!(
                    "{device} is mounted at {m}: its EFI system partition was not restored (unmount it and run rollback again)"
                )));
            }
            write_areas(&file, device, areas, &old)?;
            Ok(None)
        }
        Restore::Changed(i) => Ok(Some(format!(
            "{device}: the bytes at {} hold neither what the run wrote nor what was there before (the EFI \
             system partition changed since the run, or another device has that name now): not restored",
            areas[i].0
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trip() {
        let i = Install {
            target: Target::Device {
                device: "/dev/loop3p1".into(),
                offset: 0,
                length: 100 << 20,
            },
            copies: vec![(
                "EFI/debian/grubx64.efi".into(),
                "EFI/BOOT/BOOTX64.EFI".into(),
            )],
        };
        let c = i.command("x");
        assert_eq!(
            c.display(),
            "cloudprep esp-install --device /dev/loop3p1 --offset 0 --length 104857600 EFI/debian/grubx64.efi=EFI/BOOT/BOOTX64.EFI"
        );
        assert_eq!(Install::parse(&c.argv).unwrap().unwrap(), i);
        let d = Install {
            target: Target::Dir("/boot/efi".into()),
            copies: i.copies.clone(),
        };
        assert_eq!(Install::parse(&d.command("x").argv).unwrap().unwrap(), d);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(Install::parse(&s(&["grub-install", "/dev/sda"])).is_none());
        assert!(Install::parse(&s(&["cloudprep", "esp-install", "--dir"]))
            .unwrap()
            .is_err());
        assert!(
            Install::parse(&s(&["cloudprep", "esp-install", "--dir", "/boot/efi"]))
                .unwrap()
                .is_err()
        );
        assert!(Install::parse(&s(&[
            "cloudprep",
            "esp-install",
            "--device",
            "/dev/x",
            "a=b"
        ]))
        .unwrap()
        .is_err());
    }

    #[test]
    fn restore_only_what_the_run_wrote() {
        let areas = [(0, 2), (10, 2)];
        let old = b"aabb";
        let new = b"xxyy";
        assert_eq!(restore_decision(&areas, b"xxyy", old, new), Restore::Write);
        // Interrupted after the first range.
        assert_eq!(restore_decision(&areas, b"xxbb", old, new), Restore::Write);
        assert_eq!(
            restore_decision(&areas, b"aabb", old, new),
            Restore::Nothing
        );
        assert_eq!(
            restore_decision(&areas, b"xxzz", old, new),
            Restore::Changed(1)
        );
        assert_eq!(
            restore_decision(&areas, b"xx", old, new),
            Restore::Changed(1)
        );
    }
}
