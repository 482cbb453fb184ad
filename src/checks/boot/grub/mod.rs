//! Checks: GRUB (boot loader in the MBR / removable EFI path, device names, debconf install devices,
//! serial console).

pub mod esp;
pub mod shell;

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use crate::guest::facts::{BootMode, Facts};
use anyhow::Result;
use shell::WordEdit;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

pub const DEFAULT_GRUB: &str = "/etc/default/grub";
pub const DEFAULT_GRUB_D: &str = "/etc/default/grub.d";
pub const GRUB_CFG: &str = "/boot/grub/grub.cfg";
pub const DEVICE_MAP: &str = "/boot/grub/device.map";
pub const DEBCONF_CONFIG: &str = "/var/cache/debconf/config.dat";
pub const INSTALL_DEVICES: &str = "grub-pc/install_devices";
/// The cloud's boot disk on virtio.
pub const CLOUD_DISK: &str = "/dev/vda";
pub const SERIAL_WORDS: &[&str] = &["console=tty0", "console=ttyS0,115200"];

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "boot.grub-installed",
            "GRUB installed where the cloud's firmware looks for it",
            Boot,
            Blocker,
            true,
            check_grub_installed
        ),
        check!(
            "boot.grub-install-devices",
            "debconf grub-pc/install_devices names a disk the cloud has",
            Boot,
            Warning,
            true,
            check_install_devices
        ),
        check!(
            "boot.root-device-names",
            "kernel root=/resume= do not name old hypervisor disks",
            Boot,
            Blocker,
            true,
            check_root_device_names
        ),
        check!(
            "boot.grub-uuid-disabled",
            "GRUB passes root=UUID= to the kernel",
            Boot,
            Blocker,
            true,
            check_uuid_disabled
        ),
        check!(
            "boot.device-map",
            "no stale /boot/grub/device.map",
            Boot,
            Warning,
            true,
            check_device_map
        ),
        check!(
            "boot.serial-console",
            "kernel console on the serial port for the cloud's console log",
            Boot,
            Warning,
            true,
            check_serial_console
        ),
        check!(
            "boot.serial-terminal",
            "GRUB's menu and messages on the serial port",
            Boot,
            Warning,
            true,
            check_serial_terminal
        ),
    ]
}

fn update_grub() -> PlannedCommand {
    PlannedCommand::new(
        Phase::Post,
        order::UPDATE_GRUB,
        &["update-grub"],
        "regenerate /boot/grub/grub.cfg from /etc/default/grub",
    )
}

/// Why a device name will not exist on the cloud's virtio hardware (None: it is fine).
pub fn bad_device(dev: &str) -> Option<&'static str> {
    let dev = dev.trim_matches(|c| c == '"' || c == '\'');
    let kname = |rest: &str| {
        let letters = rest.bytes().take_while(|c| c.is_ascii_lowercase()).count();
        letters > 0 && rest[letters..].bytes().all(|c| c.is_ascii_digit())
    };
    if let Some(r) = dev.strip_prefix("/dev/sd") {
        if kname(r) {
            return Some(
                "a SCSI/SATA disk name of the old hypervisor; the cloud's disk is /dev/vda",
            );
        }
    }
    if let Some(r) = dev.strip_prefix("/dev/hd") {
        if kname(r) {
            return Some("an IDE disk name; the cloud's disk is /dev/vda");
        }
    }
    if let Some(r) = dev.strip_prefix("/dev/xvd") {
        if kname(r) {
            return Some("a Xen disk name; the cloud's disk is /dev/vda");
        }
    }
    if dev.starts_with("/dev/nvme") {
        return Some("an NVMe disk name; the cloud's disk is /dev/vda");
    }
    if dev.starts_with("/dev/disk/by-id/") {
        return Some("a by-id link made from the old hypervisor's disk model and serial");
    }
    if dev.starts_with("/dev/disk/by-path/") {
        return Some("a by-path link made from the old virtual controller's PCI address");
    }
    None
}

/// /etc/default/grub then /etc/default/grub.d/*.cfg, in the order grub-mkconfig sources them.
pub fn default_grub_files(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    if let Some(t) = ctx.root.read_text(DEFAULT_GRUB)? {
        v.push((DEFAULT_GRUB.to_string(), t));
    }
    for p in ctx.root.files_in(DEFAULT_GRUB_D, |n| n.ends_with(".cfg"))? {
        if let Some(t) = ctx.root.read_text(&p)? {
            v.push((p, t));
        }
    }
    Ok(v)
}

/// Parse the files in order with a shared environment: (path, parsed).
pub fn parse_defaults(
    files: &[(String, String)],
) -> (Vec<(String, shell::Parsed)>, HashMap<String, String>) {
    let mut env = HashMap::new();
    let parsed = files
        .iter()
        .map(|(p, t)| (p.clone(), shell::parse(t, &mut env)))
        .collect();
    (parsed, env)
}

