//! Checks: initramfs (virtio drivers in every kernel's initramfs, free space in /boot).

pub mod cpio;

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

pub const MODULES_FILE: &str = "/etc/initramfs-tools/modules";
const INITRAMFS_CONF: &str = "/etc/initramfs-tools/initramfs.conf";
const CONF_D: &str = "/etc/initramfs-tools/conf.d";

/// The virtio drivers the cloud's hardware needs, with the kernel config symbol that builds each in.
pub const VIRTIO_DRIVERS: &[(&str, &str)] = &[
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("virtio_scsi", "CONFIG_SCSI_VIRTIO"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
];

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "boot.virtio-initramfs",
            "virtio drivers in the initramfs of every kernel",
            Boot,
            Blocker,
            true,
            check_virtio_initramfs
        ),
        check!(
            "boot.free-space",
            "enough free space in /boot to rebuild the initramfs",
            Boot,
            Warning,
            false,
            check_free_space
        ),
    ]
}

/// Module name of an initramfs member under `lib/modules/<ver>/` (or `usr/lib/modules/<ver>/`):
/// `.../virtio_blk.ko(.xz|.zst|.gz)` → `virtio_blk` (dashes folded to underscores).
pub fn module_of(name: &str, ver: &str) -> Option<String> {
    let n = name.trim_start_matches("./").trim_start_matches('/');
    let n = n.strip_prefix("usr/").unwrap_or(n);
    let rest = n
        .strip_prefix("lib/modules/")?
        .strip_prefix(ver)?
        .strip_prefix('/')?;
    let base = rest.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz", ".ko.bz2"]
        .iter()
        .find_map(|s| base.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// `CONFIG_X=y` symbols from a kernel config.
pub fn builtin_symbols(config: &str) -> BTreeSet<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_suffix("=y"))
        .filter(|s| s.starts_with("CONFIG_") && !s.contains(char::is_whitespace))
        .map(str::to_string)
        .collect()
}

/// Module names listed in `modules.builtin` (`kernel/drivers/block/virtio_blk.ko`).
pub fn builtin_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter_map(|b| b.strip_suffix(".ko"))
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Modules listed in /etc/initramfs-tools/modules (first word of each non-comment line).
pub fn listed_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Append `modules` missing from an /etc/initramfs-tools/modules text, keeping every existing byte.
/// Idempotent.
pub fn add_modules(text: &str, modules: &[String]) -> String {
    let have = listed_modules(text);
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !have.contains(&m.replace('-', "_")))
        .collect();
    if missing.is_empty() {
        return text.to_string();
    }
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
    out.push_str("# virtio drivers for the cloud (added by cloudprep)");
    out.push_str(nl);
    for m in missing {
        out.push_str(m);
        out.push_str(nl);
    }
    out
}

/// The effective `MODULES=` of initramfs-tools and where it was set (last assignment wins; conf.d after
/// initramfs.conf). Returns (value, path, line, text).
pub fn modules_policy(files: &[(String, String)]) -> Option<(String, String, usize, String)> {
    let mut found = None;
    for (path, text) in files {
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            let t = t.strip_prefix("export ").map(str::trim).unwrap_or(t);
            if let Some(v) = t.strip_prefix("MODULES=") {
                let v = v.split('#').next().unwrap_or("").trim();
                let v = crate::guest::facts::unquote(v);
                found = Some((v, path.clone(), i + 1, line.to_string()));
            }
        }
    }
    found
}

fn policy_files(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    if let Some(t) = ctx.root.read_text(INITRAMFS_CONF)? {
        files.push((INITRAMFS_CONF.to_string(), t));
    }
    for p in ctx
        .root
        .files_in(CONF_D, |n| !n.starts_with('.') && !n.ends_with('~'))?
    {
        if let Some(t) = ctx.root.read_text(&p)? {
            files.push((p, t));
        }
    }
    Ok(files)
}

/// What an initramfs has of the virtio drivers.
struct KernelState {
    ver: String,
    missing: Vec<String>,
    evidence: Vec<Evidence>,
    /// Could not be determined (the reason).
    unverified: Option<String>,
    /// No initramfs at all.
    absent: bool,
}

