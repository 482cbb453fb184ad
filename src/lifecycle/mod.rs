//! The pre-migration and first-boot sequences behind the systemd units, `arm`/`disarm`, and the man page.
//!
//! Pre-migration (cloudprep-premigrate.service, enabled only by `cloudprep arm`): the unit is started at boot
//! with `RemainAfterExit=yes` and does nothing then; its `ExecStop=` runs `cloudprep premigrate` when the
//! unit is stopped. Because a unit is also stopped by `systemctl stop`, `disarm`, and package removal,
//! `premigrate` run by the unit (it sets `CLOUDPREP_INVOKED_BY`) only acts when (1) the arm marker
//! exists, (2) `systemctl is-system-running` says `stopping`, and (3) the queued shutdown job is a
//! power-off or halt (a reboot keeps the machine armed and changes nothing). It then audits, fixes, audits
//! again and records the reports under /var/lib/cloudprep, arms the first-boot unit, disarms itself (so the
//! exported image is not armed), and, when an export is configured and no blocker is left, exports the disk
//! holding `/` with the root read-only or frozen. The shutdown that is already underway then powers off.
//!
//! First boot (cloudprep-firstboot.service, armed by premigrate with /var/lib/cloudprep/firstboot-armed):
//! reinstalls GRUB on the disk holding /boot (or /), records it for debconf, optionally purges the old
//! hypervisor's tools, audits, writes /var/lib/cloudprep/firstboot-report.json and disarms itself.

use crate::audit::{self, Selection};
use crate::config::{Config, ExportConfig};
use crate::exit::{EXIT_FAILURE, EXIT_OK};
use crate::export::{Compression, Digest, ExportOptions, ImageFormat};
use crate::fix::FixOptions;
use crate::guest::root::Root;
use crate::guest::Target;
use crate::report::Format;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};

mod arm;
mod firstboot;
mod premigrate;

pub use arm::*;
pub use firstboot::*;
pub use premigrate::*;

pub const STATE_DIR: &str = "/var/lib/cloudprep";
pub const PREMIGRATE_MARKER: &str = "/var/lib/cloudprep/premigrate-armed";
pub const FIRSTBOOT_MARKER: &str = "/var/lib/cloudprep/firstboot-armed";
pub const PREMIGRATE_UNIT: &str = "cloudprep-premigrate.service";
pub const FIRSTBOOT_UNIT: &str = "cloudprep-firstboot.service";
/// Where the package installs the units (usrmerge makes /lib and /usr/lib the same directory).
pub const UNIT_DIRS: [&str; 2] = ["/lib/systemd/system", "/usr/lib/systemd/system"];
pub const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
/// poweroff.target and halt.target force the power-off after 30 minutes (`JobTimeoutSec=30min`,
/// `JobTimeoutAction=poweroff-force`): an export of a big disk takes longer, so `arm` lifts that limit.
pub const SHUTDOWN_TARGETS: [&str; 2] = ["poweroff.target", "halt.target"];
pub const DROPIN_NAME: &str = "cloudprep-premigrate.conf";
/// Set by cloudprep-premigrate.service for its `ExecStop=`: the guarded, shutdown-only mode.
pub const INVOKED_BY_ENV: &str = "CLOUDPREP_INVOKED_BY";

pub const PREMIGRATE_AUDIT: &str = "/var/lib/cloudprep/premigrate-audit.json";
pub const PREMIGRATE_REPORT: &str = "/var/lib/cloudprep/premigrate-report.json";
pub const PREMIGRATE_SUMMARY: &str = "/var/lib/cloudprep/premigrate-summary.json";
pub const FIRSTBOOT_REPORT: &str = "/var/lib/cloudprep/firstboot-report.json";

/// Packages of the old hypervisors' guest tools, purged on the first boot when configured.
pub const HYPERVISOR_TOOLS: [&str; 9] = [
    "open-vm-tools",
    "open-vm-tools-desktop",
    "open-vm-tools-sdmp",
    "hyperv-daemons",
    "xe-guest-utilities",
    "xen-guest-agent",
    "virtualbox-guest-utils",
    "virtualbox-guest-x11",
    "virtualbox-guest-dkms",
];

// ---------------------------------------------------------------------------------------------------
// Arm state (the marker file written by `arm`)

/// Export settings given to `arm`; they override `[export]` of the configuration for this migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArmState {
    /// When `arm` ran (seconds since the epoch).
    pub armed_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_format: Option<ImageFormat>,
}

