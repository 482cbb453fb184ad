//! Checks: storage layout. Devices that will be absent after import (extra disks, network filesystems,
//! CD-ROMs, USB) need `nofail`; `/` and `/boot` (or an LVM volume group) spread over several disks cannot be
//! imported as one image.

pub mod fstab;

use crate::checks::{Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Severity, Validator};
use anyhow::Result;
use fstab::{DiskId, Entry, Resolver, FSTAB};
use std::collections::BTreeMap;

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "storage.absent-devices",
            "fstab mounts devices that will be absent after import without nofail",
            Storage,
            Warning,
            true,
            check_absent
        ),
        check!(
            "storage.root-boot-split",
            "/ and /boot (or /usr) are on different disks",
            Storage,
            Blocker,
            false,
            check_split
        ),
        check!(
            "storage.lvm-multi-disk",
            "an LVM volume group spans several disks",
            Storage,
            Warning,
            false,
            check_lvm
        ),
        check!(
            "storage.offline-mounts",
            "a filesystem the guest's fstab mounts is not mounted under --root",
            Storage,
            Blocker,
            false,
            check_offline_mounts
        ),
        check!(
            "storage.multiple-disks",
            "the guest uses more than one disk",
            Storage,
            Info,
            false,
            check_multi
        ),
    ]
}

const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "sshfs",
    "fuse.sshfs",
    "glusterfs",
    "fuse.glusterfs",
    "ceph",
    "fuse.ceph",
    "cephfs",
    "ncpfs",
    "davfs",
    "fuse.davfs2",
    "afs",
    "9p",
    "lustre",
    "ocfs2",
    "gfs2",
    "fuse.s3fs",
    "s3fs",
];

const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "devtmpfs",
    "securityfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "usbfs",
    "binfmt_misc",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "efivarfs",
    "pstore",
    "configfs",
    "ramfs",
    "rpc_pipefs",
    "none",
    "overlay",
    "squashfs",
];

/// Is an fstab entry a network filesystem?
pub fn is_network(e: &Entry) -> bool {
    let t = e.fstype();
    NETWORK_FS.contains(&t)
        || t.starts_with("nfs")
        || e.has_option("_netdev")
        || e.spec().starts_with("//")
        || (!e.spec().starts_with('/') && e.spec().contains(":/"))
        || e.spec().starts_with("sshfs#")
}

/// Removable media (CD-ROM, floppy, USB), by device name or filesystem type.
pub fn removable_media(e: &Entry) -> Option<&'static str> {
    let s = e.spec();
    let dev = s.strip_prefix("/dev/").unwrap_or("");
    let digits = |p: &str| {
        dev.strip_prefix(p)
            .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()))
    };
    if digits("sr") || digits("scd") || digits("cdrom") || digits("dvd") || digits("cdrw") {
        return Some("a CD/DVD drive");
    }
    if e.fstype().split(',').any(|t| t == "iso9660" || t == "udf") {
        return Some("a CD/DVD filesystem");
    }
    if digits("fd") || dev == "floppy" {
        return Some("a floppy drive");
    }
    if s.starts_with("/dev/disk/by-id/usb-")
        || s.starts_with("/dev/disk/by-path/") && s.contains("-usb-")
    {
        return Some("a USB device");
    }
    None
}

fn is_device_spec(s: &str) -> bool {
    s.starts_with("/dev/")
        || ["UUID=", "LABEL=", "PARTUUID=", "PARTLABEL="]
            .iter()
            .any(|p| s.starts_with(p))
}

fn is_pseudo(e: &Entry) -> bool {
    PSEUDO_FS.contains(&e.fstype()) || e.has_option("bind") || e.has_option("rbind")
}

/// Mount points of the guest's fstab that a fix reads or writes (kernel and initramfs, the journal and
/// backups under /var/lib/cloudprep, packages).
pub const FIX_MOUNTS: &[&str] = &["/boot", "/boot/efi", "/var", "/usr"];

/// An fstab entry for one of [`FIX_MOUNTS`] with nothing mounted there under an offline `--root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmounted {
    pub mountpoint: String,
    pub spec: String,
    pub line: usize,
    pub text: String,
}

