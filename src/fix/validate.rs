//! Validators run on a file right after it is rewritten: the distro's own tools where they exist. A failing
//! validator undoes that file's change.

use super::atomic::{self, Dir};
use super::exec::{self, Chroot};
use crate::checks::Validator;
use crate::guest::root::Root;
use anyhow::{Context, Result};
use std::io::Write;
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
            let text = root.read_text(guest)?.unwrap_or_default();
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
            let text = root.read_text(guest)?.unwrap_or_default();
            if let Err(e) = yaml_mapping(&text) {
                return Ok(Verdict::Fail(e));
            }
            if !can_exec || exec::find_in_guest(root, "cloud-init").is_none() {
                return Ok(Verdict::Pass("YAML".into()));
            }
            // A cloud.cfg.d snippet has no `#cloud-config` header, which newer cloud-init (25.1, Debian 13)
            // requires of a --config-file: validate a scratch copy that has one.
            let scratch = Scratch::new(root, "validate-")?;
            let body = if text.starts_with("#cloud-config") {
                text.clone()
            } else {
                format!("#cloud-config\n{text}")
            };
            put(&scratch.dir, "candidate.cfg", body.as_bytes())?;
            let candidate = format!("{}/candidate.cfg", scratch.guest);
            for sub in [&["schema"][..], &["devel", "schema"][..]] {
                let mut argv: Vec<String> = vec!["cloud-init".into()];
                argv.extend(sub.iter().map(|s| s.to_string()));
                argv.extend(["--config-file".to_string(), candidate.clone()]);
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

/// A private scratch directory under the guest's /var/lib/cloudprep (mkdtemp through the openat layer),
/// removed through directory descriptors when dropped: a planted `validate-*` symlink is never followed,
/// and a mount point inside is never entered.
pub(crate) struct Scratch {
    parent: Dir,
    name: String,
    pub dir: Dir,
    /// Guest path of the scratch directory.
    pub guest: String,
}

impl Scratch {
    pub(crate) fn new(root: &Root, prefix: &str) -> Result<Scratch> {
        let parent = atomic::ensure_dir(root, "/var/lib/cloudprep", &mut |_| Ok(()))?;
        let (name, dir) = parent.mkdtemp(prefix)?;
        let guest = parent.path_of(&name);
        Ok(Scratch {
            parent,
            name,
            dir,
            guest,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.parent.remove_tree(&self.name) {
            log::warn!("removing {}: {e:#}", self.guest);
        }
    }
}

/// Create the new file `name` in `d` with `bytes`.
fn put(d: &Dir, name: &str, bytes: &[u8]) -> Result<()> {
    let mut f = d.create_new(name, 0o600)?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", d.path_of(name)))
}

fn netplan(root: &Root, chroot: Option<&Chroot>, guest: &str) -> Result<Verdict> {
    // A scratch root holding the guest's netplan files (with the new one), so `generate` writes nothing
    // that matters.
    let scratch = Scratch::new(root, "validate-")?;
    scratch.dir.mkdir_new("etc", 0o755)?;
    let etc = scratch.dir.open_sub("etc")?;
    etc.mkdir_new("netplan", 0o755)?;
    let np = etc.open_sub("netplan")?;
    for f in root.files_in("/etc/netplan", |n| n.ends_with(".yaml"))? {
        if let Some(b) = root.read(&f)? {
            let name = f.rsplit('/').next().unwrap_or("x.yaml");
            put(&np, name, &b)?;
        }
    }
    if !guest.starts_with("/etc/netplan/") {
        if let Some(b) = root.read(guest)? {
            put(&np, "99-candidate.yaml", &b)?;
        }
    }
    let argv: Vec<String> = vec![
        "netplan".into(),
        "generate".into(),
        "--root-dir".into(),
        scratch.guest.clone(),
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
    fn scratch_directories_never_follow_planted_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("keep"), "host\n").unwrap();
        let state = d.path().join("var/lib/cloudprep");
        std::fs::create_dir_all(&state).unwrap();
        // The old name was validate-<pid>: every guessable name is planted (a few here), pointing at the
        // host directory and at the guest's own root.
        for i in 0..64 {
            std::os::unix::fs::symlink(host.path(), state.join(format!("validate-{i}"))).unwrap();
        }
        std::os::unix::fs::symlink("/", state.join(format!("validate-{}", std::process::id())))
            .unwrap();
        std::fs::write(d.path().join("precious"), "guest\n").unwrap();
        let root = Root::new(d.path()).unwrap();
        let guest;
        {
            let s = Scratch::new(&root, "validate-").unwrap();
            guest = s.guest.clone();
            assert!(guest.starts_with("/var/lib/cloudprep/validate-"));
            let m = std::fs::symlink_metadata(root.lexical(&guest)).unwrap();
            assert!(m.is_dir() && !m.file_type().is_symlink());
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
                0o700
            );
            s.dir.mkdir_new("etc", 0o755).unwrap();
            let etc = s.dir.open_sub("etc").unwrap();
            put(&etc, "x.yaml", b"network: {}\n").unwrap();
            // A symlink inside the scratch tree is removed, not followed.
            std::os::unix::fs::symlink(host.path(), root.lexical(&guest).join("etc/out")).unwrap();
        }
        assert!(!root.lexical(&guest).exists(), "scratch left behind");
        assert_eq!(
            std::fs::read_to_string(host.path().join("keep")).unwrap(),
            "host\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("precious")).unwrap(),
            "guest\n"
        );
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 65);
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