impl ArmState {
    pub fn render(&self) -> Result<String> {
        Ok(format!(
            "# Written by `cloudprep arm`: cloudprep-premigrate.service runs the migration at the next\n\
             # power-off. Remove with `cloudprep disarm`. Export settings here override [export] of the config.\n{}",
            toml::to_string(self)?
        ))
    }

    pub fn parse(text: &str) -> Result<ArmState> {
        Ok(toml::from_str(text)?)
    }

    /// The export settings in effect: the configuration's `[export]` with this arm's overrides.
    pub fn export_config(&self, base: &ExportConfig) -> ExportConfig {
        let mut e = base.clone();
        if let Some(o) = &self.export_output {
            e.enabled = true;
            e.output = o.clone();
        }
        if let Some(f) = self.export_format {
            e.format = f;
        }
        e
    }
}

/// Turn the `[export]` settings into the arguments of `cloudprep export` (None: no export configured).
pub fn export_args(e: &ExportConfig) -> Result<Option<ExportOptions>> {
    if !e.enabled {
        return Ok(None);
    }
    if e.output.trim().is_empty() {
        bail!("[export] enabled = true but output is empty");
    }
    if e.format == ImageFormat::Raw && e.compress != Compression::None {
        bail!(
            "[export] compress = \"{}\" needs format = \"qcow2\"",
            e.compress
        );
    }
    Ok(Some(ExportOptions {
        source: "auto".into(),
        format: e.format,
        compress: e.compress,
        consistency: Some(e.consistency),
        threads: None,
        verify: false,
        no_fs_skip: false,
        // The summary records the SHA-256 of the image as written: what the operator compares after
        // copying it to the cloud.
        digest: Digest::Output,
        output: e.output.clone(),
    }))
}

// ---------------------------------------------------------------------------------------------------
// Small IO helpers through Root

/// Write a small cloudprep file (marker, report) in the guest atomically and durably, through the
/// openat layer: a temp file in the same directory, fsync, rename, fsync of the directory. A guest symlink
/// at the path is followed inside the root only; nothing is ever written through one.
fn write_guest(root: &Root, guest: &str, content: &str) -> Result<()> {
    let r = root.resolve(guest)?;
    let (parent, name) = crate::fix::atomic::split(&r.guest)?;
    let d = crate::fix::atomic::ensure_dir(root, &parent, &mut |_| Ok(()))
        .with_context(|| format!("writing {}", root.display(guest)))?;
    let meta = crate::fix::journal::Meta {
        mode: 0o644,
        ..Default::default()
    };
    d.write(&name, content.as_bytes(), &meta, false)
        .with_context(|| format!("writing {}", root.display(guest)))
}

/// Remove a file or symlink (not following it); absent is fine. Returns whether something was removed.
fn remove_guest(root: &Root, guest: &str) -> Result<bool> {
    use crate::fix::atomic::{split, Dir};
    let r = root.resolve_parent(guest)?;
    let (parent, name) = split(&r.guest)?;
    if !root.is_dir(&parent) {
        return Ok(false);
    }
    let d = Dir::open(root, &parent)?;
    match d.stat(&name)?.map(|st| st.st_mode & libc::S_IFMT) {
        None => Ok(false),
        Some(libc::S_IFREG | libc::S_IFLNK) => {
            d.unlink(&name)?;
            Ok(true)
        }
        Some(_) => bail!(
            "{} is not a file or symlink: not removing it",
            root.display(guest)
        ),
    }
}

/// Remove the guest directory `guest` when it is empty (one cloudprep created); anything else stays.
fn remove_empty_dir(root: &Root, guest: &str) -> Result<()> {
    let r = root.resolve_parent(guest)?;
    let (parent, name) = crate::fix::atomic::split(&r.guest)?;
    if root.is_dir(&parent) {
        crate::fix::atomic::Dir::open(root, &parent)?.rmdir(&name)?;
    }
    Ok(())
}

/// The unit file as installed in the guest (guest path), if any.
pub fn installed_unit(root: &Root, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| root.exists(p))
}