/// The entries of [`FIX_MOUNTS`] that the guest mounts at boot (no `noauto`) and `mounted` says are not
/// there.
pub fn unmounted(entries: &[Entry], mounted: &dyn Fn(&str) -> bool) -> Vec<Unmounted> {
    let mut out: Vec<Unmounted> = Vec::new();
    for e in entries {
        let mp = e.mountpoint().trim_end_matches('/');
        if e.fields.len() < 3
            || !FIX_MOUNTS.contains(&mp)
            || e.has_option("noauto")
            || is_pseudo(e)
            || e.fstype() == "swap"
            || mounted(mp)
            || out.iter().any(|u| u.mountpoint == mp)
        {
            continue;
        }
        out.push(Unmounted {
            mountpoint: mp.to_string(),
            spec: e.spec().to_string(),
            line: e.line,
            text: e.text.clone(),
        });
    }
    out
}

/// For an offline `--root`: the filesystems of [`FIX_MOUNTS`] that the guest's fstab mounts and that are not
/// mounted below the root (empty for the running system). A root that is not itself a mount point (a
/// copied tree) counts a non-empty directory as present.
pub fn offline_unmounted(
    root: &crate::guest::root::Root,
    mounts: &[crate::guest::facts::Mount],
) -> Result<Vec<Unmounted>> {
    if root.is_live() {
        return Ok(Vec::new());
    }
    let Some(text) = root.read_text(FSTAB)? else {
        return Ok(Vec::new());
    };
    let t = fstab::parse_fstab(&text);
    let root_mounted = mounts.iter().any(|m| m.target == "/");
    let mounted = |mp: &str| {
        mounts.iter().any(|m| m.target == mp)
            || (!root_mounted && root.list_dir(mp).is_ok_and(|l| !l.is_empty()))
    };
    Ok(unmounted(&t.entries, &mounted))
}

fn check_offline_mounts(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let missing = offline_unmounted(ctx.root, &ctx.facts.mounts)?;
    Ok(missing
        .into_iter()
        .map(|u| {
            let at = ctx.root.display(&u.mountpoint);
            if u.mountpoint == "/boot/efi" {
                // boot.grub-installed reads and repairs the EFI system partition through its partition, not
                // through the mount point: only a GRUB EFI install in this root would write the directory.
                return Finding::new(
                    info,
                    format!(
                        "the guest mounts {} on /boot/efi (fstab line {}), but nothing is mounted at {at}: cloudprep \
                         checks and repairs the EFI system partition through its partition, but anything else that \
                         writes /boot/efi in this root (a GRUB upgrade) would write the empty directory",
                        u.spec, u.line
                    ),
                )
                .severity(Severity::Warning)
                .evidence(Evidence::line(FSTAB, u.line, &u.text))
                .remediation(format!(
                    "mount the guest's EFI system partition ({}) at {at} before running anything else in this root",
                    u.spec
                ));
            }
            Finding::new(
                info,
                format!(
                    "the guest mounts {} on {} (fstab line {}), but nothing is mounted at {at}: the audit reads, \
                     and a fix would write, the empty mount-point directory on the root filesystem instead of \
                     the guest's {} filesystem",
                    u.spec, u.mountpoint, u.line, u.mountpoint
                ),
            )
            .evidence(Evidence::line(FSTAB, u.line, &u.text))
            .remediation(format!(
                "mount the guest's {} filesystem ({}) at {at}, then run cloudprep again",
                u.mountpoint, u.spec
            ))
        })
        .collect())
}

/// The disk holding `/` according to fstab (else the probed root device).
fn root_disk(ctx: &Ctx, r: &Resolver, entries: &[Entry]) -> Option<DiskId> {
    if let Some(e) = entries.iter().rev().find(|e| e.mountpoint() == "/") {
        if let Some(d) = r.disk_of(e.spec(), "/") {
            return Some(d);
        }
    }
    let rd = ctx.facts.root_device.as_deref()?;
    let f = ctx.facts.filesystem(rd)?;
    (!f.disks.is_empty()).then(|| DiskId::host(f.disks.clone()))
}

