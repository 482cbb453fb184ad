//! Validators run on a file right after it is rewritten: the distro's own tools where they exist. A failing
//! validator undoes that file's change.

use super::exec::{self, Chroot};
use crate::checks::Validator;
use crate::guest::root::Root;
use anyhow::{Context, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (with a note on what checked it).
    Pass(String),
    Fail(String),
}

pub fn name(v: Validator) -> &'static str {
    match v {
        Validator::Fstab => "fstab",
        Validator::ShellVars => "shell-vars",
        Validator::Ifupdown => "ifupdown",
        Validator::Netplan => "netplan",
        Validator::CloudInit => "cloud-init",
        Validator::None => "none",
    }
}

fn host_tool(name: &str) -> Option<String> {
    exec::PATH
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).is_file())
}

/// How long a host parser (findmnt, grub-script-check, sh -n) may take over one file.
const HOST_TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Run a host tool that only parses a file: the executor's fixed environment (no inherited variables) and
/// a time limit. A tool stopped at the limit has no exit status (a failure).
fn host_run(argv: &[&str]) -> Result<(Option<i32>, String)> {
    host_run_within(argv, HOST_TOOL_TIMEOUT)
}

fn host_run_within(argv: &[&str], limit: std::time::Duration) -> Result<(Option<i32>, String)> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let o = exec::run_with_input(None, &argv, None, limit)?;
    let code = if o.timed_out.is_some() {
        None
    } else {
        o.status
    };
    Ok((code, o.output))
}

/// Validate the file now at `guest` (host path `host`). Only the file's syntax is judged: facts of the
/// host the validator happens to run on (devices that do not exist here) are not failures.
pub fn validate(
    v: Validator,
    root: &Root,
    chroot: Option<&Chroot>,
    guest: &str,
    host: &Path,
) -> Result<Verdict> {
    let hs = host.to_string_lossy().into_owned();
    // Guest programs run chrooted (or directly on the live system); never on the host in their place.
    let can_exec = chroot.is_some() || root.is_live();
    let no_exec = || Verdict::Pass("not checked: programs cannot run in this guest root".into());
    match v {
        Validator::None => Ok(Verdict::Pass("no validator".into())),
        Validator::Fstab => {
            let text = std::fs::read_to_string(host).unwrap_or_default();
            if let Some(bad) = fstab_syntax(&text) {
                return Ok(Verdict::Fail(bad));
            }
            match host_tool("findmnt") {
                Some(f) => {
                    let (code, out) = host_run(&[&f, "--verify", "--tab-file", &hs])?;
                    Ok(match code {
                        Some(_) => findmnt_verdict(&out),
                        None => Verdict::Fail(format!("findmnt --verify: {}", out.trim())),
                    })
                }
                None => Ok(Verdict::Pass(
                    "fields checked (findmnt not available)".into(),
                )),
            }
        }
        Validator::ShellVars => {
            let grubby = guest.ends_with(".cfg");
            if grubby {
                if let Some(t) = host_tool("grub-script-check") {
                    let (code, out) = host_run(&[&t, &hs])?;
                    return Ok(if code == Some(0) {
                        Verdict::Pass("grub-script-check".into())
                    } else {
                        Verdict::Fail(format!("grub-script-check: {}", out.trim()))
                    });
                }
            }
            let (code, out) = host_run(&["/bin/sh", "-n", &hs])?;
            Ok(if code == Some(0) {
                Verdict::Pass("sh -n".into())
            } else {
                Verdict::Fail(format!("sh -n: {}", out.trim()))
            })
        }
        Validator::Ifupdown => {
            if !can_exec {
                return Ok(no_exec());
            }
            if exec::find_in_guest(root, "ifquery").is_none() {
                return Ok(Verdict::Pass("ifquery not installed in the guest".into()));
            }
            let argv: Vec<String> = ["ifquery", "--interfaces", guest, "--list", "--all"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let o = exec::run(chroot, &argv)?;
            Ok(ifquery_verdict(&o))
        }
        Validator::Netplan => {
            if !can_exec {
                return Ok(no_exec());
            }
            if exec::find_in_guest(root, "netplan").is_none() {
                return Ok(Verdict::Pass("netplan not installed in the guest".into()));
            }
            netplan(root, chroot, guest)
        }
        Validator::CloudInit => {
            let text = std::fs::read_to_string(host).unwrap_or_default();
            if let Err(e) = yaml_mapping(&text) {
                return Ok(Verdict::Fail(e));
            }
            if !can_exec || exec::find_in_guest(root, "cloud-init").is_none() {
                return Ok(Verdict::Pass("YAML".into()));
            }
            for sub in [&["schema"][..], &["devel", "schema"][..]] {
                let mut argv: Vec<String> = vec!["cloud-init".into()];
                argv.extend(sub.iter().map(|s| s.to_string()));
                argv.extend(["--config-file".to_string(), guest.to_string()]);
                let o = exec::run(chroot, &argv)?;
                if o.ok() {
                    return Ok(Verdict::Pass(format!(
                        "YAML, {}",
                        argv[..argv.len() - 2].join(" ")
                    )));
                }
                if o.output.contains("Invalid cloud-config") || o.output.contains("Invalid schema")
                {
                    return Ok(Verdict::Fail(format!(
                        "cloud-init schema: {}",
                        o.output.trim()
                    )));
                }
            }
            // The guest's cloud-init cannot validate (too old, or broken in the chroot): YAML only.
            Ok(Verdict::Pass("YAML (cloud-init schema unavailable)".into()))
        }
    }
}

/// Field count check of an fstab: every entry needs 2 to 6 fields.
pub fn fstab_syntax(text: &str) -> Option<String> {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let n = l.split_whitespace().count();
        if !(2..=6).contains(&n) {
            return Some(format!(
                "line {}: {} fields (an fstab entry has 2 to 6): {}",
                i + 1,
                n,
                l
            ));
        }
    }
    None
}