fn inspect_kernel(ctx: &Ctx, ver: &str, builtin: &BTreeSet<String>) -> KernelState {
    let path = format!("/boot/initrd.img-{ver}");
    let mut st = KernelState {
        ver: ver.to_string(),
        missing: Vec::new(),
        evidence: Vec::new(),
        unverified: None,
        absent: false,
    };
    let needed: Vec<&str> = VIRTIO_DRIVERS
        .iter()
        .filter(|(m, _)| !builtin.contains(*m))
        .map(|(m, _)| *m)
        .collect();
    if needed.is_empty() {
        return st;
    }
    let listing = match ctx.root.open_file(&path) {
        Ok(Some((f, _))) => cpio::list(std::io::BufReader::new(f))
            .with_context(|| format!("reading {}", ctx.root.display(&path))),
        Ok(None) => {
            st.absent = true;
            st.missing = needed.iter().map(|s| s.to_string()).collect();
            st.evidence.push(Evidence::file(
                &path,
                format!("no initramfs for kernel {ver}"),
            ));
            return st;
        }
        Err(e) => Err(e),
    };
    let listing = match listing {
        Ok(l) => l,
        Err(e) => {
            st.unverified = Some(format!("{e:#}"));
            return st;
        }
    };
    let present: BTreeSet<String> = listing
        .entries
        .iter()
        .filter_map(|e| module_of(&e.name, ver))
        .collect();
    st.missing = needed
        .iter()
        .filter(|m| !present.contains(**m))
        .map(|s| s.to_string())
        .collect();
    if !st.missing.is_empty() {
        if let Some(why) = &listing.incomplete {
            st.unverified = Some(why.clone());
            st.missing.clear();
            return st;
        }
        let segs: Vec<String> = listing
            .segments
            .iter()
            .map(|s| format!("{} at {}", s.compression, s.offset))
            .collect();
        st.evidence.push(Evidence::file(
            &path,
            format!(
                "{} members ({}); no {} under lib/modules/{ver}/",
                listing.entries.len(),
                segs.join(", "),
                st.missing.join(", ")
            ),
        ));
    }
    st
}

fn kernel_builtins(ctx: &Ctx, ver: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if let Some(cfg) = ctx.root.read_text(format!("/boot/config-{ver}"))? {
        let syms = builtin_symbols(&cfg);
        for (m, sym) in VIRTIO_DRIVERS {
            if syms.contains(*sym) {
                out.insert(m.to_string());
            }
        }
    }
    for dir in ["/lib/modules", "/usr/lib/modules"] {
        if let Some(t) = ctx.root.read_text(format!("{dir}/{ver}/modules.builtin"))? {
            out.extend(
                builtin_modules(&t)
                    .into_iter()
                    .filter(|m| VIRTIO_DRIVERS.iter().any(|(v, _)| v == m)),
            );
            break;
        }
    }
    Ok(out)
}

