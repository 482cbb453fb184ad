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
use crate::export::{Compression, Consistency, Digest, ExportOptions, ImageFormat};
use crate::fix::FixOptions;
use crate::guest::root::Root;
use crate::guest::Target;
use crate::report::Format;
use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};

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
    pub export_format: Option<String>,
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
        if let Some(f) = &self.export_format {
            e.format = f.clone();
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
    let format = ImageFormat::from_str(&e.format, true)
        .map_err(|_| anyhow!("[export] format {:?}: expected raw or qcow2", e.format))?;
    let compress = Compression::from_str(&e.compress, true).map_err(|_| {
        anyhow!(
            "[export] compress {:?}: expected none, zlib or zstd",
            e.compress
        )
    })?;
    if format == ImageFormat::Raw && compress != Compression::None {
        bail!(
            "[export] compress = {:?} needs format = \"qcow2\"",
            e.compress
        );
    }
    let consistency = Consistency::from_str(&e.consistency, true).map_err(|_| {
        anyhow!(
            "[export] consistency {:?}: expected readonly, freeze or none",
            e.consistency
        )
    })?;
    Ok(Some(ExportOptions {
        source: "auto".into(),
        format,
        compress,
        consistency: Some(consistency),
        threads: None,
        verify: false,
        no_fs_skip: false,
        digest: Digest::Sha256,
        output: e.output.clone(),
    }))
}

// ---------------------------------------------------------------------------------------------------
// Small IO helpers through Root

fn write_guest(root: &Root, guest: &str, content: &str) -> Result<()> {
    let host = root.resolve(guest)?.host;
    if let Some(d) = host.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", root.display(guest)))?;
    }
    let tmp = host.with_extension("cloudprep-tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", root.display(guest)))?;
    std::fs::rename(&tmp, &host).with_context(|| format!("writing {}", root.display(guest)))?;
    Ok(())
}

/// Remove a file or symlink (not following it); absent is fine. Returns whether something was removed.
fn remove_guest(root: &Root, guest: &str) -> Result<bool> {
    let host = root.resolve_parent(guest)?.host;
    match std::fs::remove_file(&host) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", root.display(guest))),
    }
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
    let host = root.resolve_parent(&link)?.host;
    if let Some(d) = host.parent() {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating {}", root.display(WANTS_DIR)))?;
    }
    let _ = std::fs::remove_file(&host);
    std::os::unix::fs::symlink(&target, &host)
        .with_context(|| format!("creating {}", root.display(&link)))?;
    Ok(())
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

/// Run a command in the guest: directly on the live system, through chroot(8) under `--root`; stopped
/// (with what it started) after `[fix] command_timeout` seconds.
pub fn run_in_guest(
    root: &Root,
    argv: &[&str],
    stdin: Option<&str>,
    timeout: std::time::Duration,
) -> Result<String> {
    let mut full: Vec<String> = Vec::new();
    if !root.is_live() {
        full.push("chroot".into());
        full.push(root.base().display().to_string());
    }
    full.extend(argv.iter().map(|a| a.to_string()));
    let shown = argv.join(" ");
    let o = crate::fix::exec::run_with_input(None, &full, stdin, timeout)?;
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

// ---------------------------------------------------------------------------------------------------
// arm / disarm

/// What `cloudprep arm` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct ArmOptions {
    /// Export the disk to this file or device during the pre-migration shutdown.
    pub export: Option<String>,
    pub format: Option<ImageFormat>,
}