/// Enable a unit for multi-user.target the way `systemctl enable` does (a symlink in .wants), which also
/// works for an offline root and in a chroot.
pub fn enable_unit(root: &Root, unit: &str) -> Result<()> {
    let target = installed_unit(root, unit).ok_or_else(|| {
        anyhow!(
            "{unit} is not installed under {} (install the cloudprep package)",
            root.display(UNIT_DIRS[0])
        )
    })?;
    let link = format!("{WANTS_DIR}/{unit}");
    let d = crate::fix::atomic::ensure_dir(root, WANTS_DIR, &mut |_| Ok(()))
        .with_context(|| format!("creating {}", root.display(WANTS_DIR)))?;
    let meta = crate::fix::journal::Meta {
        mtime: now() as i64,
        ..Default::default()
    };
    d.symlink(unit, Path::new(&target), &meta)
        .with_context(|| format!("creating {}", root.display(&link)))
}

pub fn disable_unit(root: &Root, unit: &str) -> Result<bool> {
    remove_guest(root, &format!("{WANTS_DIR}/{unit}"))
}

pub fn unit_enabled(root: &Root, unit: &str) -> bool {
    root.resolve_parent(format!("{WANTS_DIR}/{unit}"))
        .map(|r| r.host.symlink_metadata().is_ok())
        .unwrap_or(false)
}

/// Is this the running system booted with systemd (so `systemctl` talks to PID 1)?
fn systemd_running(root: &Root) -> bool {
    root.is_live() && Path::new("/run/systemd/system").is_dir()
}

/// Run a command in the guest: directly on the live system, confined in the guest under `--root` (as
/// `fix` runs its commands: own PID namespace and `/proc`, read-only `/sys`, only the guest's disks in
/// `/dev`, see `fix::exec`); stopped (with what it started) after `[fix] command_timeout` seconds.
pub fn run_in_guest(
    root: &Root,
    argv: &[&str],
    stdin: Option<&str>,
    timeout: std::time::Duration,
) -> Result<String> {
    use crate::fix::exec;
    let confined = if root.is_live() {
        None
    } else {
        Some(exec::Chroot::new(root, &exec::guest_dev_links(root, &[]))?)
    };
    let full: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let shown = argv.join(" ");
    let o = exec::run_with_input(confined.as_ref(), &full, stdin, timeout)?;
    if !o.ok() {
        bail!("{shown} failed ({}): {}", o.describe(), o.output.trim());
    }
    Ok(o.output)
}

fn systemctl(args: &[&str]) -> Result<String> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running systemctl {}", args.join(" ")))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() && args[0] != "is-system-running" {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// cloudprep's drop-in for a unit or target (the shutdown targets' timeout, the premigrate unit's mount).
fn dropin_path(target: &str) -> String {
    format!("/etc/systemd/system/{target}.d/{DROPIN_NAME}")
}

/// The drop-in that keeps an export file's directory mounted until the pre-migration unit has stopped
/// (None for a device or an unusable path).
pub fn export_mount_dropin(output: &str) -> Option<String> {
    if !output.starts_with('/') || output.starts_with("/dev/") {
        return None;
    }
    let dir = Path::new(output).parent()?.to_str()?;
    // systemd unit-file values: specifiers start with %, and a path with blanks would split.
    if dir.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(format!(
        "# Written by `cloudprep arm`, removed by `cloudprep disarm`: the export target's file system\n\
         # stays mounted until the pre-migration export is done.\n[Unit]\nRequiresMountsFor={}\n",
        dir.replace('%', "%%")
    ))
}