fn bad_line_evidence(parsed: &[(String, shell::Parsed)]) -> Vec<Evidence> {
    parsed
        .iter()
        .flat_map(|(p, r)| {
            r.bad.iter().map(move |b| {
                Evidence::line(p, b.line, &format!("{} ({}; line skipped)", b.text, b.why))
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// boot.grub-installed

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mbr {
    Grub,
    NoBootCode(&'static str),
    Other(&'static str),
}

/// What the first sector of a disk holds.
pub fn classify_mbr(s: &[u8]) -> Mbr {
    if s.len() < 512 {
        return Mbr::NoBootCode("the disk is shorter than one sector");
    }
    if s[510] != 0x55 || s[511] != 0xaa {
        return Mbr::NoBootCode("no 55AA boot signature");
    }
    let code = &s[..440];
    let has = |n: &[u8]| code.windows(n.len()).any(|w| w == n);
    if has(b"GRUB") {
        Mbr::Grub
    } else if code.iter().all(|&b| b == 0) {
        Mbr::NoBootCode("the boot code area is empty")
    } else if has(b"LILO") {
        Mbr::Other("LILO")
    } else if has(b"Missing operating system") || has(b"Invalid partition table") {
        Mbr::Other("a generic MBR (no GRUB)")
    } else {
        Mbr::Other("unrecognised boot code (no GRUB)")
    }
}

fn norm_dev(n: &str) -> String {
    if n.starts_with('/') {
        n.to_string()
    } else {
        format!("/dev/{n}")
    }
}

/// The host path of the disk holding the guest's `/`, or why it is not known.
pub fn boot_disk(facts: &Facts) -> std::result::Result<String, String> {
    if !facts.live && facts.mount_at("/").is_none() {
        return Err("the guest root is a directory, not a mounted disk image".into());
    }
    let dev = facts
        .root_device
        .as_deref()
        .ok_or("the device holding / is not known")?;
    let mut names = vec![norm_dev(dev)];
    if let Ok(c) = std::fs::canonicalize(norm_dev(dev)) {
        names.push(c.display().to_string());
    }
    for d in &facts.disks {
        let dn = norm_dev(&d.name);
        if names.contains(&dn) || d.partitions.iter().any(|p| names.contains(&norm_dev(p))) {
            return Ok(dn);
        }
    }
    // sysfs: a partition's parent, or the first component under a device-mapper/md device.
    let mut name = names
        .last()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    for _ in 0..8 {
        let sys = std::path::Path::new("/sys/class/block").join(&name);
        if !sys.exists() {
            break;
        }
        if sys.join("partition").exists() {
            if let Ok(real) = std::fs::canonicalize(&sys) {
                if let Some(parent) = real.parent().and_then(|p| p.file_name()) {
                    return Ok(format!("/dev/{}", parent.to_string_lossy()));
                }
            }
            break;
        }
        let slaves: Vec<String> = std::fs::read_dir(sys.join("slaves"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        match slaves.into_iter().min() {
            Some(s) => name = s,
            None => return Ok(format!("/dev/{name}")),
        }
    }
    Err(format!("could not find the disk holding {dev}"))
}

fn efi_target(arch: Option<&str>) -> &'static str {
    match arch {
        Some("arm64") => "arm64-efi",
        Some("i386") => "i386-efi",
        _ => "x86_64-efi",
    }
}

fn check_grub_installed(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let f = ctx.facts;
    if f.boot_mode == Some(BootMode::Uefi) {
        return check_uefi_fallback(ctx, info);
    }
    if f.packages.is_empty() {
        return Ok(vec![Finding::new(info, "the installed packages are unknown (no dpkg status), so the boot loader could not be verified")
            .severity(Severity::Info)
            .remediation("Run the audit on a root with /var/lib/dpkg/status.")]);
    }
    if !f.installed("grub-pc") {
        let other = ["grub-legacy", "grub", "lilo", "extlinux", "syslinux"]
            .into_iter()
            .find(|p| f.installed(p));
        let msg = match other {
            Some(p) => format!("the guest boots with {p}, not GRUB 2 (grub-pc): the import guide expects GRUB in the MBR"),
            None => "no BIOS boot loader package (grub-pc) is installed: the cloud boots the disk from its MBR".to_string(),
        };
        return Ok(vec![Finding::new(info, msg)
            .severity(if other.is_some() {
                Severity::Warning
            } else {
                Severity::Blocker
            })
            .evidence(Evidence::file(
                "/var/lib/dpkg/status",
                "grub-pc not installed",
            ))
            .remediation(
                "Install grub-pc (apt-get install grub-pc) and install it to the boot disk.",
            )]);
    }
    let disk = match boot_disk(f) {
        Ok(d) => d,
        Err(why) => {
            return Ok(vec![Finding::new(
                info,
                format!("GRUB in the MBR could not be verified: {why}"),
            )
            .severity(Severity::Info)
            .remediation(
                "Run the audit on the running VM (or on the mounted disk image) to check the MBR.",
            )]);
        }
    };
    let mut sector = vec![0u8; 512];
    let read = std::fs::File::open(&disk).and_then(|mut fh| fh.read_exact(&mut sector));
    if let Err(e) = read {
        return Ok(vec![Finding::new(
            info,
            format!("GRUB in the MBR of {disk} could not be verified: reading it failed: {e}"),
        )
        .severity(Severity::Info)
        .remediation(
            "Run the audit as root to let it read the disk's first sector.",
        )]);
    }
    let why = match classify_mbr(&sector) {
        Mbr::Grub => return Ok(Vec::new()),
        Mbr::NoBootCode(w) | Mbr::Other(w) => w,
    };
    Ok(vec![Finding::new(info, format!("the MBR of {disk} holds no GRUB boot code ({why}): the cloud boots the disk from its MBR"))
        .evidence(Evidence::file(&disk, format!("first sector: {why}")))
        .remediation(format!("Run `grub-install {disk}`."))
        .fix(Fix::default().command(PlannedCommand::new(Phase::Post, order::GRUB_INSTALL, &["grub-install", &disk], "install GRUB's boot code in the MBR of the boot disk")))])
}

pub const FORCE_EXTRA_REMOVABLE: &str = "grub2/force_efi_extra_removable";
const GRUB_EFI_PACKAGES: &[&str] = &[
    "grub-efi-amd64",
    "grub-efi-amd64-signed",
    "grub-efi-arm64",
    "grub-efi-ia32",
];

fn check_uefi_fallback(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let arch = ctx.facts.arch.as_deref();
    let n = esp::names(arch);
    let mut out = Vec::new();
    let fallback = format!("\\EFI\\BOOT\\{}", n.fallback);
    let mount_hint = format!(
        "Mount the EFI system partition at {} (on a running VM: `mount /boot/efi`) and run cloudprep again; \
         offline, attach the whole disk image so its partitions are visible, or name the ESP's filesystem \
         under [devices] in {}.",
        ctx.root.display("/boot/efi"),
        crate::config::CONFIG_PATH
    );
    let unverifiable = |why: String| {
        Finding::new(
            info,
            format!(
                "the removable fallback loader {fallback} could not be verified: {why}. The cloud starts the VM \
                 with empty EFI variables, so that file is the only one its firmware boots"
            ),
        )
        .remediation(mount_hint.clone())
    };
    let located = match esp::locate(ctx) {
        Ok(l) => l,
        Err(why) => {
            out.push(unverifiable(format!(
                "the EFI system partition is not mounted at /boot/efi and cloudprep could not find it ({why})"
            )));
            out.extend(force_removable_finding(ctx, info)?);
            return Ok(out);
        }
    };
    let content = match &located {
        esp::Esp::Mounted(mp) => esp::content_mounted(ctx, mp),
        esp::Esp::Device {
            device,
            offset,
            length,
            ..
        } => crate::fix::esp::open_device(device, false)
            .and_then(|f| esp::content_device(&f, *offset, *length, arch))
            .map_err(|e| {
                e.context(format!(
                    "reading the FAT filesystem on {device} at byte {offset}"
                ))
            }),
    };
    let (where_, ev_path) = match &located {
        esp::Esp::Mounted(mp) => (
            format!("the EFI system partition mounted at {mp}"),
            mp.clone(),
        ),
        esp::Esp::Device { how, device, .. } => (
            format!("the EFI system partition ({how}; not mounted, read directly)"),
            device.clone(),
        ),
    };
    let content = match content {
        Ok(c) => c,
        Err(e) => {
            out.push(unverifiable(format!("{where_} could not be read: {e:#}")));
            out.extend(force_removable_finding(ctx, info)?);
            return Ok(out);
        }
    };
    let problem = match &content.fallback {
        Some((_, size, head)) if *size > 0 && esp::is_pe(head) => None,
        Some((p, size, _)) => Some(format!(
            "{p} in {where_} is not an EFI executable ({size} bytes, no MZ header)"
        )),
        None => Some(format!(
            "{where_} has no removable fallback loader {fallback}"
        )),
    };
    if let Some(problem) = problem {
        let loaders: Vec<String> = content
            .dirs
            .iter()
            .map(|(d, files)| {
                format!(
                    "{d}: {}",
                    if files.is_empty() {
                        "-".to_string()
                    } else {
                        files.join(" ")
                    }
                )
            })
            .collect();
        let os_id = ctx.facts.os.as_ref().map(|o| o.id.as_str()).unwrap_or("");
        let mut f = Finding::new(
            info,
            format!("{problem}: the cloud starts the VM with empty EFI variables, so only the fallback path boots"),
        )
        .evidence(Evidence::file(
            &ev_path,
            format!(
                "\\EFI: {}",
                if loaders.is_empty() { "absent or empty".to_string() } else { loaders.join("; ") }
            ),
        ));
        match esp::fallback_copies(&content, os_id, &n) {
            Some((vendor, copies)) => {
                let target = match &located {
                    esp::Esp::Mounted(mp) => crate::fix::esp::Target::Dir(mp.clone()),
                    esp::Esp::Device {
                        device,
                        offset,
                        length,
                        ..
                    } => crate::fix::esp::Target::Device {
                        device: device.clone(),
                        offset: *offset,
                        length: *length,
                    },
                };
                let list = copies
                    .iter()
                    .map(|(s, d)| {
                        format!(
                            "{} -> {}",
                            crate::guest::fat::dos(s),
                            crate::guest::fat::dos(d)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let how = match &target {
                    crate::fix::esp::Target::Dir(_) => "as guest file writes, backed up and journaled",
                    crate::fix::esp::Target::Device { .. } => {
                        "by writing the FAT directly (the ESP is not mounted); the old bytes of every range it writes are saved in the run directory and journaled"
                    }
                };
                f = f
                    .remediation(format!(
                        "Copy the guest's own boot loader from \\EFI\\{vendor} to the fallback path: {list}."
                    ))
                    .fix(Fix::default().command(
                        crate::fix::esp::Install { target, copies }.command(&format!(
                            "cloudprep copies {list} inside the EFI system partition itself, {how}"
                        )),
                    ));
            }
            None => {
                let target = efi_target(arch);
                f = f.remediation(format!(
                    "No GRUB EFI image to copy was found under \\EFI. In the guest, with the ESP mounted at /boot/efi, run \
                     `grub-install --target={target} --efi-directory=/boot/efi --removable --no-nvram`."
                ));
                if let esp::Esp::Mounted(mp) = &located {
                    f = f.fix(Fix::default().command(PlannedCommand::new(
                        Phase::Post,
                        order::GRUB_INSTALL,
                        &[
                            "grub-install",
                            &format!("--target={target}"),
                            &format!("--efi-directory={mp}"),
                            "--removable",
                            "--no-nvram",
                        ],
                        "install GRUB to the removable fallback path EFI/BOOT",
                    )));
                }
            }
        }
        out.push(f);
    }
    out.extend(force_removable_finding(ctx, info)?);
    Ok(out)
}

/// GRUB's EFI packages reinstall the fallback loader on every upgrade only when debconf's
/// `grub2/force_efi_extra_removable` is true.
fn force_removable_finding(ctx: &Ctx, info: &CheckInfo) -> Result<Option<Finding>> {
    let Some(pkg) = GRUB_EFI_PACKAGES.iter().find(|p| ctx.facts.installed(p)) else {
        return Ok(None);
    };
    let text = ctx.root.read_text(DEBCONF_CONFIG)?.unwrap_or_default();
    let value = debconf_value(&text, FORCE_EXTRA_REMOVABLE);
    if value.as_ref().is_some_and(|(_, v)| v == "true") {
        return Ok(None);
    }
    let Some((l, v)) = value else {
        // The question is registered by grub-efi's own configuration (Debian 9 and later); without it, this
        // GRUB cannot be told to keep the fallback loader (debconf-set-selections refuses an unknown one).
        return Ok(Some(
            Finding::new(
                info,
                format!(
                    "debconf has no {FORCE_EXTRA_REMOVABLE} question ({pkg} is older than Debian 9's, or its \
                     debconf data is missing): GRUB upgrades will not refresh the fallback loader \\EFI\\BOOT"
                ),
            )
            .severity(Severity::Warning)
            .evidence(Evidence::file(
                DEBCONF_CONFIG,
                format!("no {FORCE_EXTRA_REMOVABLE} question"),
            ))
            .remediation(
                "After each GRUB upgrade, copy the new GRUB EFI image to \\EFI\\BOOT again (run cloudprep fix), or \
                 upgrade GRUB to a release that has the option.",
            ),
        ));
    };
    let line = format!("{pkg} {FORCE_EXTRA_REMOVABLE} boolean true");
    Ok(Some(
        Finding::new(
            info,
            format!(
                "debconf {FORCE_EXTRA_REMOVABLE} is {v:?}: a GRUB upgrade reinstalls GRUB for the old VM's boot \
                 entry only and leaves a stale fallback loader \\EFI\\BOOT behind"
            ),
        )
        .severity(Severity::Warning)
        .remediation(format!("Run `echo '{line}' | debconf-set-selections`."))
        .evidence(Evidence::line(DEBCONF_CONFIG, l, &format!("Value: {v}")))
        .fix(
            Fix::default().edit(FileEdit::rewrite(DEBCONF_CONFIG, Validator::None, |t| {
                Ok(set_debconf_value(t, FORCE_EXTRA_REMOVABLE, "true"))
            })),
        ),
    ))
}

// ---------------------------------------------------------------------------------------------------------
// boot.grub-install-devices

/// The `Value:` line of `grub-pc/install_devices` in debconf's config.dat: (1-based line, value).
pub fn install_devices(text: &str) -> Option<(usize, String)> {
    debconf_value(text, INSTALL_DEVICES)
}

/// The `Value:` line of question `name` in debconf's config.dat: (1-based line, value).
pub fn debconf_value(text: &str, name: &str) -> Option<(usize, String)> {
    let mut in_stanza = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_end_matches('\r');
        if l.trim().is_empty() {
            in_stanza = false;
            continue;
        }
        if let Some(n) = l.strip_prefix("Name:") {
            in_stanza = n.trim() == name;
            continue;
        }
        if in_stanza {
            if let Some(v) = l.strip_prefix("Value:") {
                return Some((i + 1, v.trim().to_string()));
            }
        }
    }
    None
}

/// Rewrite the stanza's `Value:` line to `value`; every other byte is kept. Idempotent.
pub fn set_install_devices(text: &str, value: &str) -> String {
    set_debconf_value(text, INSTALL_DEVICES, value)
}

/// Rewrite the `Value:` line of question `name` to `value`; every other byte is kept. Idempotent.
pub fn set_debconf_value(text: &str, name: &str, value: &str) -> String {
    let Some((line, old)) = debconf_value(text, name) else {
        return text.to_string();
    };
    if old == value {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let eol = &l[l.trim_end_matches(['\r', '\n']).len()..];
            out.push_str(&format!("Value: {value}{eol}"));
        } else {
            out.push_str(l);
        }
    }
    out
}

fn check_install_devices(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    if !ctx.facts.installed("grub-pc") {
        return Ok(Vec::new());
    }
    let Some(text) = ctx.root.read_text(DEBCONF_CONFIG)? else {
        return Ok(Vec::new());
    };
    let Some((line, value)) = install_devices(&text) else {
        return Ok(Vec::new());
    };
    let bad: Vec<(String, &str)> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter_map(|d| bad_device(d).map(|w| (d.to_string(), w)))
        .collect();
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = bad.iter().map(|(d, w)| format!("{d} ({w})")).collect();
    Ok(vec![Finding::new(info, format!(
        "debconf's {INSTALL_DEVICES} names {}: in the cloud the next grub-pc upgrade cannot reinstall GRUB to the disk, and new GRUB modules with the old boot code leave the VM unbootable",
        list.join(", ")
    ))
    .evidence(Evidence::line(DEBCONF_CONFIG, line, &format!("Value: {value}")))
    .remediation(format!("Set {INSTALL_DEVICES} to {CLOUD_DISK} (echo 'grub-pc {INSTALL_DEVICES} multiselect {CLOUD_DISK}' | debconf-set-selections)."))
    .fix(Fix::default().edit(FileEdit::rewrite(DEBCONF_CONFIG, Validator::None, |t| Ok(set_install_devices(t, CLOUD_DISK)))))])
}

// ---------------------------------------------------------------------------------------------------------
// boot.root-device-names

/// A `root=`/`resume=` word naming a bad device: (word, param, device, why).
pub type BadParam = (String, &'static str, String, &'static str);

/// `root=`/`resume=` words naming bad devices in a list of words.
fn bad_params(words: &[&str]) -> Vec<BadParam> {
    let mut v = Vec::new();
    for w in words {
        let w = w.trim_matches(|c| c == '"' || c == '\'');
        for param in ["root", "resume"] {
            if let Some(dev) = w.strip_prefix(param).and_then(|r| r.strip_prefix('=')) {
                if let Some(why) = bad_device(dev) {
                    v.push((
                        w.to_string(),
                        if param == "root" { "root" } else { "resume" },
                        dev.to_string(),
                        why,
                    ));
                }
            }
        }
    }
    v
}

/// Kernel command lines in a grub.cfg (or menu.lst): (line, text, bad params).
pub fn grub_cfg_bad_params(text: &str) -> Vec<(usize, String, Vec<BadParam>)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !matches!(
            words.first(),
            Some(&("linux" | "linux16" | "linuxefi" | "kernel"))
        ) {
            continue;
        }
        let bad = bad_params(&words[1..]);
        if !bad.is_empty() {
            out.push((i + 1, line.to_string(), bad));
        }
    }
    out
}

const CMDLINE_VARS: &[&str] = &["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];

/// What a bad device should become: `UUID=…` when it can be resolved, else nothing.
fn resolve_device(ctx: &Ctx, dev: &str) -> Option<String> {
    if let Some(v) = ctx.config.devices.get(dev) {
        if v.contains('=') && !v.contains(char::is_whitespace) {
            return Some(v.clone());
        }
    }
    let mut cands = vec![dev.to_string()];
    if ctx.facts.live {
        if let Ok(c) = std::fs::canonicalize(dev) {
            cands.push(c.display().to_string());
        }
    }
    cands
        .iter()
        .find_map(|d| ctx.facts.filesystem(d).and_then(|f| f.uuid.clone()))
        .map(|u| format!("UUID={u}"))
}

/// Rewrite `root=`/`resume=` words in the GRUB_CMDLINE_LINUX(_DEFAULT) assignments of a default-grub file:
/// a device in `map` becomes its replacement; other bad devices are removed (grub-mkconfig adds root=).
pub fn rewrite_cmdline_devices(content: &str, map: &BTreeMap<String, String>) -> Result<String> {
    shell::rewrite_values(content, |a| {
        if !CMDLINE_VARS.contains(&a.name.as_str()) {
            return Ok(None);
        }
        shell::edit_words(&a.raw, |w| match bad_params(&[w]).first() {
            Some((_, param, dev, _)) => match map.get(dev) {
                Some(new) => WordEdit::Replace(format!("{param}={new}")),
                None => WordEdit::Remove,
            },
            None => WordEdit::Keep,
        })
    })
}

fn check_root_device_names(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let files = default_grub_files(ctx)?;
    let (parsed, _) = parse_defaults(&files);
    let mut evidence = Vec::new();
    let mut root_bad = false;
    let mut devices: Vec<(String, &'static str)> = Vec::new();
    let mut edit_files = Vec::new();
    for (path, p) in &parsed {
        for a in p
            .assignments
            .iter()
            .filter(|a| CMDLINE_VARS.contains(&a.name.as_str()))
        {
            // Only the words this assignment adds (not the expansion of earlier ones).
            let own = shell::eval(&a.raw, &HashMap::new());
            let words: Vec<&str> = own.split_whitespace().collect();
            let bad = bad_params(&words);
            if bad.is_empty() {
                continue;
            }
            evidence.push(Evidence::line(path, a.line, &a.text));
            for (_, param, dev, why) in bad {
                root_bad |= param == "root";
                devices.push((format!("{param}={dev}"), why));
            }
            if !edit_files.contains(path) {
                edit_files.push(path.clone());
            }
        }
    }
    if let Some(cfg) = ctx.root.read_text(GRUB_CFG)? {
        for (line, text, bad) in grub_cfg_bad_params(&cfg) {
            evidence.push(Evidence::line(GRUB_CFG, line, &text));
            for (_, param, dev, why) in bad {
                root_bad |= param == "root";
                devices.push((format!("{param}={dev}"), why));
            }
        }
    }
    if evidence.is_empty() {
        return Ok(Vec::new());
    }
    devices.sort();
    devices.dedup();
    let mut map = BTreeMap::new();
    for (pd, _) in &devices {
        let dev = pd.split_once('=').map(|x| x.1).unwrap_or_default();
        if let Some(r) = resolve_device(ctx, dev) {
            map.insert(dev.to_string(), r);
        }
    }
    let mut fix = Fix::default().command(update_grub());
    for p in edit_files {
        let m = map.clone();
        fix = fix.edit(FileEdit::rewrite(&p, Validator::ShellVars, move |t| {
            rewrite_cmdline_devices(t, &m)
        }));
    }
    let list: Vec<String> = devices.iter().map(|(d, w)| format!("{d} ({w})")).collect();
    Ok(vec![Finding::new(info, format!(
        "the kernel command line names {}: on the cloud's virtio disk that device does not exist{}",
        list.join(", "),
        if root_bad { ", so the root filesystem is not found and the boot stops in the initramfs" } else { " and the boot waits for the resume device" }
    ))
    .severity(if root_bad { Severity::Blocker } else { Severity::Warning })
    .evidences(evidence)
    .evidences(bad_line_evidence(&parsed))
    .remediation("Use UUID= (or drop root= and let grub-mkconfig generate root=UUID=) in /etc/default/grub, then run update-grub.")
    .fix(fix)])
}

// ---------------------------------------------------------------------------------------------------------
// boot.grub-uuid-disabled

/// Disable every `GRUB_DISABLE_LINUX_UUID=true` of a file: comment out simple assignments, set others to false.
pub fn enable_linux_uuid(content: &str) -> Result<String> {
    let is_true = |a: &shell::Assignment| a.name == "GRUB_DISABLE_LINUX_UUID" && a.value == "true";
    let t = shell::comment_out(content, is_true);
    shell::rewrite_values(&t, |a| Ok(is_true(a).then(|| "false".to_string())))
}

fn check_uuid_disabled(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let files = default_grub_files(ctx)?;
    let (parsed, env) = parse_defaults(&files);
    if env.get("GRUB_DISABLE_LINUX_UUID").map(String::as_str) != Some("true") {
        return Ok(Vec::new());
    }
    let mut fix = Fix::default().command(update_grub());
    let mut ev = Vec::new();
    for (path, p) in &parsed {
        let hits: Vec<_> = p
            .assignments
            .iter()
            .filter(|a| a.name == "GRUB_DISABLE_LINUX_UUID" && a.value == "true")
            .collect();
        for a in &hits {
            ev.push(Evidence::line(path, a.line, &a.text));
        }
        if !hits.is_empty() {
            fix = fix.edit(FileEdit::rewrite(
                path,
                Validator::ShellVars,
                enable_linux_uuid,
            ));
        }
    }
    Ok(vec![Finding::new(info, "GRUB_DISABLE_LINUX_UUID=true makes grub-mkconfig write root=/dev/sdX (the old hypervisor's disk name) into grub.cfg: the next update-grub before the migration makes the VM unbootable on virtio")
        .evidences(ev)
        .remediation("Remove GRUB_DISABLE_LINUX_UUID=true from /etc/default/grub and run update-grub.")
        .fix(fix)])
}

// ---------------------------------------------------------------------------------------------------------
// boot.device-map

/// Entries of a device.map naming bad devices: (line, text, device, why).
pub fn device_map_bad(text: &str) -> Vec<(usize, String, String, &'static str)> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut it = t.split_whitespace();
        let (Some(drive), Some(dev)) = (it.next(), it.next()) else {
            continue;
        };
        if !drive.starts_with('(') {
            continue;
        }
        if let Some(why) = bad_device(dev) {
            v.push((i + 1, line.to_string(), dev.to_string(), why));
        }
    }
    v
}

fn check_device_map(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(text) = ctx.root.read_text(DEVICE_MAP)? else {
        return Ok(Vec::new());
    };
    let bad = device_map_bad(&text);
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    let devs: Vec<String> = bad
        .iter()
        .map(|(_, _, d, w)| format!("{d} ({w})"))
        .collect();
    Ok(vec![Finding::new(info, format!("{DEVICE_MAP} maps GRUB drives to {}: grub-install and grub-mkconfig then look for a disk the cloud does not have", devs.join(", ")))
        .evidences(bad.iter().map(|(l, t, _, _)| Evidence::line(DEVICE_MAP, *l, t)))
        .remediation(format!("Remove {DEVICE_MAP}; GRUB probes the disks itself."))
        .fix(Fix::default().edit(FileEdit::remove(DEVICE_MAP)))])
}

// ---------------------------------------------------------------------------------------------------------
// boot.serial-console

/// The last `console=` word when it names Xen's console (`hvc0`, `xvc0`).
fn last_xen_console(words: &str) -> Option<String> {
    words
        .split_whitespace()
        .rfind(|w| w.starts_with("console="))
        .filter(|w| {
            let dev = w.trim_start_matches("console=");
            dev.starts_with("hvc") || dev.starts_with("xvc")
        })
        .map(str::to_string)
}

fn has_serial(words: &str) -> bool {
    words
        .split_whitespace()
        .any(|w| w == "console=ttyS0" || w.starts_with("console=ttyS0,"))
}

/// An unterminated quote (or `$(`, backquote) runs to the end of the file in sh: a line appended after it
/// would become part of that string, so the file is left for a human to correct; `then` says what to do.
pub(crate) fn refuse_unterminated(parsed: &shell::Parsed, then: &str) -> Result<()> {
    if let Some(b) = parsed
        .bad
        .iter()
        .find(|b| b.why.starts_with("unterminated"))
    {
        anyhow::bail!(
            "line {} ({}) has an {}: sh reads the rest of the file as part of it; {then}",
            b.line,
            b.text,
            b.why
        );
    }
    Ok(())
}

/// Add the serial console words to the last GRUB_CMDLINE_LINUX of a file (a new line when it has none).
/// Idempotent.
pub fn add_serial_console(content: &str) -> Result<String> {
    let parsed = shell::parse(content, &mut HashMap::new());
    refuse_unterminated(&parsed, "correct it by hand")?;
    match parsed.last("GRUB_CMDLINE_LINUX") {
        Some(a) => {
            if has_serial(&shell::eval(&a.raw, &HashMap::new())) {
                return Ok(content.to_string());
            }
            let new = shell::append_words(&a.raw, SERIAL_WORDS)?;
            let mut out = content.to_string();
            out.replace_range(a.value_start..a.value_end, &new);
            Ok(out)
        }
        None => {
            let mut out = content.to_string();
            push_assignment(&mut out, "GRUB_CMDLINE_LINUX", &SERIAL_WORDS.join(" "));
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// boot.serial-terminal

pub const SERIAL_TERMINAL: &str = "console serial";
pub const SERIAL_COMMAND: &str = "serial --speed=115200";

fn has_serial_terminal(v: &str) -> bool {
    v.split_whitespace().any(|w| w == "serial")
}

/// Append `NAME="value"` as a new line, in the file's line-ending style.
pub(crate) fn push_assignment(content: &mut String, name: &str, value: &str) {
    let nl = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    if !content.is_empty() && !content.ends_with('\n') {
        content.push_str(nl);
    }
    // A last line ending in `\` continues onto the next one in sh: an empty line ends it first.
    let body = content.strip_suffix('\n').unwrap_or(content);
    let body = body.strip_suffix('\r').unwrap_or(body);
    let last = &body[body.rfind('\n').map_or(0, |p| p + 1)..];
    if (last.len() - last.trim_end_matches('\\').len()) % 2 == 1 {
        content.push_str(nl);
    }
    content.push_str(&format!("{name}=\"{value}\"{nl}"));
}

/// Put GRUB's terminal on the serial port as well as the console: `serial` appended to the last
/// GRUB_TERMINAL of a file (a new `GRUB_TERMINAL="console serial"` when it has none), plus
/// `GRUB_SERIAL_COMMAND` at 115200 baud when `add_command` (nothing else sets one). Idempotent.
pub fn add_serial_terminal(content: &str, add_command: bool) -> Result<String> {
    let parsed = shell::parse(content, &mut HashMap::new());
    refuse_unterminated(&parsed, "correct it by hand")?;
    let mut out = content.to_string();
    match parsed.last("GRUB_TERMINAL") {
        Some(a) if has_serial_terminal(&shell::eval(&a.raw, &HashMap::new())) => {}
        Some(a) if !shell::eval(&a.raw, &HashMap::new()).trim().is_empty() => {
            let new = shell::append_words(&a.raw, &["serial"])?;
            out.replace_range(a.value_start..a.value_end, &new);
        }
        _ => push_assignment(&mut out, "GRUB_TERMINAL", SERIAL_TERMINAL),
    }
    if add_command && parsed.last("GRUB_SERIAL_COMMAND").is_none() {
        push_assignment(&mut out, "GRUB_SERIAL_COMMAND", SERIAL_COMMAND);
    }
    Ok(out)
}

type Defaults = (Vec<(String, shell::Parsed)>, HashMap<String, String>);

/// The parsed GRUB defaults when the serial checks apply (`fix.serial_console` and a default file exists).
fn serial_defaults(ctx: &Ctx) -> Result<Option<Defaults>> {
    if !ctx.config.fix.serial_console {
        return Ok(None);
    }
    let files = default_grub_files(ctx)?;
    Ok((!files.is_empty()).then(|| parse_defaults(&files)))
}

/// The last assignment of `name` across the parsed default files, with its file.
fn last_assignment(
    parsed: &[(String, shell::Parsed)],
    name: &str,
) -> Option<(String, shell::Assignment)> {
    parsed
        .iter()
        .flat_map(|(p, r)| {
            r.assignments
                .iter()
                .filter(|a| a.name == name)
                .map(move |a| (p.clone(), a.clone()))
        })
        .last()
}

fn check_serial_terminal(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some((parsed, env)) = serial_defaults(ctx)? else {
        return Ok(Vec::new());
    };
    let get = |k: &str| env.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    // grub-mkconfig: a non-empty GRUB_TERMINAL sets both GRUB_TERMINAL_INPUT and _OUTPUT.
    let output = match get("GRUB_TERMINAL") {
        t if !t.is_empty() => t,
        _ => get("GRUB_TERMINAL_OUTPUT"),
    };
    if has_serial_terminal(&output) {
        return Ok(Vec::new());
    }
    let last = |name: &str| last_assignment(&parsed, name);
    let term = last("GRUB_TERMINAL").or_else(|| last("GRUB_TERMINAL_OUTPUT"));
    let (path, ev) = match &term {
        Some((p, a)) => (
            last("GRUB_TERMINAL")
                .map(|(p, _)| p)
                .unwrap_or_else(|| p.clone()),
            Evidence::line(p, a.line, &a.text),
        ),
        None => (
            DEFAULT_GRUB.to_string(),
            Evidence::file(
                DEFAULT_GRUB,
                "no GRUB_TERMINAL: grub-mkconfig uses the graphical terminal (gfxterm) only",
            ),
        ),
    };
    let add_command = get("GRUB_SERIAL_COMMAND").is_empty();
    Ok(vec![Finding::new(
        info,
        format!(
            "GRUB's terminal is {}: its menu and errors never reach the serial port, so the cloud's console \
             log stays empty until the kernel starts, and on an instance without a video device the \
             graphical terminal can keep GRUB from booting at all",
            if output.is_empty() {
                "the default (gfxterm)".to_string()
            } else {
                format!("{output:?}")
            }
        ),
    )
    .evidence(ev)
    .remediation(format!(
        "Set GRUB_TERMINAL=\"{SERIAL_TERMINAL}\"{} and run update-grub.",
        if add_command {
            format!(" and GRUB_SERIAL_COMMAND=\"{SERIAL_COMMAND}\"")
        } else {
            String::new()
        }
    ))
    .fix(
        Fix::default()
            .edit(FileEdit::rewrite(&path, Validator::ShellVars, move |c| {
                add_serial_terminal(c, add_command)
            }))
            .command(update_grub()),
    )])
}

fn check_serial_console(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some((parsed, env)) = serial_defaults(ctx)? else {
        return Ok(Vec::new());
    };
    let all = format!(
        "{} {}",
        env.get("GRUB_CMDLINE_LINUX")
            .map(String::as_str)
            .unwrap_or(""),
        env.get("GRUB_CMDLINE_LINUX_DEFAULT")
            .map(String::as_str)
            .unwrap_or("")
    );
    if has_serial(&all) {
        // The last console= is /dev/console: Xen's hvc0/xvc0 there (left from the old platform) takes the
        // initramfs's and systemd's output away from the serial port, on a cloud that has no Xen console.
        let Some(xen) = last_xen_console(&all) else {
            return Ok(Vec::new());
        };
        let mut ev = Vec::new();
        let mut fix = Fix::default();
        for (path, p) in &parsed {
            let hits: Vec<&shell::Assignment> = p
                .assignments
                .iter()
                .filter(|a| {
                    a.name.starts_with("GRUB_CMDLINE_LINUX") && a.value.contains(xen.as_str())
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            ev.extend(hits.iter().map(|a| Evidence::line(path, a.line, &a.text)));
            let w = xen.clone();
            fix = fix.edit(FileEdit::rewrite(path, Validator::ShellVars, move |t| {
                Ok(crate::checks::cloud_init::drop_cmdline_word(t, &w))
            }));
        }
        return Ok(vec![Finding::new(
            info,
            format!(
                "`{xen}` is the last console= on the kernel command line: /dev/console is then Xen's console, \
                 which the cloud does not have, so the initramfs's and systemd's messages never reach the \
                 serial console log"
            ),
        )
        .severity(Severity::Warning)
        .evidences(ev)
        .remediation(format!("Remove `{xen}` from GRUB_CMDLINE_LINUX* and run update-grub."))
        .fix(fix.command(update_grub()))]);
    }
    let last = last_assignment(&parsed, "GRUB_CMDLINE_LINUX");
    let (path, ev) = match &last {
        Some((p, a)) => (p.clone(), Evidence::line(p, a.line, &a.text)),
        None => (
            DEFAULT_GRUB.to_string(),
            Evidence::file(DEFAULT_GRUB, "no GRUB_CMDLINE_LINUX"),
        ),
    };
    Ok(vec![Finding::new(info, "the kernel command line has no console=ttyS0: the cloud's console log (the serial port) stays empty, so a failed boot cannot be diagnosed")
        .evidence(ev)
        .remediation(format!("Add `{}` to GRUB_CMDLINE_LINUX and run update-grub.", SERIAL_WORDS.join(" ")))
        .fix(Fix::default().edit(FileEdit::rewrite(&path, Validator::ShellVars, add_serial_console)).command(update_grub()))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_console_last() {
        assert_eq!(
            last_xen_console("console=ttyS0,115200 console=hvc0").as_deref(),
            Some("console=hvc0")
        );
        assert_eq!(last_xen_console("console=hvc0 console=ttyS0,115200"), None);
        assert_eq!(
            last_xen_console("quiet console=xvc0").as_deref(),
            Some("console=xvc0")
        );
        assert_eq!(last_xen_console("quiet"), None);
        let t = "GRUB_CMDLINE_LINUX=\"console=ttyS0,115200 console=hvc0 quiet\"\n";
        assert_eq!(
            crate::checks::cloud_init::drop_cmdline_word(t, "console=hvc0"),
            "GRUB_CMDLINE_LINUX=\"console=ttyS0,115200 quiet\"\n"
        );
    }

    #[test]
    fn serial_edits_refuse_a_file_with_an_unterminated_quote() {
        // sh reads everything after the stray quote as one string: an appended assignment would be swallowed
        // by it (and a second run appended another one).
        let t = "GRUB_DEFAULT=0\nGRUB_DISTRIBUTOR=\"Debian\nGRUB_TIMEOUT=5\n";
        assert!(add_serial_console(t).is_err());
        assert!(add_serial_terminal(t, true).is_err());
        let ok = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n";
        assert!(add_serial_console(ok).is_ok());
        assert!(add_serial_terminal(ok, true).is_ok());
        // A dangling continuation on the last line would join the appended assignment to it.
        let t = "GRUB_DEFAULT=0 \\";
        let out = add_serial_console(t).unwrap();
        assert_eq!(
            out,
            "GRUB_DEFAULT=0 \\\n\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n"
        );
        assert_eq!(add_serial_console(&out).unwrap(), out);
        let out = add_serial_terminal(t, false).unwrap();
        assert_eq!(add_serial_terminal(&out, false).unwrap(), out);
    }

    #[test]
    fn device_names() {
        for d in [
            "/dev/sda1",
            "/dev/sdab",
            "/dev/hda",
            "/dev/xvda2",
            "/dev/nvme0n1p1",
            "/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part1",
            "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1",
            "'/dev/sda1'",
        ] {
            assert!(bad_device(d).is_some(), "{d}");
        }
        for d in [
            "/dev/vda1",
            "UUID=0a1b",
            "LABEL=root",
            "/dev/mapper/vg-root",
            "/dev/vg/root",
            "/dev/disk/by-uuid/0a1b",
            "/dev/sda-x",
            "/dev/md0",
        ] {
            assert!(bad_device(d).is_none(), "{d}");
        }
    }

    #[test]
    fn mbr_kinds() {
        let mut s = vec![0u8; 512];
        assert!(matches!(classify_mbr(&s), Mbr::NoBootCode(_)));
        s[510] = 0x55;
        s[511] = 0xaa;
        assert!(matches!(classify_mbr(&s), Mbr::NoBootCode(_)));
        s[0x17f..0x184].copy_from_slice(b"GRUB ");
        assert_eq!(classify_mbr(&s), Mbr::Grub);
        s[0x17f..0x184].copy_from_slice(b"LILO ");
        assert_eq!(classify_mbr(&s), Mbr::Other("LILO"));
        // GRUB text in the partition table is not boot code.
        let mut t = vec![0u8; 512];
        t[450..454].copy_from_slice(b"GRUB");
        t[510] = 0x55;
        t[511] = 0xaa;
        assert!(matches!(classify_mbr(&t), Mbr::NoBootCode(_)));
        assert!(matches!(classify_mbr(&s[..100]), Mbr::NoBootCode(_)));
    }

    const CONFIG_DAT: &str = "Name: grub-pc/hidden_timeout\nTemplate: grub-pc/hidden_timeout\nValue: true\nOwners: grub-pc\n\nName: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001\nOwners: grub-pc\nFlags: seen\nVariables:\n CHOICES = /dev/sda (21474 MB; VMware_Virtual_IDE_Hard_Drive)\n RAW_CHOICES = /dev/sda\n\nName: grub-pc/install_devices_disks_changed\nTemplate: grub-pc/install_devices_disks_changed\nValue: /dev/sda\nOwners: grub-pc\n";

    #[test]
    fn debconf_force_extra_removable() {
        let t = "Name: grub2/force_efi_extra_removable\nTemplate: grub2/force_efi_extra_removable\nValue: false\nOwners: grub-efi-amd64\n\nName: grub2/update_nvram\nTemplate: grub2/update_nvram\nValue: true\n";
        assert_eq!(
            debconf_value(t, FORCE_EXTRA_REMOVABLE),
            Some((3, "false".into()))
        );
        let out = set_debconf_value(t, FORCE_EXTRA_REMOVABLE, "true");
        assert_eq!(out, t.replacen("Value: false", "Value: true", 1));
        assert_eq!(set_debconf_value(&out, FORCE_EXTRA_REMOVABLE, "true"), out);
        assert_eq!(
            debconf_value(
                "Name: grub2/update_nvram\nValue: true\n",
                FORCE_EXTRA_REMOVABLE
            ),
            None
        );
    }

    #[test]
    fn debconf_install_devices() {
        let (line, v) = install_devices(CONFIG_DAT).unwrap();
        assert_eq!(line, 8);
        assert!(v.starts_with("/dev/disk/by-id/ata-VMware"));
        let out = set_install_devices(CONFIG_DAT, CLOUD_DISK);
        assert_eq!(
            out,
            CONFIG_DAT.replace(&format!("Value: {v}\n"), "Value: /dev/vda\n")
        );
        // The other stanza's Value: /dev/sda is untouched.
        assert!(out.contains("install_devices_disks_changed\nValue: /dev/sda\n"));
        assert_eq!(set_install_devices(&out, CLOUD_DISK), out);
        let crlf = CONFIG_DAT.replace('\n', "\r\n");
        assert!(set_install_devices(&crlf, CLOUD_DISK).contains("Value: /dev/vda\r\nOwners"));
        assert!(install_devices("Name: grub-pc/install_devices\nTemplate: x\n").is_none());
        assert!(install_devices("garbage\0\nValue: /dev/sda\n").is_none());
    }

    #[test]
    fn grub_cfg_params() {
        let cfg = "menuentry 'Debian' {\n\tset root='hd0,msdos1'\n\tlinux\t/boot/vmlinuz-4.9.0-8-amd64 root=/dev/sda1 ro resume=/dev/sda5 quiet\n\tinitrd /boot/initrd.img\n}\n# linux /x root=/dev/sdb1\n\tlinux /v root=UUID=abc ro\n";
        let bad = grub_cfg_bad_params(cfg);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 3);
        assert_eq!(bad[0].2.len(), 2);
        assert_eq!(bad[0].2[0].1, "root");
        assert_eq!(bad[0].2[1].2, "/dev/sda5");
    }

    #[test]
    fn cmdline_device_rewrite() {
        let t = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet resume=/dev/sda5\"\n# keep root=/dev/sda1\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 net.ifnames=0\"\r\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX resume=/dev/disk/by-id/ata-X-part5\"";
        let mut map = BTreeMap::new();
        map.insert("/dev/sda1".to_string(), "UUID=1111-2222".to_string());
        let out = rewrite_cmdline_devices(t, &map).unwrap();
        assert_eq!(out, "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n# keep root=/dev/sda1\nGRUB_CMDLINE_LINUX=\"root=UUID=1111-2222 net.ifnames=0\"\r\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX\"");
        assert_eq!(rewrite_cmdline_devices(&out, &map).unwrap(), out);
        let out2 = rewrite_cmdline_devices(t, &BTreeMap::new()).unwrap();
        assert!(
            out2.contains("GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\r\n"),
            "{out2}"
        );
    }

    #[test]
    fn uuid_enable() {
        let t = "GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_LINUX_UUID=\"true\"; GRUB_X=1\n#GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_LINUX_UUID=false\n";
        let out = enable_linux_uuid(t).unwrap();
        assert_eq!(out, "#GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_LINUX_UUID=false; GRUB_X=1\n#GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_LINUX_UUID=false\n");
        assert_eq!(enable_linux_uuid(&out).unwrap(), out);
    }

    #[test]
    fn device_map_entries() {
        let m = "# comment\n(hd0)\t/dev/sda\n(hd1) /dev/vdb\n(fd0) /dev/fd0\ngarbage\n(hd2)   /dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001\n";
        let b = device_map_bad(m);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 6]);
    }

    #[test]
    fn serial_terminal_add() {
        let t = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"\n#GRUB_TERMINAL=console\n";
        let out = add_serial_terminal(t, true).unwrap();
        assert_eq!(
            out,
            format!("{t}GRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --speed=115200\"\n")
        );
        assert_eq!(add_serial_terminal(&out, true).unwrap(), out);
        // An existing terminal keeps its words; CRLF and a missing final newline are kept.
        let t = "GRUB_TERMINAL=console\r\nGRUB_TIMEOUT=5";
        let out = add_serial_terminal(t, false).unwrap();
        assert_eq!(out, "GRUB_TERMINAL=\"console serial\"\r\nGRUB_TIMEOUT=5");
        assert_eq!(add_serial_terminal(&out, false).unwrap(), out);
        let t = "GRUB_TERMINAL='console'\nGRUB_SERIAL_COMMAND=\"serial --unit=1 --speed=9600\"\n";
        assert_eq!(
            add_serial_terminal(t, true).unwrap(),
            "GRUB_TERMINAL='console serial'\nGRUB_SERIAL_COMMAND=\"serial --unit=1 --speed=9600\"\n"
        );
        // Already serial (any position), or an empty file.
        let t = "GRUB_TERMINAL=\"serial console\"\n";
        assert_eq!(add_serial_terminal(t, false).unwrap(), t);
        assert_eq!(
            add_serial_terminal("", false).unwrap(),
            "GRUB_TERMINAL=\"console serial\"\n"
        );
    }

    #[test]
    fn serial_console_add() {
        let t = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n# end";
        let out = add_serial_console(t).unwrap();
        assert_eq!(out, "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n# end");
        assert_eq!(add_serial_console(&out).unwrap(), out);
        let t = "GRUB_CMDLINE_LINUX='net.ifnames=0 biosdevname=0'\n";
        assert_eq!(
            add_serial_console(t).unwrap(),
            "GRUB_CMDLINE_LINUX='net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200'\n"
        );
        let t = "GRUB_TIMEOUT=5";
        let out = add_serial_console(t).unwrap();
        assert_eq!(
            out,
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n"
        );
        assert_eq!(add_serial_console(&out).unwrap(), out);
        assert!(has_serial("quiet console=ttyS0,115200n8"));
        assert!(!has_serial("console=ttyS01 console=tty0"));
    }

    #[test]
    fn boot_disk_from_facts() {
        let mut f = Facts {
            live: true,
            root_device: Some("/dev/sda1".into()),
            ..Default::default()
        };
        f.disks.push(crate::guest::facts::Disk {
            name: "sda".into(),
            partitions: vec!["sda1".into(), "sda2".into()],
            ..Default::default()
        });
        assert_eq!(boot_disk(&f).unwrap(), "/dev/sda");
        f.live = false;
        assert!(boot_disk(&f).unwrap_err().contains("directory"));
        f.root_device = None;
        f.live = true;
        assert!(boot_disk(&f).is_err());
    }
}

#[cfg(test)]
mod compose_tests {
    use super::*;

    #[test]
    fn device_then_serial_then_uuid_compose() {
        let t = "GRUB_DISABLE_LINUX_UUID=true\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX \\\n  resume=/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part5\"\n";
        let a = rewrite_cmdline_devices(t, &BTreeMap::new()).unwrap();
        let b = add_serial_console(&a).unwrap();
        let c = enable_linux_uuid(&b).unwrap();
        assert_eq!(
            c,
            "#GRUB_DISABLE_LINUX_UUID=true\nGRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200\"\n"
        );
        let (p, env) = parse_defaults(&[(DEFAULT_GRUB.to_string(), c.clone())]);
        assert!(p[0].1.bad.is_empty());
        assert_eq!(
            env["GRUB_CMDLINE_LINUX"],
            "net.ifnames=0 console=tty0 console=ttyS0,115200"
        );
    }
}