fn check_virtio_initramfs(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let modules_text = ctx.root.read_text(MODULES_FILE)?.unwrap_or_default();
    let listed = listed_modules(&modules_text);
    let policy = modules_policy(&policy_files(ctx)?);
    let dep_policy = policy.as_ref().filter(|p| p.0 == "dep");
    let mut to_add: BTreeSet<String> = BTreeSet::new();
    let mut any_missing = false;
    let mut states = Vec::new();
    for ver in &ctx.facts.kernels {
        let builtin = kernel_builtins(ctx, ver)?;
        for (m, _) in VIRTIO_DRIVERS {
            if !builtin.contains(*m) {
                to_add.insert(m.to_string());
            }
        }
        states.push(inspect_kernel(ctx, ver, &builtin));
    }
    let to_add: Vec<String> = VIRTIO_DRIVERS
        .iter()
        .map(|(m, _)| m.to_string())
        .filter(|m| to_add.contains(m))
        .collect();
    let fix = |cmd: PlannedCommand| {
        let mods = to_add.clone();
        Fix::default()
            .edit(FileEdit::rewrite(MODULES_FILE, Validator::None, move |t| {
                Ok(add_modules(t, &mods))
            }))
            .command(cmd)
    };
    let update_all = PlannedCommand::new(
        Phase::Post,
        order::UPDATE_INITRAMFS,
        &["update-initramfs", "-u", "-k", "all"],
        "rebuild every initramfs with the virtio drivers",
    );
    let cause = |f: Finding| match dep_policy {
        Some((_, p, l, t)) => f.evidence(Evidence::line(p, *l, t)),
        None => f,
    };
    for st in states {
        if let Some(why) = &st.unverified {
            findings.push(
                Finding::new(
                    info,
                    format!(
                        "the initramfs of kernel {} could not be inspected, so the virtio drivers could not be \
                         verified: {why}",
                        st.ver
                    ),
                )
                .severity(Severity::Warning)
                .evidence(Evidence::file(&format!("/boot/initrd.img-{}", st.ver), why.clone()))
                .remediation("Check the initramfs by hand (lsinitramfs) or rebuild it with the virtio drivers listed in /etc/initramfs-tools/modules.")
                .fix(fix(update_all.clone())),
            );
            continue;
        }
        if st.missing.is_empty() {
            continue;
        }
        any_missing = true;
        let boot_critical = st.missing.iter().any(|m| {
            m == "virtio_blk"
                || m == "virtio_pci"
                || (m == "virtio_scsi" && ctx.config.cloud.disk_bus == crate::config::DiskBus::Scsi)
        });
        let msg = if st.absent {
            format!("kernel {} has no initramfs (/boot/initrd.img-{}), so nothing can load the virtio disk driver at boot", st.ver, st.ver)
        } else {
            format!(
                "the initramfs of kernel {} lacks {}: on the cloud's virtio hardware the root disk {}{}",
                st.ver,
                st.missing.join(", "),
                if boot_critical { "is not found and the boot drops to an initramfs shell" } else { "is found but the virtio network/SCSI driver only loads later" },
                if dep_policy.is_some() { " (MODULES=dep builds the initramfs only for the current VMware/Hyper-V hardware)" } else { "" }
            )
        };
        // A driver the kernel does not ship at all cannot be added to its initramfs.
        let mut msg = msg;
        for dir in ["/lib/modules", "/usr/lib/modules"] {
            if let Some(dep) = ctx
                .root
                .read_text(format!("{dir}/{}/modules.dep", st.ver))?
            {
                let avail = available_modules(&dep);
                let absent: Vec<&String> =
                    st.missing.iter().filter(|m| !avail.contains(*m)).collect();
                if !absent.is_empty() {
                    let names: Vec<&str> = absent.iter().map(|s| s.as_str()).collect();
                    msg.push_str(&format!(
                        "; kernel {} does not ship {} at all (not in {dir}/{}/modules.dep): install a kernel with virtio support",
                        st.ver,
                        names.join(", "),
                        st.ver
                    ));
                }
                break;
            }
        }
        let cmd = if st.absent {
            PlannedCommand::new(
                Phase::Post,
                order::UPDATE_INITRAMFS,
                &["update-initramfs", "-c", "-k", &st.ver],
                "create the missing initramfs",
            )
        } else {
            update_all.clone()
        };
        findings.push(
            cause(
                Finding::new(info, msg)
                    .severity(if boot_critical {
                        Severity::Blocker
                    } else {
                        Severity::Warning
                    })
                    .evidences(st.evidence),
            )
            .remediation(format!(
                "Add {} to {MODULES_FILE} and run `update-initramfs -u -k all`.",
                to_add.join(" ")
            ))
            .fix(fix(cmd)),
        );
    }
    // Latent: MODULES=dep without the drivers listed means the next rebuild on the old hypervisor drops them.
    if !any_missing && !to_add.is_empty() {
        if let Some((_, p, l, t)) = dep_policy {
            let unlisted: Vec<String> = to_add
                .iter()
                .filter(|m| !listed.contains(*m))
                .cloned()
                .collect();
            if !unlisted.is_empty() && !ctx.facts.kernels.is_empty() {
                findings.push(
                    Finding::new(
                        info,
                        format!(
                            "MODULES=dep and {} not listed in {MODULES_FILE}: the next initramfs rebuild on the old \
                             hypervisor (a kernel update, or any fix that rebuilds it) leaves the virtio drivers out",
                            unlisted.join(", ")
                        ),
                    )
                    .severity(Severity::Warning)
                    .evidence(Evidence::line(p, *l, t))
                    .remediation(format!("Add {} to {MODULES_FILE}.", unlisted.join(" ")))
                    .fix(fix(update_all.clone())),
                );
            }
        }
    }
    // The fix is for initramfs-tools (Debian/Ubuntu); a guest with another generator gets no automatic fix.
    let itools = ctx.facts.packages.is_empty()
        || ctx.facts.installed("initramfs-tools")
        || ctx.root.exists("/usr/sbin/update-initramfs");
    if !itools {
        for f in &mut findings {
            f.fix = None;
            f.remediation = format!(
                "initramfs-tools is not installed: add {} to the initramfs generator's driver list (dracut: \
                 add_drivers+=\" ... \") and rebuild the initramfs of every kernel.",
                to_add.join(" ")
            );
        }
    }
    Ok(findings)
}

/// Modules a kernel ships, from its `modules.dep` (`kernel/drivers/block/virtio_blk.ko: deps`).
pub fn available_modules(modules_dep: &str) -> BTreeSet<String> {
    modules_dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.trim().rsplit('/').next())
        .filter_map(|b| {
            [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|s| b.strip_suffix(s))
        })
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Bytes /boot needs free to rebuild the largest initramfs: two copies (new + old during the rename) plus a
/// margin.
pub fn needed_space(largest_initramfs: u64) -> u64 {
    2 * largest_initramfs + 32 * 1024 * 1024
}