/// Add options to the entry for `spec` on `mp` (found by its device, or at `line` when another fix renamed
/// the device).
fn add_options(
    fstab_text: &str,
    line: usize,
    spec: &str,
    mp: &str,
    add: &[&'static str],
) -> String {
    fstab::rewrite_fields_at(fstab_text, |n, f| {
        if f.len() < 2 || f[1] != mp || (f[0] != spec && n != line) {
            return Vec::new();
        }
        let cur = f.get(3).map(String::as_str).unwrap_or("");
        let missing: Vec<&str> = add
            .iter()
            .copied()
            .filter(|o| !fstab::has_option(cur, o))
            .collect();
        if missing.is_empty() {
            return Vec::new();
        }
        if f.len() < 3 {
            return Vec::new();
        }
        let new = if cur.is_empty() {
            missing.join(",")
        } else {
            format!("{},{}", cur, missing.join(","))
        };
        vec![(3, fstab::escape_field(&new))]
    })
}

fn check_absent(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(t) = fstab::read_fstab(ctx)? else {
        return Ok(Vec::new());
    };
    let r = Resolver::new(ctx, &t.entries);
    let root = root_disk(ctx, &r, &t.entries);
    let hidden_content = ctx
        .facts
        .filesystems
        .iter()
        .any(|f| f.fstype == "LVM2_member" || f.fstype == "crypto_LUKS");
    let mut out = Vec::new();
    for e in &t.entries {
        let mp = e.mountpoint();
        if e.fields.len() < 3 || e.has_option("nofail") || e.has_option("noauto") {
            continue;
        }
        if matches!(mp, "/" | "/boot" | "/usr") {
            continue;
        }
        let (why, add): (String, &[&'static str]) = if is_network(e) {
            (
                format!("{} is a network filesystem ({}): the cloud instance may not reach its server, and \
                         boot waits for it", e.spec(), e.fstype()),
                if e.fstype().starts_with("nfs") || e.fstype() == "cifs" {
                    &["nofail"]
                } else {
                    &["nofail", "_netdev"]
                },
            )
        } else if is_pseudo(e) || !is_device_spec(e.spec()) {
            continue;
        } else if let Some(m) = removable_media(e) {
            (
                format!(
                    "{} is {m}, which the cloud instance does not have",
                    e.spec()
                ),
                &["nofail"],
            )
        } else {
            let removable = r
                .host_fs(e.spec(), mp)
                .and_then(|(f, _)| {
                    ctx.facts
                        .disks
                        .iter()
                        .find(|d| f.disks.contains(&d.name) && d.removable)
                })
                .map(|d| d.name.clone());
            if let Some(d) = removable {
                (
                    format!("{} is on the removable disk {d}", e.spec()),
                    &["nofail"],
                )
            } else {
                let disk = r.disk_of(e.spec(), mp);
                match (&disk, &root) {
                    (Some(d), Some(rd)) if rd.same(d) == Some(false) => (
                        format!(
                            "{} is on another disk ({}) than / ({}): the imported image holds only the root \
                             disk, so it is absent unless that disk is imported and attached as a volume",
                            e.spec(),
                            d.describe(),
                            rd.describe()
                        ),
                        &["nofail"],
                    ),
                    // Not found among the probed filesystems, and nothing (LVM, LUKS) that could hide it.
                    (None, Some(DiskId { host: Some(_), .. }))
                        if !hidden_content
                            && (e.spec().starts_with("UUID=")
                            || e.spec().starts_with("LABEL=")
                            || e.spec().starts_with("PARTUUID=")) =>
                    {
                        (
                            format!(
                                "{} is not on any disk of the guest that cloudprep can see",
                                e.spec()
                            ),
                            &["nofail"],
                        )
                    }
                    _ => continue,
                }
            }
        };
        if e.fstype() == "swap" {
            // Swap on the root disk was skipped above by the disk comparison; elsewhere it may be absent.
        }
        let (spec, mp2, line) = (e.spec().to_string(), mp.to_string(), e.line);
        let opts = add.join(",");
        out.push(
            Finding::new(
                info,
                format!(
                    "{FSTAB} line {} mounts {mp} at boot: {why}. Without `nofail` a missing device stops the \
                     boot in emergency mode after a timeout.",
                    e.line
                ),
            )
            .evidence(Evidence::line(FSTAB, e.line, &e.text))
            .remediation(format!(
                "Add `{opts}` to the options of line {} of {FSTAB} (or `noauto` if it is not needed at boot).",
                e.line
            ))
            .fix(Fix::default().edit(FileEdit::rewrite(FSTAB, Validator::Fstab, move |c| {
                Ok(add_options(c, line, &spec, &mp2, add))
            }))),
        );
    }
    Ok(out)
}

fn check_split(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(t) = fstab::read_fstab(ctx)? else {
        return Ok(Vec::new());
    };
    let r = Resolver::new(ctx, &t.entries);
    let Some(root) = root_disk(ctx, &r, &t.entries) else {
        return Ok(Vec::new());
    };
    let root_line = t.entries.iter().rev().find(|e| e.mountpoint() == "/");
    let mut out = Vec::new();
    for (mp, sev) in [("/boot", Severity::Blocker), ("/usr", Severity::Warning)] {
        let Some(e) = t.entries.iter().rev().find(|e| e.mountpoint() == mp) else {
            continue;
        };
        if e.has_option("noauto") {
            continue;
        }
        let Some(d) = r.disk_of(e.spec(), mp) else {
            continue;
        };
        if root.same(&d) != Some(false) {
            continue;
        }
        let mut f = Finding::new(
            info,
            format!(
                "{mp} ({}, disk {}) is on a different disk than / (disk {}). The cloud boots the single \
                 imported image: {}",
                e.spec(),
                d.describe(),
                root.describe(),
                if mp == "/boot" {
                    "GRUB in its MBR cannot find the kernel on a disk that is not part of it"
                } else {
                    "the initramfs must mount /usr from a second disk that is not there at first boot"
                }
            ),
        )
        .severity(sev)
        .evidence(Evidence::line(FSTAB, e.line, &e.text));
        if let Some(rl) = root_line {
            f = f.evidence(Evidence::line(FSTAB, rl.line, &rl.text));
        }
        out.push(f.remediation(format!(
            "Move {mp} onto the root disk before migrating (copy its content into the root filesystem, drop \
             its fstab line, then run update-grub and grub-install on the root disk)."
        )));
    }
    Ok(out)
}

/// One volume group of an LVM text metadata backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    /// (pv name, id, device hint)
    pub pvs: Vec<(String, String, String)>,
    pub lvs: Vec<String>,
}

/// Group items by disk. An item joins the first group it is known to share a disk with, or, when it cannot
/// be compared with some group, that group (never counting a disk twice); a new group needs to be known
/// different from every existing one.
pub fn group_disks<T>(items: Vec<(DiskId, T)>) -> Vec<(DiskId, Vec<T>)> {
    let mut groups: Vec<(DiskId, Vec<T>)> = Vec::new();
    for (d, item) in items {
        let pos = groups
            .iter()
            .position(|g| g.0.same(&d) == Some(true))
            .or_else(|| groups.iter().position(|g| g.0.same(&d).is_none()));
        match pos {
            Some(i) => {
                let g = &mut groups[i].0;
                if g.host.is_none() {
                    g.host = d.host;
                }
                if g.guest.is_none() {
                    g.guest = d.guest;
                }
                groups[i].1.push(item);
            }
            None => groups.push((d, vec![item])),
        }
    }
    groups
}

/// Parse LVM2 text metadata (`/etc/lvm/backup/<vg>`): sections `name {`…`}`, `key = value` lines,
/// `#` comments outside quotes. Tolerant: unknown content is ignored.
pub fn parse_lvm_backup(text: &str) -> Vec<VolumeGroup> {
    let mut vgs: Vec<VolumeGroup> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut pv: Option<(String, String, String)> = None;
    for raw in text.lines() {
        // Strip a comment outside quotes.
        let mut inq = false;
        let mut end = raw.len();
        for (i, c) in raw.char_indices() {
            match c {
                '"' => inq = !inq,
                '#' if !inq => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let line = raw[..end].trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_suffix('{') {
            let name = name.trim().to_string();
            match stack.len() {
                0 => vgs.push(VolumeGroup {
                    name: name.clone(),
                    ..Default::default()
                }),
                2 if stack[1] == "physical_volumes" => {
                    pv = Some((name.clone(), String::new(), String::new()))
                }
                2 if stack[1] == "logical_volumes" => {
                    if let Some(vg) = vgs.last_mut() {
                        vg.lvs.push(name.clone());
                    }
                }
                _ => {}
            }
            stack.push(name);
            continue;
        }
        if line == "}" {
            if stack.len() == 3 && stack[1] == "physical_volumes" {
                if let (Some(p), Some(vg)) = (pv.take(), vgs.last_mut()) {
                    vg.pvs.push(p);
                }
            }
            stack.pop();
            continue;
        }
        if stack.len() == 3 && stack[1] == "physical_volumes" {
            if let (Some((k, v)), Some(p)) = (line.split_once('='), pv.as_mut()) {
                let v = crate::guest::facts::unquote(v.trim());
                match k.trim() {
                    "id" => p.1 = v,
                    "device" => p.2 = v,
                    _ => {}
                }
            }
        }
    }
    vgs
}

/// The volume group of an LVM device path (`/dev/mapper/vg-lv` or `/dev/vg/lv`).
pub fn lvm_vg_of(spec: &str) -> Option<String> {
    if let Some(m) = spec.strip_prefix("/dev/mapper/") {
        // dm names double dashes inside VG/LV names.
        let b = m.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'-' {
                if i + 1 < b.len() && b[i + 1] == b'-' {
                    i += 2;
                    continue;
                }
                return Some(m[..i].replace("--", "-"));
            }
            i += 1;
        }
        return None;
    }
    let rest = spec.strip_prefix("/dev/")?;
    let (vg, lv) = rest.split_once('/')?;
    (!lv.contains('/')
        && ![
            "disk", "mapper", "cciss", "ida", "md", "bus", "block", "char",
        ]
        .contains(&vg))
    .then(|| vg.to_string())
}

fn check_lvm(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let dir = "/etc/lvm/backup";
    let files = ctx.root.files_in(dir, |n| !n.starts_with('.'))?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let t = fstab::read_fstab(ctx).ok().flatten().unwrap_or_default();
    let r = Resolver::new(ctx, &t.entries);
    let mut out = Vec::new();
    for path in files {
        let Some(text) = ctx.root.read_text(&path)? else {
            continue;
        };
        for vg in parse_lvm_backup(&text) {
            let mut items = Vec::new();
            for (name, id, dev) in &vg.pvs {
                let by_dev = r.disk_of(dev, "");
                let host = ctx
                    .facts
                    .filesystems
                    .iter()
                    .find(|f| f.fstype == "LVM2_member" && f.uuid.as_deref() == Some(id.as_str()))
                    .filter(|f| !f.disks.is_empty())
                    .map(|f| f.disks.clone());
                let d = match (host, by_dev) {
                    (Some(h), Some(d)) => DiskId {
                        host: Some(h),
                        guest: d.guest,
                    },
                    (Some(h), None) => DiskId::host(h),
                    (None, Some(d)) => d,
                    // md and other names: the device itself.
                    (None, None) if !dev.is_empty() => DiskId::guest(dev.clone()),
                    (None, None) => continue,
                };
                items.push((d, format!("{name} {dev}")));
            }
            let disks: Vec<(String, Vec<String>)> = group_disks(items)
                .into_iter()
                .map(|(d, v)| (d.describe(), v))
                .collect();
            if disks.len() < 2 {
                continue;
            }
            let holds: Vec<&Entry> = t
                .entries
                .iter()
                .filter(|e| lvm_vg_of(e.spec()).as_deref() == Some(vg.name.as_str()))
                .collect();
            let critical = holds
                .iter()
                .any(|e| matches!(e.mountpoint(), "/" | "/boot" | "/usr"));
            let mut f = Finding::new(
                info,
                format!(
                    "LVM volume group {} has physical volumes on {} disks ({}){}. The imported image holds one \
                     disk; the volume group cannot be activated without the others.",
                    vg.name,
                    disks.len(),
                    disks
                        .iter()
                        .map(|(d, p)| format!("{d}: {}", p.join(", ")))
                        .collect::<Vec<_>>()
                        .join("; "),
                    if critical {
                        " and holds the root filesystem"
                    } else {
                        ""
                    }
                ),
            )
            .evidence(Evidence::file(
                &path,
                format!("volume group {} with {} physical volumes", vg.name, vg.pvs.len()),
            ))
            .evidences(holds.iter().map(|e| Evidence::line(FSTAB, e.line, &e.text)))
            .remediation(
                "Move the volume group onto one disk before migrating (pvmove the extents off the extra \
                 disks and vgreduce them), or import every disk and attach them all to the instance.",
            );
            if critical {
                f = f.severity(Severity::Blocker);
            }
            out.push(f);
        }
    }
    Ok(out)
}

fn check_multi(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let t = fstab::read_fstab(ctx)?.unwrap_or_default();
    let r = Resolver::new(ctx, &t.entries);
    let root = root_disk(ctx, &r, &t.entries);
    let mut items: Vec<(DiskId, Evidence)> = Vec::new();
    for e in &t.entries {
        if is_network(e)
            || is_pseudo(e)
            || removable_media(e).is_some()
            || !is_device_spec(e.spec())
        {
            continue;
        }
        let Some(d) = r.disk_of(e.spec(), e.mountpoint()) else {
            continue;
        };
        if root.as_ref().and_then(|rd| rd.same(&d)) == Some(false) {
            items.push((d, Evidence::line(FSTAB, e.line, &e.text)));
        }
    }
    if ctx.facts.live {
        let root_disks: Vec<String> = match &root {
            Some(DiskId { host: Some(v), .. }) => v.clone(),
            _ => Vec::new(),
        };
        if root_disks.is_empty() {
            return Ok(Vec::new());
        }
        for d in &ctx.facts.disks {
            if d.kind == "disk" && d.size > 0 && !root_disks.contains(&d.name) {
                items.push((
                    DiskId {
                        host: Some(vec![d.name.clone()]),
                        guest: Some(d.name.clone()),
                    },
                    Evidence::file(
                        &format!("/sys/class/block/{}", d.name),
                        format!("disk {} ({} bytes)", d.name, d.size),
                    ),
                ));
            }
        }
    }
    let others: BTreeMap<String, Vec<Evidence>> = group_disks(items)
        .into_iter()
        .map(|(d, v)| (d.describe(), v))
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = others.keys().cloned().collect();
    Ok(vec![Finding::new(
        info,
        format!(
            "Besides the root disk{}, the guest uses {}. Each must be exported and imported separately \
             (as a volume) and attached to the instance.",
            root.map(|r| format!(" ({})", r.describe())).unwrap_or_default(),
            names.join(", ")
        ),
    )
    .evidences(others.into_values().flatten())
    .remediation(
        "Export the other disks too and create volumes from them, or move their data onto the root disk.",
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounted_guest_filesystems() {
        let t = fstab::parse_fstab(
            "/dev/sda2 / ext4 defaults 0 1\n\
             UUID=b00t /boot ext2 defaults 0 2\n\
             /dev/sda3 /var/ ext4 defaults 0 2\n\
             /dev/sda4 /usr ext4 noauto 0 2\n\
             /dev/sda5 /home ext4 defaults 0 2\n\
             /dev/sdb1 /boot/efi vfat umask=0077 0 1\n\
             tmpfs /var tmpfs defaults 0 0\n",
        );
        let none = unmounted(&t.entries, &|_| false);
        let mps: Vec<&str> = none.iter().map(|u| u.mountpoint.as_str()).collect();
        // /usr is noauto, /home is not touched by a fix, the tmpfs is not the guest's filesystem.
        assert_eq!(mps, ["/boot", "/var", "/boot/efi"]);
        assert_eq!((none[0].line, none[0].spec.as_str()), (2, "UUID=b00t"));
        assert_eq!(none[1].text, "/dev/sda3 /var/ ext4 defaults 0 2");
        let some = unmounted(&t.entries, &|mp| mp != "/boot/efi");
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].mountpoint, "/boot/efi");
        assert!(unmounted(&t.entries, &|_| true).is_empty());
    }

    const LVM: &str = r#"# Generated by LVM2 version 2.02.111(2) (2014-09-01): Tue Mar  3 10:00:00 2015

contents = "Text Format Volume Group"
version = 1

description = "Created *after* executing 'vgextend vg0 /dev/sdb1'"

creation_host = "old-vm"	# Linux old-vm 3.16.0-4-amd64
creation_time = 1425376800	# Tue Mar  3 10:00:00 2015

vg0 {
	id = "AbCdEf-1234-5678-9abc-def0-1234-567890"
	seqno = 4
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192		# 4 Megabytes

	physical_volumes {

		pv0 {
			id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-000000"
			device = "/dev/sda5"	# Hint only

			status = ["ALLOCATABLE"]
			pe_start = 2048
		}

		pv1 {
			id = "111111-2222-3333-4444-5555-6666-777777"
			device = "/dev/sdb1"	# Hint only
			status = ["ALLOCATABLE"]
		}
	}

	logical_volumes {

		root {
			id = "x"
			segment_count = 1

			segment1 {
				start_extent = 0
				stripes = [
					"pv0", 0
				]
			}
		}
		swap_1 {
			id = "y"
		}
	}
}
"#;

    #[test]
    fn lvm_backup() {
        let v = parse_lvm_backup(LVM);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "vg0");
        assert_eq!(
            v[0].pvs,
            vec![
                (
                    "pv0".into(),
                    "aaaaaa-bbbb-cccc-dddd-eeee-ffff-000000".into(),
                    "/dev/sda5".into()
                ),
                (
                    "pv1".into(),
                    "111111-2222-3333-4444-5555-6666-777777".into(),
                    "/dev/sdb1".into()
                )
            ]
        );
        assert_eq!(v[0].lvs, vec!["root", "swap_1"]);
        assert!(parse_lvm_backup("garbage {\n}\n}\n}\n")
            .iter()
            .all(|v| v.pvs.is_empty()));
    }

    #[test]
    fn grouping() {
        let a = DiskId {
            host: Some(vec!["loop3".into()]),
            guest: Some("sda".into()),
        };
        let g = group_disks(vec![
            (a.clone(), 1),
            (DiskId::host(vec!["loop3".into()]), 2),
            (DiskId::guest("sda"), 3),
            (DiskId::guest("sdb"), 4),
            (DiskId::guest("sdb"), 5),
        ]);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].1, vec![1, 2, 3]);
        assert_eq!(g[1].1, vec![4, 5]);
    }

    #[test]
    fn vg_names() {
        assert_eq!(lvm_vg_of("/dev/mapper/vg0-root").as_deref(), Some("vg0"));
        assert_eq!(
            lvm_vg_of("/dev/mapper/my--vg-swap_1").as_deref(),
            Some("my-vg")
        );
        assert_eq!(lvm_vg_of("/dev/vg0/root").as_deref(), Some("vg0"));
        assert_eq!(lvm_vg_of("/dev/disk/by-uuid"), None);
        assert_eq!(lvm_vg_of("/dev/sda1"), None);
    }

    #[test]
    fn options_added_once() {
        let t = "/dev/sdb1\t/data\text4\tdefaults\t0\t2\nsrv:/x /n nfs rw 0 0\n/dev/sdc1 /e ext4\n";
        let a = add_options(t, 1, "/dev/sdb1", "/data", &["nofail"]);
        assert_eq!(a, t.replace("defaults\t0", "defaults,nofail\t0"));
        assert_eq!(add_options(&a, 1, "/dev/sdb1", "/data", &["nofail"]), a);
        // Renamed by another fix first: still found by its line.
        let renamed = t.replace("/dev/sdb1", "UUID=x");
        assert_eq!(
            add_options(&renamed, 1, "/dev/sdb1", "/data", &["nofail"]),
            a.replace("/dev/sdb1", "UUID=x")
        );
        let b = add_options(t, 3, "/dev/sdc1", "/e", &["nofail"]);
        assert!(b.ends_with("/dev/sdc1 /e ext4 nofail\n"), "{b}");
        let c = add_options(t, 2, "srv:/x", "/n", &["nofail", "_netdev"]);
        assert!(c.contains("srv:/x /n nfs rw,nofail,_netdev 0 0\n"));
    }

    #[test]
    fn media_and_network() {
        let t = fstab::parse_fstab(
            "/dev/scd0 /media/cdrom0 udf,iso9660 user,noauto 0 0\n/dev/fd0 /media/floppy auto rw 0 0\n\
             //srv/share /mnt/s cifs guest 0 0\nuser@h:/x /mnt/x fuse.sshfs rw 0 0\n/dev/sdb1 /d ext4 rw 0 0\n",
        );
        assert_eq!(removable_media(&t.entries[0]), Some("a CD/DVD drive"));
        assert_eq!(removable_media(&t.entries[1]), Some("a floppy drive"));
        assert!(is_network(&t.entries[2]) && is_network(&t.entries[3]));
        assert!(!is_network(&t.entries[4]) && removable_media(&t.entries[4]).is_none());
    }
}