pub fn arm(target: &Target, a: &ArmOptions) -> Result<i32> {
    let (root, config) = target.open()?;
    let state = ArmState {
        armed_at: now(),
        export_output: a.export.clone(),
        export_format: a
            .format
            .map(|f| f.to_possible_value().unwrap().get_name().to_string()),
    };
    // Refuse a configuration premigrate could not carry out, now rather than during the shutdown.
    let export = state.export_config(&config.export);
    let args = export_args(&export).context("checking the export settings")?;
    if a.format.is_some() && args.is_none() {
        bail!(
            "--format needs --export FILE|DEVICE (or [export] enabled = true in the configuration)"
        );
    }
    if let Some(ea) = &args {
        if root.is_live() {
            check_export_target(&ea.output)?;
        }
    }
    installed_unit(&root, PREMIGRATE_UNIT).ok_or_else(|| {
        anyhow!(
            "{PREMIGRATE_UNIT} is not installed under {}: install the cloudprep package first",
            root.display(UNIT_DIRS[0])
        )
    })?;
    write_guest(&root, PREMIGRATE_MARKER, &state.render()?)?;
    for t in SHUTDOWN_TARGETS {
        write_guest(&root, &dropin_path(t), TIMEOUT_DROPIN_TEXT)?;
    }
    // A file target lives on a mounted file system that the shutdown unmounts: order the unit after
    // that mount so the mount is still there while ExecStop= exports.
    let export_dropin = dropin_path(PREMIGRATE_UNIT);
    match args.as_ref().and_then(|ea| export_mount_dropin(&ea.output)) {
        Some(text) => write_guest(&root, &export_dropin, &text)?,
        None => {
            remove_guest(&root, &export_dropin)?;
        }
    }
    enable_unit(&root, PREMIGRATE_UNIT)?;
    let started = if systemd_running(&root) {
        systemctl(&["daemon-reload"])?;
        // Active now, so that its ExecStop= runs at the next power-off.
        systemctl(&["start", PREMIGRATE_UNIT])?;
        true
    } else {
        false
    };
    println!(
        "cloudprep: armed {PREMIGRATE_UNIT} ({})",
        root.display(PREMIGRATE_MARKER)
    );
    println!(
        "  at the next power-off: audit, fix --yes, audit again (reports in {STATE_DIR}), arm {FIRSTBOOT_UNIT},"
    );
    match &args {
        Some(ea) => println!(
            "  export the disk holding / to {} ({}, {}, root {}), then power off",
            ea.output, export.format, export.compress, export.consistency
        ),
        None => println!("  no export configured; then power off"),
    }
    if !started {
        println!("  (systemd is not running here: the unit becomes active at the next boot)");
    }
    println!("  a reboot does not trigger it; `cloudprep disarm` undoes this");
    Ok(EXIT_OK)
}

pub fn disarm(target: &Target) -> Result<i32> {
    let root = Root::new(&target.root)?;
    let was = disarm_premigrate(&root)?;
    if systemd_running(&root) {
        // Safe: the marker is gone and the system is not shutting down, so ExecStop= does nothing.
        // Disarmed is disarmed even if systemd cannot be told (e.g. from a package removal).
        for args in [&["daemon-reload"][..], &["stop", PREMIGRATE_UNIT][..]] {
            if let Err(e) = systemctl(args) {
                eprintln!("cloudprep: warning: {e:#}");
            }
        }
    }
    println!(
        "cloudprep: {PREMIGRATE_UNIT} {}",
        if was { "disarmed" } else { "was not armed" }
    );
    Ok(EXIT_OK)
}

/// Remove the marker, the timeout drop-ins and the enablement. Returns whether anything was armed.
pub fn disarm_premigrate(root: &Root) -> Result<bool> {
    let mut was = remove_guest(root, PREMIGRATE_MARKER)?;
    for t in SHUTDOWN_TARGETS.iter().chain([&PREMIGRATE_UNIT]) {
        let d = dropin_path(t);
        remove_guest(root, &d)?;
        // Drop the directory if it is now empty (we created it).
        if let Ok(r) = root.resolve(d.rsplit_once('/').unwrap().0) {
            let _ = std::fs::remove_dir(r.host);
        }
    }
    was |= disable_unit(root, PREMIGRATE_UNIT)?;
    Ok(was)
}

