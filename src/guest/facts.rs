//! Facts about the guest, gathered once before the checks run. Live-only facts (interfaces, CPU, RAM) are
//! `None` ("unavailable") under `--root` on an offline image rather than taken from the host.

use crate::guest::dpkg::{self, Package};
use crate::guest::root::Root;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: String,
    pub version_id: String,
    pub version_codename: String,
    pub pretty_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    /// Mount point as the guest sees it.
    pub target: String,
    pub source: String,
    pub fstype: String,
    pub options: String,
    /// `major:minor` of the mounted device.
    pub dev: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Filesystem {
    /// Device node path (host view), e.g. `/dev/sda1` or `/dev/loop3p1`.
    pub device: String,
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub partuuid: Option<String>,
    pub size: Option<u64>,
    /// `major:minor` of the device.
    pub dev: String,
    /// Whole disks (sysfs names) holding this device, through partitions and dm/md slaves.
    pub disks: Vec<String>,
    /// Partition number, when the device is a partition.
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Disk {
    pub name: String,
    pub size: u64,
    pub partitions: Vec<String>,
    pub removable: bool,
    pub kind: String,
    /// `major:minor` of the device.
    pub dev: String,
    /// Devices a dm/md disk is built on (sysfs names).
    pub slaves: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Route {
    pub destination: String,
    pub gateway: Option<String>,
    pub interface: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub root: String,
    pub live: bool,
    pub os: Option<OsRelease>,
    pub arch: Option<String>,
    /// Kernel versions with a `/boot/vmlinuz-*`.
    pub kernels: Vec<String>,
    pub boot_mode: Option<BootMode>,
    /// How `boot_mode` was decided.
    pub boot_mode_source: String,
    pub cpus: Option<usize>,
    pub memory_bytes: Option<u64>,
    pub mounts: Vec<Mount>,
    pub disks: Vec<Disk>,
    pub filesystems: Vec<Filesystem>,
    /// Host device holding the guest's `/`.
    pub root_device: Option<String>,
    pub interfaces: Option<Vec<Interface>>,
    pub routes: Option<Vec<Route>>,
    pub kernel_cmdline: Option<String>,
    #[serde(skip)]
    pub packages: BTreeMap<String, Package>,
    /// Facts that could not be gathered, with the reason (never silently missing).
    pub unavailable: BTreeMap<String, String>,
}

impl Facts {
    pub fn installed(&self, pkg: &str) -> bool {
        self.packages.get(pkg).is_some_and(|p| p.is_installed())
    }

    /// The filesystem on a host device path.
    pub fn filesystem(&self, device: &str) -> Option<&Filesystem> {
        self.filesystems.iter().find(|f| f.device == device)
    }

    /// The mount of a guest mount point.
    pub fn mount_at(&self, target: &str) -> Option<&Mount> {
        self.mounts.iter().rev().find(|m| m.target == target)
    }

    pub fn gather(root: &Root) -> Facts {
        let mut f = Facts {
            root: root.base().display().to_string(),
            live: root.is_live(),
            ..Default::default()
        };
        match root.read_text("/etc/os-release").and_then(|t| match t {
            Some(t) => Ok(Some(t)),
            None => root.read_text("/usr/lib/os-release"),
        }) {
            Ok(Some(t)) => f.os = Some(parse_os_release(&t)),
            Ok(None) => {
                f.unavailable.insert(
                    "os".into(),
                    "no /etc/os-release or /usr/lib/os-release".into(),
                );
            }
            Err(e) => {
                f.unavailable.insert("os".into(), format!("{e:#}"));
            }
        }
        // The package database of a big system can pass the config-file limit.
        match root.read_text_limited("/var/lib/dpkg/status", 256 << 20) {
            Ok(Some(t)) => f.packages = dpkg::parse_status(&t),
            Ok(None) => {
                f.unavailable
                    .insert("packages".into(), "no /var/lib/dpkg/status".into());
            }
            Err(e) => {
                f.unavailable.insert("packages".into(), format!("{e:#}"));
            }
        }
        f.arch = guest_arch(root, &f.packages);
        f.kernels = root
            .list_dir("/boot")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
            .collect();
        sort_kernel_versions(&mut f.kernels);

        let (mode, src) = detect_boot_mode(root, &f);
        f.boot_mode = mode;
        f.boot_mode_source = src;

        match read_mounts(root) {
            Ok(m) => f.mounts = m,
            Err(e) => {
                f.unavailable.insert("mounts".into(), format!("{e:#}"));
            }
        }
        if f.live {
            let mut sys = sysinfo::System::new();
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            f.cpus = Some(sys.cpus().len().max(1));
            f.memory_bytes = Some(sys.total_memory());
            f.kernel_cmdline = std::fs::read_to_string("/proc/cmdline")
                .ok()
                .map(|s| s.trim().to_string());
            f.interfaces = Some(crate::guest::netfacts::interfaces());
            f.routes = Some(crate::guest::netfacts::routes());
        } else {
            for k in ["cpus", "memory", "interfaces", "routes", "kernel_cmdline"] {
                f.unavailable.insert(
                    k.into(),
                    "not available for an offline root (--root)".into(),
                );
            }
        }
        let (disks, filesystems, root_device) = crate::guest::probe::gather(root, &f.mounts);
        f.disks = disks;
        f.filesystems = filesystems;
        f.root_device = root_device;
        f
    }
}

pub fn parse_os_release(text: &str) -> OsRelease {
    let mut o = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim() {
            "ID" => o.id = v,
            "ID_LIKE" => o.id_like = v,
            "VERSION_ID" => o.version_id = v,
            "VERSION_CODENAME" => o.version_codename = v,
            "PRETTY_NAME" => o.pretty_name = v,
            _ => {}
        }
    }
    o
}

/// Remove one level of shell-style quotes.
pub fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        v.to_string()
    }
}

