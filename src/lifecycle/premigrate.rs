//! `cloudprep premigrate`: what the unit's ExecStop= runs at power-off (guarded), and the sequence itself.

use super::*;
use std::path::PathBuf;

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
    /// `none`, `skipped: …`, or the target.
    pub export: String,
    /// The export's summary (with the SHA-256 of the image as written), once it finished. The summary is
    /// written before the export (the root is read-only or frozen during it) and again after it: the
    /// image itself holds the first version, the source disk the second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_result: Option<crate::export::ExportSummary>,
}

/// A file beside the exported image (a host path, on the export target): temp, fsync, rename, fsync dir.
fn write_sidecar(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = PathBuf::from(format!("{}.cloudprep-tmp", path.display()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fix::atomic::fsync_dir(d)?;
    }
    Ok(())
}

/// After a finished export: `IMAGE.sha256` beside the image (`sha256sum -c` reads it), and the summary
/// again with the export's result. Failures are reported, not fatal: the image is complete.
fn record_export(root: &Root, summary: &mut PremigrateSummary, s: &crate::export::ExportSummary) {
    let on_device = std::fs::metadata(&s.output)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if on_device {
        // No file beside a device: it would land in /dev (RAM). The summary keeps the digest.
        println!(
            "cloudprep premigrate: {} is a device: its digest is in {}",
            s.output, PREMIGRATE_SUMMARY
        );
    } else if !s.sha256.is_empty() {
        let path = Path::new(&s.output);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let side = PathBuf::from(format!("{}.sha256", s.output));
        let r = name
            .context("the output has no file name")
            .and_then(|n| write_sidecar(&side, &format!("{}  {n}\n", s.sha256)));
        match r {
            Ok(()) => println!("cloudprep premigrate: digest written to {}", side.display()),
            Err(e) => eprintln!(
                "cloudprep premigrate: cannot write {}: {e:#}",
                side.display()
            ),
        }
    }
    summary.export_result = Some(s.clone());
    let text = serde_json::to_string_pretty(&*summary).map(|t| t + "\n");
    if let Err(e) = text
        .map_err(anyhow::Error::from)
        .and_then(|t| write_guest(root, PREMIGRATE_SUMMARY, &t))
    {
        eprintln!(
            "cloudprep premigrate: cannot record the export in {}: {e:#}",
            root.display(PREMIGRATE_SUMMARY)
        );
    }
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
        match crate::export::export_file(&target.root, &ea) {
            Ok(s) => {
                print!("{}", s.render());
                println!("cloudprep premigrate: export finished (exit {EXIT_OK})");
                record_export(root, &mut summary, &s);
            }
            Err(e) => {
                eprintln!("cloudprep premigrate: export failed: {e:#}");
                rc = EXIT_FAILURE;
            }
        }
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_export_is_recorded_beside_the_image_and_in_the_summary() {
        let d = tempfile::tempdir().unwrap();
        let guest = d.path().join("guest");
        std::fs::create_dir_all(guest.join("var/lib/cloudprep")).unwrap();
        let root = Root::new(&guest).unwrap();
        let img = d.path().join("out/vm.qcow2");
        std::fs::create_dir_all(img.parent().unwrap()).unwrap();
        let s = crate::export::ExportSummary {
            output: img.display().to_string(),
            digest: "output",
            sha256: "0f".repeat(32),
            ..Default::default()
        };
        let mut summary = PremigrateSummary {
            export: format!("to {} (Qcow2)", img.display()),
            ..Default::default()
        };
        record_export(&root, &mut summary, &s);
        assert_eq!(
            std::fs::read_to_string(d.path().join("out/vm.qcow2.sha256")).unwrap(),
            format!("{}  vm.qcow2\n", "0f".repeat(32)),
            "sha256sum -c format"
        );
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(guest.join("var/lib/cloudprep/premigrate-summary.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(j["export_result"]["digest"], "output");
        assert_eq!(j["export_result"]["sha256"], "0f".repeat(32));
        assert_eq!(j["export"], summary.export);
    }
}