/// An export target must not live on the disk being exported (with a read-only root it could not even be
/// written).
fn check_export_target(output: &str) -> Result<()> {
    if output == "-" {
        bail!("the pre-migration export needs a file or a device, not standard output");
    }
    let p = Path::new(output);
    let source = boot_disks_live("/").unwrap_or_default();
    let meta = std::fs::metadata(p);
    match meta {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {
            let rdev = std::os::unix::fs::MetadataExt::rdev(&m);
            let id = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
            let disks = disks_of_dev(Path::new("/sys"), &id).unwrap_or_default();
            if disks.iter().any(|d| source.contains(d)) {
                bail!("export target {output} is on the disk being exported ({source:?})");
            }
        }
        _ => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dm = std::fs::metadata(dir)
                .with_context(|| format!("export target directory {}", dir.display()))?;
            let dev = std::os::unix::fs::MetadataExt::dev(&dm);
            let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
            let disks = disks_of_dev(Path::new("/sys"), &id).unwrap_or_default();
            if disks.iter().any(|d| source.contains(d)) {
                bail!(
                    "export target {output} is on the disk being exported ({}): use another disk",
                    source.join(", ")
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// premigrate

/// What kind of shutdown is queued, from `systemctl list-jobs --no-legend --plain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    PowerOff,
    Halt,
    Reboot,
    Unknown,
}

pub fn parse_shutdown_kind(list_jobs: &str) -> ShutdownKind {
    let mut kind = ShutdownKind::Unknown;
    for line in list_jobs.lines() {
        let mut w = line.split_whitespace();
        let (_id, unit) = (w.next(), w.next().unwrap_or(""));
        match unit {
            "poweroff.target" | "systemd-poweroff.service" => return ShutdownKind::PowerOff,
            "halt.target" | "systemd-halt.service" => kind = ShutdownKind::Halt,
            "reboot.target"
            | "kexec.target"
            | "systemd-reboot.service"
            | "systemd-kexec.service"
            | "soft-reboot.target"
                if kind == ShutdownKind::Unknown =>
            {
                kind = ShutdownKind::Reboot
            }
            _ => {}
        }
    }
    kind
}

/// Should the unit's ExecStop= act? `Ok(())` to go on, `Err(reason)` to do nothing.
pub fn premigrate_guard(armed: bool, system_state: &str, kind: ShutdownKind) -> Result<(), String> {
    if !armed {
        return Err(format!("not armed ({PREMIGRATE_MARKER} is absent)"));
    }
    if system_state != "stopping" {
        return Err(format!(
            "the system is not shutting down (state {system_state:?}): a manual stop or a package \
             removal does not migrate"
        ));
    }
    match kind {
        ShutdownKind::Reboot => {
            Err("this shutdown is a reboot: staying armed for the next power-off".into())
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PremigrateSummary {
    pub started_at: u64,
    pub root: String,
    pub audit_before_exit: i32,
    pub fix: String,
    pub audit_after_exit: i32,
    pub firstboot_armed: bool,
    /// `none`, `skipped: …`, or the planned target (the export result goes to the journal: the root is
    /// read-only by then).
    pub export: String,
}

/// `cloudprep premigrate`: the guarded entry of the unit's ExecStop= (or a manual run); `poweroff`: power
/// the machine off at the end.
pub fn premigrate_cmd(target: &Target, poweroff: bool) -> Result<i32> {
    let root = Root::new(&target.root)?;
    let from_unit = std::env::var_os(INVOKED_BY_ENV).is_some();
    if from_unit {
        let state =
            systemctl(&["is-system-running"]).unwrap_or_else(|e| format!("unknown ({e:#})"));
        let kind = systemctl(&["list-jobs", "--no-legend", "--plain"])
            .map(|t| parse_shutdown_kind(&t))
            .unwrap_or(ShutdownKind::Unknown);
        if let Err(why) = premigrate_guard(root.exists(PREMIGRATE_MARKER), &state, kind) {
            println!("cloudprep premigrate: nothing to do: {why}");
            return Ok(EXIT_OK);
        }
    }
    let code = premigrate(target, &root)?;
    if poweroff && root.is_live() {
        println!("cloudprep premigrate: powering off");
        systemctl(&["poweroff"])?;
    }
    Ok(code)
}

/// The sequence itself (guards are the caller's).
pub fn premigrate(target: &Target, root: &Root) -> Result<i32> {
    let config = Config::load(root, target.config.as_deref())?;
    let arm = match root.read_text(PREMIGRATE_MARKER)? {
        Some(t) => ArmState::parse(&t)
            .with_context(|| format!("parsing {}", root.display(PREMIGRATE_MARKER)))?,
        None => ArmState::default(),
    };
    let export_cfg = arm.export_config(&config.export);
    let mut summary = PremigrateSummary {
        started_at: now(),
        root: root.base().display().to_string(),
        ..Default::default()
    };
    println!("cloudprep premigrate: auditing {}", root.base().display());
    let before = audit::run(root, &config, &Selection::default());
    summary.audit_before_exit = before.exit_code();
    write_guest(
        root,
        PREMIGRATE_AUDIT,
        &(serde_json::to_string_pretty(&crate::report::to_json(&before))? + "\n"),
    )?;
    drop(before);

    println!("cloudprep premigrate: fix --yes");
    let fix = crate::fix::run(
        target,
        &FixOptions {
            dry_run: false,
            yes: true,
            format: Format::Text,
            select: Default::default(),
        },
    );
    summary.fix = match &fix {
        Ok(c) => format!("exit {c}"),
        Err(e) => format!("failed: {e:#}"),
    };
    if let Err(e) = &fix {
        eprintln!("cloudprep premigrate: fix failed: {e:#}");
    }

    let after = audit::run(root, &config, &Selection::default());
    let code = after.exit_code();
    summary.audit_after_exit = code;
    write_guest(
        root,
        PREMIGRATE_REPORT,
        &(serde_json::to_string_pretty(&crate::report::to_json(&after))? + "\n"),
    )?;
    println!(
        "cloudprep premigrate: audit after fix: exit {code} (report {})",
        root.display(PREMIGRATE_REPORT)
    );
    let ready = code < 2;
    if ready {
        let uuid = if root.is_live() {
            product_uuid(Path::new(DMI_PRODUCT_UUID))
        } else {
            None
        };
        write_guest(
            root,
            FIRSTBOOT_MARKER,
            &firstboot_marker(summary.started_at, uuid.as_deref()),
        )?;
        match enable_unit(root, FIRSTBOOT_UNIT) {
            Ok(()) => summary.firstboot_armed = true,
            Err(e) => eprintln!("cloudprep premigrate: cannot arm the first boot: {e:#}"),
        }
    }
    // The exported image must not migrate again at its first shutdown in the cloud.
    disarm_premigrate(root)?;

    let export = export_args(&export_cfg);
    let plan = match (&export, ready, root.is_live()) {
        (Ok(None), _, _) => {
            summary.export = "none".into();
            None
        }
        (Err(e), _, _) => {
            summary.export = format!("skipped: {e:#}");
            None
        }
        (Ok(Some(_)), false, _) => {
            summary.export = "skipped: blockers remain after the fix (see the report)".into();
            None
        }
        (Ok(Some(_)), true, false) => {
            summary.export =
                "skipped: an offline --root has no running disk to export (use cloudprep export)"
                    .into();
            None
        }
        (Ok(Some(ea)), true, true) => {
            summary.export = format!("to {} ({:?})", ea.output, ea.format);
            Some(ea.clone())
        }
    };
    write_guest(
        root,
        PREMIGRATE_SUMMARY,
        &(serde_json::to_string_pretty(&summary)? + "\n"),
    )?;
    println!("cloudprep premigrate: export {}", summary.export);
    let mut rc = if fix.is_err() { EXIT_FAILURE } else { code };
    if let Some(ea) = plan {
        // journald keeps /var/log/journal open for writing, which blocks a read-only remount of /.
        let _ = Command::new("journalctl")
            .arg("--relinquish-var")
            .stdin(Stdio::null())
            .status();
        nix::unistd::sync();
        match crate::export::run(&target.root, &ea) {
            Ok(c) => {
                println!("cloudprep premigrate: export finished (exit {c})");
                rc = rc.max(c);
            }
            Err(e) => {
                eprintln!("cloudprep premigrate: export failed: {e:#}");
                rc = EXIT_FAILURE;
            }
        }
    }
    Ok(rc)
}

// ---------------------------------------------------------------------------------------------------
// firstboot

/// Whole disks under a block device `MAJ:MIN`, following partitions to their disk and device-mapper / md
/// devices to their slaves (LVM, RAID 1: GRUB goes on every disk). `sys` is normally `/sys`.
pub fn disks_of_dev(sys: &Path, majmin: &str) -> Result<Vec<String>> {
    let p = sys.join("dev/block").join(majmin);
    let real = std::fs::canonicalize(&p).with_context(|| format!("resolving {}", p.display()))?;
    let mut out = Vec::new();
    disks_of_path(sys, &real, &mut out, 0)?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn disks_of_path(sys: &Path, dev: &Path, out: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 8 {
        bail!("block device stack too deep at {}", dev.display());
    }
    if dev.join("partition").exists() {
        let disk = dev
            .parent()
            .and_then(|d| d.file_name())
            .ok_or_else(|| anyhow!("no parent disk for {}", dev.display()))?;
        out.push(disk.to_string_lossy().into_owned());
        return Ok(());
    }
    let slaves = dev.join("slaves");
    let mut names: Vec<String> = std::fs::read_dir(&slaves)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        let name = dev
            .file_name()
            .ok_or_else(|| anyhow!("bad device path {}", dev.display()))?;
        out.push(name.to_string_lossy().into_owned());
        return Ok(());
    }
    for n in names {
        let s = std::fs::canonicalize(sys.join("class/block").join(&n))
            .with_context(|| format!("resolving slave {n}"))?;
        disks_of_path(sys, &s, out, depth + 1)?;
    }
    Ok(())
}

/// The disk(s) holding `/boot` (or `/` when /boot is not a separate mount) on the running system.
pub fn boot_disks_live(root_prefix: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = crate::guest::facts::parse_mountinfo(&text);
    let find = |t: &str| mounts.iter().rev().find(|m| m.target == t).cloned();
    let boot = if root_prefix == "/" {
        find("/boot").or_else(|| find("/"))
    } else {
        None
    }
    .ok_or_else(|| anyhow!("no mount for /boot or / in /proc/self/mountinfo"))?;
    if boot.dev.starts_with("0:") {
        bail!(
            "{} ({}) has no backing block device ({})",
            boot.target,
            boot.fstype,
            boot.dev
        );
    }
    let d = disks_of_dev(Path::new("/sys"), &boot.dev)?;
    if d.is_empty() {
        bail!("no disk found under {}", boot.dev);
    }
    Ok(d)
}

/// The debconf answer that makes later grub-pc upgrades install to the new disks.
pub fn debconf_install_devices(devices: &[String]) -> String {
    format!(
        "grub-pc grub-pc/install_devices multiselect {}\n",
        devices.join(", ")
    )
}

#[derive(Debug, Serialize)]
struct FirstbootSteps {
    grub: String,
    hypervisor_tools: String,
}

/// The machine's DMI system UUID (the hypervisor's VM id; the instance id in OpenStack), when it means
/// something: absent, unreadable, all-zero and all-F values (hypervisors that set none) give None.
pub fn product_uuid(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let u = t.trim().to_ascii_lowercase();
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
        || hex.chars().all(|c| c == '0')
        || hex.chars().all(|c| c == 'f')
    {
        return None;
    }
    Some(u)
}

pub const DMI_PRODUCT_UUID: &str = "/sys/class/dmi/id/product_uuid";

/// The first-boot marker: when written on a live machine it names that machine (its DMI UUID), so the
/// first-boot unit does nothing if the prepared source VM is powered on again on its old hypervisor.
pub fn firstboot_marker(at: u64, source_uuid: Option<&str>) -> String {
    let mut m = format!(
        "# Written by `cloudprep premigrate` at {at}: cloudprep-firstboot.service runs once on the first \
         boot in the cloud.\n"
    );
    if let Some(u) = source_uuid {
        m.push_str(&format!(
            "# The machine prepared (DMI product UUID): the first boot does nothing while it is this one.\n\
             source_product_uuid = \"{u}\"\n"
        ));
    }
    m
}

/// The source machine's UUID recorded in a first-boot marker (None for markers without one).
pub fn marker_source_uuid(marker: &str) -> Option<String> {
    marker.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "source_product_uuid")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    })
}

pub fn firstboot(target: &Target) -> Result<i32> {
    let root = Root::new(&target.root)?;
    let Some(marker) = root.read_text(FIRSTBOOT_MARKER)? else {
        println!("cloudprep firstboot: nothing to do ({FIRSTBOOT_MARKER} is absent)");
        return Ok(EXIT_OK);
    };
    if root.is_live() {
        if let (Some(src), Some(now)) = (
            marker_source_uuid(&marker),
            product_uuid(Path::new(DMI_PRODUCT_UUID)),
        ) {
            if src == now {
                println!(
                    "cloudprep firstboot: this is still the machine prepared for the migration (DMI \
                     product UUID {now}), not its copy in the cloud: nothing done, stays armed"
                );
                return Ok(EXIT_OK);
            }
        }
    }
    let config = Config::load(&root, target.config.as_deref())?;
    let facts = crate::guest::facts::Facts::gather(&root);
    let mut failed = false;

    let limit = config.fix.command_limit();
    // 1. GRUB into the MBR of the new boot disk, and debconf told so.
    let grub: String = if !facts.installed("grub-pc") {
        "skipped: grub-pc is not installed".into()
    } else if !root.is_live() {
        "skipped: the boot disk of an offline root is unknown".into()
    } else {
        match boot_disks_live("/") {
            Err(e) => {
                failed = true;
                format!("failed: {e:#}")
            }
            Ok(disks) => {
                let devs: Vec<String> = disks.iter().map(|d| format!("/dev/{d}")).collect();
                let mut res = Ok(());
                for d in &devs {
                    println!("cloudprep firstboot: grub-install {d}");
                    if let Err(e) = run_in_guest(&root, &["grub-install", d], None, limit) {
                        res = Err(e);
                        break;
                    }
                }
                let res = res.and_then(|_| {
                    run_in_guest(
                        &root,
                        &["debconf-set-selections"],
                        Some(&debconf_install_devices(&devs)),
                        limit,
                    )
                    .map(|_| ())
                });
                match res {
                    Ok(()) => format!("installed on {}", devs.join(", ")),
                    Err(e) => {
                        failed = true;
                        format!("failed: {e:#}")
                    }
                }
            }
        }
    };
    println!("cloudprep firstboot: grub: {grub}");

    // 2. The old hypervisor's tools.
    let tools: Vec<&str> = HYPERVISOR_TOOLS
        .iter()
        .copied()
        .filter(|p| facts.installed(p))
        .collect();
    let hypervisor_tools: String = if !config.fix.remove_hypervisor_tools {
        "kept (fix.remove_hypervisor_tools = false)".into()
    } else if tools.is_empty() {
        "none installed".into()
    } else {
        let mut argv = vec!["apt-get", "purge", "-y", "-q"];
        argv.extend(&tools);
        match run_in_guest(&root, &argv, None, limit) {
            Ok(_) => format!("purged {}", tools.join(" ")),
            Err(e) => {
                failed = true;
                format!("failed: {e:#}")
            }
        }
    };
    println!("cloudprep firstboot: hypervisor tools: {hypervisor_tools}");
    let steps = FirstbootSteps {
        grub,
        hypervisor_tools,
    };
    drop(facts);

    // 3. The audit, now on the cloud's hardware.
    let audit = audit::run(&root, &config, &Selection::default());
    let code = audit.exit_code();
    // The report stays exactly the schema'd audit report; the steps go beside it.
    let report = crate::report::to_json(&audit);
    write_guest(
        &root,
        FIRSTBOOT_REPORT,
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    write_guest(
        &root,
        "/var/lib/cloudprep/firstboot-steps.json",
        &(serde_json::to_string_pretty(&steps)? + "\n"),
    )?;
    println!(
        "cloudprep firstboot: audit exit {code}, report {}",
        root.display(FIRSTBOOT_REPORT)
    );

    // 4. Once only.
    remove_guest(&root, FIRSTBOOT_MARKER)?;
    disable_unit(&root, FIRSTBOOT_UNIT)?;
    Ok(if failed { EXIT_FAILURE } else { code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_state_round_trip_and_overlay() {
        let s = ArmState {
            armed_at: 5,
            export_output: Some("/mnt/big/vm.qcow2".into()),
            export_format: Some("qcow2".into()),
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
        e.format = "vmdk".into();
        assert!(format!("{:#}", export_args(&e).unwrap_err()).contains("vmdk"));
        e.format = "raw".into();
        e.compress = "zstd".into();
        assert!(format!("{:#}", export_args(&e).unwrap_err()).contains("qcow2"));
        e.format = "QCOW2".into();
        e.consistency = "freeze".into();
        let a = export_args(&e).unwrap().unwrap();
        assert_eq!(a.compress, Compression::Zstd);
        assert_eq!(a.consistency, Some(Consistency::Freeze));
        e.consistency = "snapshot".into();
        assert!(export_args(&e).is_err());
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