fn guest_arch(root: &Root, pkgs: &BTreeMap<String, Package>) -> Option<String> {
    // dpkg's native architecture is the one of the dpkg package itself.
    if let Some(p) = pkgs.get("dpkg") {
        if !p.arch.is_empty() {
            return Some(p.arch.clone());
        }
    }
    // Fall back to the ELF header of a core binary.
    for b in ["/bin/sh", "/usr/bin/env", "/bin/ls"] {
        if let Ok(Some(bytes)) = root.read(b) {
            if bytes.len() > 20 && &bytes[..4] == b"\x7fELF" {
                let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
                return Some(
                    match machine {
                        0x3e => "amd64",
                        0x03 => "i386",
                        0xb7 => "arm64",
                        0x28 => "armhf",
                        0x15 => "ppc64el",
                        0x16 => "s390x",
                        _ => "unknown",
                    }
                    .to_string(),
                );
            }
        }
    }
    None
}

/// Sort kernel versions newest last, comparing numeric runs numerically.
pub fn sort_kernel_versions(v: &mut [String]) {
    v.sort_by_cached_key(|a| version_key(a));
}

fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut txt = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !txt.is_empty() {
                out.push((0, std::mem::take(&mut txt)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                num.clear();
            }
            txt.push(c);
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !txt.is_empty() {
        out.push((0, txt));
    }
    out
}

fn detect_boot_mode(root: &Root, f: &Facts) -> (Option<BootMode>, String) {
    if f.live {
        return if std::path::Path::new("/sys/firmware/efi").exists() {
            (Some(BootMode::Uefi), "/sys/firmware/efi exists".into())
        } else {
            (Some(BootMode::Bios), "/sys/firmware/efi absent".into())
        };
    }
    // Offline: the bootloader package tells.
    let efi = [
        "grub-efi-amd64",
        "grub-efi-amd64-signed",
        "grub-efi-ia32",
        "systemd-boot",
    ]
    .iter()
    .any(|p| f.installed(p));
    let bios = f.installed("grub-pc");
    match (efi, bios) {
        (true, false) => (Some(BootMode::Uefi), "grub-efi package installed".into()),
        (false, true) => (Some(BootMode::Bios), "grub-pc package installed".into()),
        (true, true) => (
            Some(BootMode::Bios),
            "both grub-pc and grub-efi installed; assuming BIOS".into(),
        ),
        (false, false) => {
            if root.is_dir("/boot/efi/EFI") {
                (Some(BootMode::Uefi), "/boot/efi/EFI exists".into())
            } else if esp_in_fstab(root) {
                (
                    Some(BootMode::Uefi),
                    "/etc/fstab mounts an EFI system partition (vfat at /boot/efi)".into(),
                )
            } else {
                (None, "no bootloader package found".into())
            }
        }
    }
}

/// Does /etc/fstab mount a FAT filesystem at /boot/efi (the ESP)?
fn esp_in_fstab(root: &Root) -> bool {
    root.read_text("/etc/fstab")
        .ok()
        .flatten()
        .is_some_and(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 3 && !f[0].starts_with('#') && f[1] == "/boot/efi" && f[2] == "vfat"
            })
        })
}

/// Mounts of the guest: on a live system all of mountinfo; under `--root`, those at or below the root,
/// with targets translated to guest paths.
pub fn read_mounts(root: &Root) -> anyhow::Result<Vec<Mount>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let base = root.base().display().to_string();
    let mut out = Vec::new();
    for m in parse_mountinfo(&text) {
        let target = if root.is_live() {
            m.target.clone()
        } else if m.target == base {
            "/".to_string()
        } else if let Some(rest) = m.target.strip_prefix(&format!("{base}/")) {
            format!("/{rest}")
        } else {
            continue;
        };
        out.push(Mount { target, ..m });
    }
    Ok(out)
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < sep + 3 || sep < 6 {
            continue;
        }
        out.push(Mount {
            target: unescape_octal(f[4]),
            source: unescape_octal(f[sep + 2]),
            fstype: f[sep + 1].to_string(),
            options: f[5].to_string(),
            dev: f[2].to_string(),
        });
    }
    out
}

/// Decode `\040`-style escapes used in mountinfo and fstab.
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // `\ooo` up to `\377` (one byte); a larger value is not an escape and stays literal.
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release() {
        let o = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 8 (jessie)\"\nID=debian\nVERSION_ID=\"8\"\n# c\n",
        );
        assert_eq!(o.id, "debian");
        assert_eq!(o.version_id, "8");
        assert_eq!(o.pretty_name, "Debian GNU/Linux 8 (jessie)");
    }

    #[test]
    fn kernel_sort() {
        let mut v = vec![
            "5.10.0-9-amd64".to_string(),
            "5.10.0-28-amd64".into(),
            "4.19.0-6-amd64".into(),
        ];
        sort_kernel_versions(&mut v);
        assert_eq!(
            v,
            vec!["4.19.0-6-amd64", "5.10.0-9-amd64", "5.10.0-28-amd64"]
        );
    }

    #[test]
    fn mountinfo() {
        let t = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n30 22 0:5 / /mnt/my\\040disk rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].source, "/dev/sda1");
        assert_eq!(m[0].dev, "8:1");
        assert_eq!(m[1].target, "/mnt/my disk");
    }
}