/// `findmnt --verify` judges the host too (missing devices, unknown filesystems, mount points): only
/// parse errors are the file's fault.
pub fn findmnt_verdict(out: &str) -> Verdict {
    let bad: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("parse error at"))
        .map(str::trim)
        .collect();
    let summary_errors = out.lines().find_map(|l| {
        let l = l.trim();
        let n = l.strip_suffix("parse errors").or_else(|| {
            l.split_once(" parse errors,")
                .or_else(|| l.split_once(" parse error,"))
                .map(|(a, _)| a)
        })?;
        n.trim().parse::<u32>().ok()
    });
    if !bad.is_empty() || summary_errors.unwrap_or(0) > 0 {
        Verdict::Fail(format!("findmnt --verify: {}", bad.join("; ")))
    } else {
        Verdict::Pass("findmnt --verify (no parse errors)".into())
    }
}

fn ifquery_verdict(o: &exec::Outcome) -> Verdict {
    if o.ok() {
        Verdict::Pass("ifquery --list".into())
    } else {
        Verdict::Fail(format!("ifquery ({}): {}", o.describe(), o.output.trim()))
    }
}

fn netplan(root: &Root, chroot: Option<&Chroot>, guest: &str) -> Result<Verdict> {
    // A scratch root holding the guest's netplan files (with the new one), so `generate` writes nothing
    // that matters.
    let scratch = format!("/var/lib/cloudprep/validate-{}", std::process::id());
    let sdir = root.resolve(&scratch)?.host;
    let _ = std::fs::remove_dir_all(&sdir);
    let etc = sdir.join("etc/netplan");
    std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _c = Cleanup(sdir.clone());
    for f in root.files_in("/etc/netplan", |n| n.ends_with(".yaml"))? {
        if let Some(b) = root.read(&f)? {
            let name = f.rsplit('/').next().unwrap_or("x.yaml");
            std::fs::write(etc.join(name), b)?;
        }
    }
    if !guest.starts_with("/etc/netplan/") {
        if let Some(b) = root.read(guest)? {
            std::fs::write(etc.join("99-candidate.yaml"), b)?;
        }
    }
    let argv: Vec<String> = vec![
        "netplan".into(),
        "generate".into(),
        "--root-dir".into(),
        scratch.clone(),
    ];
    let o = exec::run(chroot, &argv)?;
    Ok(if o.ok() {
        Verdict::Pass("netplan generate".into())
    } else {
        Verdict::Fail(format!("netplan generate: {}", o.output.trim()))
    })
}

/// The text is YAML whose top level is a mapping (or empty), as cloud-init's config files must be.
pub fn yaml_mapping(text: &str) -> std::result::Result<(), String> {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Mapping(_)) | Ok(serde_yaml::Value::Null) => Ok(()),
        Ok(_) => Err("YAML: the top level is not a mapping".into()),
        Err(e) => Err(format!("YAML: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findmnt_output_only_parse_errors_fail() {
        let host_only = "/\n   [E] unreachable on boot required source: UUID=1234\n/data\n   [W] unreachable source: /dev/sdb1: No such file or directory\n\n0 parse errors, 2 errors, 2 warnings\n";
        assert!(matches!(findmnt_verdict(host_only), Verdict::Pass(_)));
        let parse = "findmnt: /tmp/f: parse error at line 2 -- ignored\n\n1 parse errors, 1 error, 0 warnings\n";
        assert!(matches!(findmnt_verdict(parse), Verdict::Fail(m) if m.contains("line 2")));
        assert!(matches!(
            findmnt_verdict("\n2 parse errors, 0 errors, 0 warnings\n"),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn host_tools_get_a_clean_environment_and_a_time_limit() {
        std::env::set_var("CLOUDPREP_TEST_LEAK", "leaked-value");
        let (code, out) = host_run(&["env"]).unwrap();
        std::env::remove_var("CLOUDPREP_TEST_LEAK");
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("leaked-value"), "{out}");
        assert!(out.contains(&format!("PATH={}\n", exec::PATH)), "{out}");
        assert!(out.contains("LC_ALL=C\n"), "{out}");
        let t0 = std::time::Instant::now();
        let (code, out) =
            host_run_within(&["sleep", "120"], std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(code, None, "{out}");
        assert!(out.contains("stopped after 1 s"), "{out}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn fstab_field_counts() {
        assert_eq!(
            fstab_syntax("# c\n\nUUID=x / ext4 defaults 0 1\r\nproc /proc proc defaults\n"),
            None
        );
        assert!(fstab_syntax("UUID=x\n").unwrap().contains("line 1"));
        assert!(fstab_syntax("a b c d e f g\n").is_some());
    }

    #[test]
    fn yaml_must_be_a_mapping() {
        assert!(yaml_mapping("#cloud-config\ndatasource_list: [ Ec2, None ]\n").is_ok());
        assert!(yaml_mapping("").is_ok());
        assert!(yaml_mapping("- a\n- b\n").is_err());
        assert!(yaml_mapping("a: [b\n").is_err());
        assert!(yaml_mapping("a: 1\n\ta: 2\n").is_err());
    }
}
