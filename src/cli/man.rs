//! The cloudprep(8) man page, generated from the clap definition (`cloudprep man`, used by the package
//! build).

use super::EXIT_OK;
use anyhow::{Context, Result};

/// The cloudprep(8) man page (roff), generated from the clap definition.
pub fn man_page() -> Result<String> {
    let cmd = super::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    let mut out = String::new();
    // Each render call starts with the same quote-string preamble: keep only the first one.
    let mut title = Vec::new();
    man.render_title(&mut title)?;
    out.push_str(&String::from_utf8_lossy(&title));
    let mut part =
        |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>, drop_heading: bool| -> Result<()> {
            let mut b = Vec::new();
            f(&mut b)?;
            out.push_str(&strip_lines(&String::from_utf8_lossy(&b), drop_heading));
            Ok(())
        };
    part(&|b| man.render_name_section(b), false)?;
    part(&|b| man.render_synopsis_section(b), false)?;
    part(&|b| man.render_description_section(b), false)?;
    part(&|b| man.render_options_section(b), false)?;
    part(
        &|b| {
            b.extend_from_slice(b".SH COMMANDS\n");
            Ok(())
        },
        false,
    )?;
    // Nested commands (`report merge`, `report diff`) get a section of their own after their parent's.
    let mut subs: Vec<(String, &clap::Command)> = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cloudprep {}", sub.get_name());
        for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            subs.push((format!("{name} {}", nested.get_name()), nested));
        }
        subs.insert(
            subs.len() - sub.get_subcommands().filter(|s| !s.is_hide_set()).count(),
            (name, sub),
        );
    }
    let paragraph = |b: &mut Vec<u8>| {
        b.extend_from_slice(b".PP\n");
        Ok(())
    };
    for (name, sub) in subs {
        let sub = sub.clone().bin_name(&name);
        let m = clap_mangen::Man::new(sub.clone()).section("8");
        part(
            &|b| {
                b.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
                Ok(())
            },
            false,
        )?;
        part(&|b| m.render_synopsis_section(b), true)?;
        if sub.get_about().is_some() || sub.get_long_about().is_some() {
            part(&paragraph, false)?;
            part(&|b| m.render_description_section(b), true)?;
        }
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            part(&|b| m.render_options_section(b), true)?;
        }
        // The command's own exit status and notes (e.g. `report merge`'s exit 1 for a skipped input).
        if sub.get_after_help().is_some() {
            part(&paragraph, false)?;
            part(&|b| m.render_extra_section(b), true)?;
        }
    }
    part(
        &|b| {
            b.extend_from_slice(MAN_EXTRA.as_bytes());
            Ok(())
        },
        false,
    )?;
    part(&|b| man.render_version_section(b), false)?;
    Ok(out)
}

/// Drop the `.ie/.el .ds Aq` preamble every render repeats and, when asked, the first `.SH` line of a
/// rendered section (its content goes under a `.SS` of ours).
fn strip_lines(roff: &str, drop_heading: bool) -> String {
    let mut out = String::new();
    let mut dropped = !drop_heading;
    for line in roff.split_inclusive('\n') {
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            continue;
        }
        if !dropped && line.starts_with(".SH") {
            dropped = true;
            continue;
        }
        out.push_str(line);
    }
    out
}

const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
0
Ready for the cloud.
.TP
1
Warnings only.
.TP
2
At least one blocker.
.TP
3
cloudprep itself could not run.
.SH "PRE-MIGRATION AND FIRST BOOT"
The package never enables or starts its units.
\fBcloudprep arm\fR writes /var/lib/cloudprep/premigrate-armed, lifts the 30 minute job timeout of
poweroff.target and halt.target, enables and starts \fBcloudprep-premigrate.service\fR.
At the next power-off (not a reboot) the unit's stop action audits, runs \fBfix --yes\fR, audits again
(reports in /var/lib/cloudprep), arms \fBcloudprep-firstboot.service\fR, disarms itself and, when an
export is configured and no blocker is left, exports the disk holding / with the root read-only or
frozen; the power-off then completes.
A manual \fBsystemctl stop\fR, \fBcloudprep disarm\fR or removing the package does not trigger it.
On the first boot under KVM, \fBcloudprep-firstboot.service\fR reinstalls GRUB on the disk holding
/boot, sets the debconf question grub-pc/install_devices, optionally purges the old hypervisor's tools
(fix.remove_hypervisor_tools), writes /var/lib/cloudprep/firstboot-report.json and disarms itself.
.SH FILES
.TP
/etc/cloudprep/cloudprep.toml
Configuration; every key is optional and documented in the shipped file.
.TP
/var/lib/cloudprep/
Fix run journals and backups, reports of the pre-migration and first-boot units, arm markers.
.TP
/usr/share/cloudprep/report.schema.json
JSON schema of \fBaudit \-\-format json\fR reports.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBgrub-install\fR(8), \fBcloud-init\fR(1)
"#;

pub fn cmd_man() -> Result<i32> {
    use std::io::Write;
    let page = man_page()?;
    let mut so = std::io::stdout().lock();
    match so.write_all(page.as_bytes()).and_then(|_| so.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.context("writing to standard output")?,
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_every_command_and_option() {
        let page = man_page().unwrap();
        assert!(page.contains("\n.TH cloudprep 8 "), "{}", &page[..120]);
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble");
        for sub in super::super::command().get_subcommands() {
            let name = format!(".SS \"cloudprep {}\"", sub.get_name());
            assert_eq!(page.contains(&name), !sub.is_hide_set(), "{name}");
        }
        let merge = page
            .find(".SS \"cloudprep report merge\"")
            .expect("nested commands");
        assert!(page.find(".SS \"cloudprep report\"").unwrap() < merge);
        assert!(page.contains(".SS \"cloudprep report diff\""));
        assert!(
            page[merge..].contains("at least one input skipped"),
            "report merge's exit status"
        );
        for opt in [
            "\\-\\-root",
            "\\-\\-dry\\-run",
            "\\-\\-consistency",
            "\\-\\-export",
        ] {
            assert!(page.contains(opt), "{opt} missing");
        }
        assert!(page.contains(".SH \"EXIT STATUS\""));
        // Deterministic: the package build and the sync test compare bytes.
        assert_eq!(page, man_page().unwrap());
    }
}