pub const TIMEOUT_DROPIN_TEXT: &str = "# Written by `cloudprep arm`, removed by `cloudprep disarm`: the pre-migration export\n\
# runs during this shutdown and may take longer than the default 30 minutes.\n[Unit]\nJobTimeoutSec=infinity\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Consistency;

    #[test]
    fn arm_state_round_trip_and_overlay() {
        let s = ArmState {
            armed_at: 5,
            export_output: Some("/mnt/big/vm.qcow2".into()),
            export_format: Some(ImageFormat::Qcow2),
        };
        let text = s.render().unwrap();
        assert!(text.starts_with("# Written by"));
        assert_eq!(ArmState::parse(&text).unwrap(), s);
        let e = s.export_config(&ExportConfig::default());
        assert!(e.enabled);
        assert_eq!(e.output, "/mnt/big/vm.qcow2");
        let a = export_args(&e).unwrap().unwrap();
        assert_eq!(a.format, ImageFormat::Qcow2);
        assert_eq!(a.consistency, Some(Consistency::Readonly));
        assert_eq!(a.source, "auto");
        // No export given to arm: the configuration decides.
        let none = ArmState::parse("armed_at = 1\n").unwrap();
        assert!(export_args(&none.export_config(&ExportConfig::default()))
            .unwrap()
            .is_none());
        assert!(ArmState::parse("armed_at = 1\nbogus = 2\n").is_err());
    }

    #[test]
    fn export_settings_are_validated() {
        let mut e = ExportConfig {
            enabled: true,
            ..Default::default()
        };
        assert!(format!("{:#}", export_args(&e).unwrap_err()).contains("output is empty"));
        e.output = "/dev/sdb".into();
        e.compress = Compression::Zstd;
        assert!(format!("{:#}", export_args(&e).unwrap_err()).contains("qcow2"));
        e.format = ImageFormat::Qcow2;
        e.consistency = Consistency::Freeze;
        let a = export_args(&e).unwrap().unwrap();
        assert_eq!(a.compress, Compression::Zstd);
        assert_eq!(a.consistency, Some(Consistency::Freeze));
        // Values that are not one of the choices are refused when the configuration is read.
        let bad = crate::config::Config::parse("[export]\nformat = \"vmdk\"\n").unwrap_err();
        assert!(format!("{bad:#}").contains("vmdk"));
        // The marker of an older arm (format as a string) still parses.
        let s = ArmState::parse(
            "armed_at = 1\nexport_output = \"/dev/vdb\"\nexport_format = \"qcow2\"\n",
        )
        .unwrap();
        assert_eq!(s.export_format, Some(ImageFormat::Qcow2));
        assert!(ArmState::parse("armed_at = 1\nexport_format = \"vmdk\"\n").is_err());
    }

    #[test]
    fn shutdown_kind_from_list_jobs() {
        let poweroff = "1234 poweroff.target start waiting\n1240 systemd-poweroff.service start waiting\n1301 umount.target start waiting\n";
        assert_eq!(parse_shutdown_kind(poweroff), ShutdownKind::PowerOff);
        let reboot = "99 reboot.target start waiting\n100 systemd-reboot.service start waiting\n";
        assert_eq!(parse_shutdown_kind(reboot), ShutdownKind::Reboot);
        assert_eq!(
            parse_shutdown_kind("7 halt.target start waiting\n"),
            ShutdownKind::Halt
        );
        assert_eq!(parse_shutdown_kind(""), ShutdownKind::Unknown);
        assert_eq!(
            parse_shutdown_kind("garbage\n\n3 cloudprep-premigrate.service stop running\n"),
            ShutdownKind::Unknown
        );
    }

    #[test]
    fn guard_only_acts_on_an_armed_poweroff() {
        assert!(premigrate_guard(true, "stopping", ShutdownKind::PowerOff).is_ok());
        assert!(premigrate_guard(true, "stopping", ShutdownKind::Halt).is_ok());
        // Cannot tell which shutdown: armed and stopping is enough.
        assert!(premigrate_guard(true, "stopping", ShutdownKind::Unknown).is_ok());
        assert!(premigrate_guard(true, "stopping", ShutdownKind::Reboot)
            .unwrap_err()
            .contains("reboot"));
        // `systemctl stop`, disarm, package removal: the system is running.
        assert!(premigrate_guard(true, "running", ShutdownKind::Unknown)
            .unwrap_err()
            .contains("not shutting down"));
        assert!(premigrate_guard(true, "degraded", ShutdownKind::PowerOff).is_err());
        assert!(premigrate_guard(false, "stopping", ShutdownKind::PowerOff)
            .unwrap_err()
            .contains("not armed"));
    }

    #[test]
    fn product_uuid_only_when_meaningful() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("product_uuid");
        assert_eq!(product_uuid(&p), None);
        for (text, want) in [
            (
                "564D1A2B-3C4D-5E6F-7081-92A3B4C5D6E7\n",
                Some("564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7"),
            ),
            ("00000000-0000-0000-0000-000000000000\n", None),
            ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None),
            ("Not Settable\n", None),
            ("", None),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(product_uuid(&p).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn firstboot_marker_names_the_source_machine() {
        let u = "564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7";
        let m = firstboot_marker(1700000000, Some(u));
        assert_eq!(marker_source_uuid(&m).as_deref(), Some(u));
        assert!(m.starts_with("# Written by `cloudprep premigrate` at 1700000000"));
        let m = firstboot_marker(1, None);
        assert_eq!(marker_source_uuid(&m), None);
        // Markers of earlier versions (a comment only) and hand-written ones.
        assert_eq!(marker_source_uuid("# test\n"), None);
        assert_eq!(
            marker_source_uuid("source_product_uuid = \"ABC\"\r\n").as_deref(),
            Some("abc")
        );
        assert_eq!(marker_source_uuid("source_product_uuid = \"\"\n"), None);
    }

    #[test]
    fn export_target_mount_is_kept() {
        let d = export_mount_dropin("/mnt/export/disk.qcow2").unwrap();
        assert!(d.contains("[Unit]\nRequiresMountsFor=/mnt/export\n"), "{d}");
        assert!(export_mount_dropin("/srv/100%/x.raw")
            .unwrap()
            .contains("RequiresMountsFor=/srv/100%%\n"));
        assert_eq!(export_mount_dropin("/dev/sdb"), None);
        assert_eq!(export_mount_dropin("relative.raw"), None);
        assert_eq!(export_mount_dropin("/mnt/with space/x.raw"), None);
        assert_eq!(
            export_mount_dropin("/x.raw").unwrap().lines().last(),
            Some("RequiresMountsFor=/")
        );
    }

    #[test]
    fn debconf_answer() {
        assert_eq!(
            debconf_install_devices(&["/dev/vda".into()]),
            "grub-pc grub-pc/install_devices multiselect /dev/vda\n"
        );
        assert_eq!(
            debconf_install_devices(&["/dev/vda".into(), "/dev/vdb".into()]),
            "grub-pc grub-pc/install_devices multiselect /dev/vda, /dev/vdb\n"
        );
    }

    /// A fake sysfs: vda with vda1 (partition), dm-0 on vda2 (LVM), md0 on vdb1 + vdc1 (RAID 1), vdd whole.
    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let mk = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        let touch = |p: &str| std::fs::write(s.join(p), "1\n").unwrap();
        let ln = |target: &str, link: &str| {
            std::fs::create_dir_all(s.join(link).parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(s.join(target), s.join(link)).unwrap();
        };
        for (disk, parts) in [
            ("vda", vec!["vda1", "vda2"]),
            ("vdb", vec!["vdb1"]),
            ("vdc", vec!["vdc1"]),
            ("vdd", vec![]),
        ] {
            mk(&format!("devices/pci/virtio/block/{disk}"));
            ln(
                &format!("devices/pci/virtio/block/{disk}"),
                &format!("class/block/{disk}"),
            );
            for p in parts {
                mk(&format!("devices/pci/virtio/block/{disk}/{p}"));
                touch(&format!("devices/pci/virtio/block/{disk}/{p}/partition"));
                ln(
                    &format!("devices/pci/virtio/block/{disk}/{p}"),
                    &format!("class/block/{p}"),
                );
            }
        }
        mk("devices/virtual/block/dm-0/slaves");
        ln(
            "devices/pci/virtio/block/vda/vda2",
            "devices/virtual/block/dm-0/slaves/vda2",
        );
        ln("devices/virtual/block/dm-0", "class/block/dm-0");
        mk("devices/virtual/block/md0/slaves");
        ln(
            "devices/pci/virtio/block/vdb/vdb1",
            "devices/virtual/block/md0/slaves/vdb1",
        );
        ln(
            "devices/pci/virtio/block/vdc/vdc1",
            "devices/virtual/block/md0/slaves/vdc1",
        );
        ln("devices/virtual/block/md0", "class/block/md0");
        ln("devices/pci/virtio/block/vda/vda1", "dev/block/254:1");
        ln("devices/virtual/block/dm-0", "dev/block/253:0");
        ln("devices/virtual/block/md0", "dev/block/9:0");
        ln("devices/pci/virtio/block/vdd", "dev/block/254:48");
        t
    }

    #[test]
    fn disks_under_partitions_lvm_and_raid() {
        let t = fake_sys();
        let s = t.path();
        assert_eq!(disks_of_dev(s, "254:1").unwrap(), vec!["vda"]);
        assert_eq!(disks_of_dev(s, "253:0").unwrap(), vec!["vda"]);
        assert_eq!(disks_of_dev(s, "9:0").unwrap(), vec!["vdb", "vdc"]);
        assert_eq!(disks_of_dev(s, "254:48").unwrap(), vec!["vdd"]);
        assert!(disks_of_dev(s, "8:0").is_err());
    }
}
