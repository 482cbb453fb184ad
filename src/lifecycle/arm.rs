//! `cloudprep arm` / `disarm`: the marker, the shutdown drop-ins and the unit's enablement.

use super::*;

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
        export_output: a.export.as_deref().map(absolute_export).transpose()?,
        export_format: a.format,
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
            check_export_target(&ea.output, ea.format)?;
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
        remove_empty_dir(root, d.rsplit_once('/').unwrap().0)?;
    }
    was |= disable_unit(root, PREMIGRATE_UNIT)?;
    Ok(was)
}

/// The unit runs with `/` as its working directory: a relative `--export` is made absolute now, against
/// the directory `arm` runs in.
fn absolute_export(output: &str) -> Result<String> {
    if output.trim().is_empty() {
        bail!("--export needs a file or a device");
    }
    let p = Path::new(output);
    if p.is_absolute() || output == "-" {
        return Ok(output.to_string());
    }
    let cwd = std::env::current_dir().context("finding the current directory for --export")?;
    cwd.join(p)
        .to_str()
        .map(str::to_string)
        .context("--export: the absolute path is not UTF-8")
}

/// The export target must be usable by the export at power-off: not standard output, not on the disk
/// being exported, not a mounted or too small device (the export's own checks, see
/// [`crate::export::output::check`]).
fn check_export_target(output: &str, format: ImageFormat) -> Result<()> {
    if output == "-" {
        bail!("the pre-migration export needs a file or a device, not standard output");
    }
    // The source disk is found again at the power-off; when it cannot be found now (a chroot, a container),
    // the target is checked there, and arm says so instead of refusing.
    let src = match crate::export::source::open("auto", Path::new("/")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "cloudprep: warning: the export target {output} cannot be checked now (finding the disk the \
                 pre-migration export will read: {e:#}); the export checks it at the power-off"
            );
            return Ok(());
        }
    };
    crate::export::output::check(Path::new(output), &src, format)
        .with_context(|| format!("export target {output}"))
}