fn check_free_space(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let mut largest = (0u64, String::new());
    for p in ctx
        .root
        .files_in("/boot", |n| n.starts_with("initrd.img-"))?
    {
        let r = ctx.root.resolve(&p)?;
        let len = std::fs::metadata(&r.host)
            .with_context(|| format!("inspecting {}", ctx.root.display(&p)))?
            .len();
        if len > largest.0 {
            largest = (len, p);
        }
    }
    let boot = ctx.root.resolve("/boot")?;
    if !boot.host.is_dir() {
        return Ok(Vec::new());
    }
    let st = nix::sys::statvfs::statvfs(&boot.host)
        .with_context(|| format!("statvfs {}", ctx.root.display("/boot")))?;
    let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
    let need = needed_space(largest.0);
    if avail >= need {
        return Ok(Vec::new());
    }
    let mib = |b: u64| b / (1024 * 1024);
    let mut f = Finding::new(
        info,
        format!(
            "/boot has {} MiB free but rebuilding the initramfs needs about {} MiB (twice the largest initramfs, \
             {} MiB, plus a margin): update-initramfs would fail half-way",
            mib(avail),
            mib(need),
            mib(largest.0)
        ),
    )
    .evidence(Evidence::file("/boot", format!("{} MiB free", mib(avail))))
    .remediation("Remove old kernels (apt-get autoremove --purge) or enlarge /boot before fixing.");
    if !largest.1.is_empty() {
        f = f.evidence(Evidence::file(
            &largest.1,
            format!("{} MiB", mib(largest.0)),
        ));
    }
    Ok(vec![f])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        let v = "6.1.0-50-amd64";
        assert_eq!(
            module_of(
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/block/virtio_blk.ko",
                v
            )
            .as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(
            module_of(
                "lib/modules/6.1.0-50-amd64/kernel/drivers/virtio/virtio_pci.ko.xz",
                v
            )
            .as_deref(),
            Some("virtio_pci")
        );
        assert_eq!(
            module_of(
                "./lib/modules/6.1.0-50-amd64/kernel/drivers/net/virtio-net.ko.zst",
                v
            )
            .as_deref(),
            Some("virtio_net")
        );
        assert_eq!(
            module_of(
                "lib/modules/5.10.0-9-amd64/kernel/drivers/block/virtio_blk.ko",
                v
            ),
            None
        );
        assert_eq!(module_of("lib/modules/6.1.0-50-amd64/modules.dep", v), None);
        assert_eq!(module_of("usr/lib/virtio_blk.ko", v), None);
    }

    #[test]
    fn kernel_config_builtins() {
        let s = builtin_symbols("CONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=m\n# CONFIG_SCSI_VIRTIO is not set\r\nCONFIG_VIRTIO_PCI=y\r\n");
        assert!(s.contains("CONFIG_VIRTIO_BLK") && s.contains("CONFIG_VIRTIO_PCI"));
        assert!(!s.contains("CONFIG_VIRTIO_NET") && !s.contains("CONFIG_SCSI_VIRTIO"));
        let b = builtin_modules(
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
        );
        assert!(b.contains("virtio_pci"));
    }

    #[test]
    fn modules_file_append_is_idempotent_and_keeps_bytes() {
        let t = "# List of modules\n#virtio_blk\nvmw_pvscsi\t# vmware\r\nvirtio-net";
        let mods: Vec<String> = ["virtio_pci", "virtio_blk", "virtio_net"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = add_modules(t, &mods);
        assert!(out.starts_with(t), "{out:?}");
        assert!(out.ends_with("virtio_pci\r\nvirtio_blk\r\n"), "{out:?}");
        assert!(!out[t.len()..].contains("virtio_net"));
        assert_eq!(add_modules(&out, &mods), out);
        assert_eq!(add_modules("", &mods), "# virtio drivers for the cloud (added by cloudprep)\nvirtio_pci\nvirtio_blk\nvirtio_net\n");
    }

    #[test]
    fn modules_policy_last_wins() {
        let files = vec![
            (
                "/etc/initramfs-tools/initramfs.conf".to_string(),
                "# MODULES=dep\nMODULES=most\n".to_string(),
            ),
            (
                "/etc/initramfs-tools/conf.d/x".to_string(),
                "  MODULES='dep'  # small\n".to_string(),
            ),
        ];
        let p = modules_policy(&files).unwrap();
        assert_eq!(
            (p.0.as_str(), p.1.as_str(), p.2),
            ("dep", "/etc/initramfs-tools/conf.d/x", 1)
        );
        assert!(modules_policy(&files[..1]).unwrap().0 == "most");
        assert!(modules_policy(&[]).is_none());
    }

    #[test]
    fn modules_dep_names() {
        let a = available_modules("kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/net/virtio-net.ko:\ngarbage\n");
        assert!(a.contains("virtio_blk") && a.contains("virtio_net"));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn space_needed() {
        assert_eq!(needed_space(0), 32 << 20);
        assert_eq!(needed_space(30 << 20), 92 << 20);
    }
}
