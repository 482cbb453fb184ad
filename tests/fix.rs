//! The transactional executor on real debootstrap roots: plans built from test findings (rewrite with CRLF
//! and no trailing newline, create, remove, a symlinked file, validators that reject), chroot commands,
//! rollback to a byte-identical tree, SIGKILL at every journal step, and `update-grub` in the chroot of a
//! loop-mounted image.
mod common;

use cloudprep::audit::{compose_plan, Plan};
use cloudprep::checks::{FileEdit, Finding, Fix, Phase, PlannedCommand, Validator};
use cloudprep::config::Config;
use cloudprep::fix::{self, ExecOptions};
use cloudprep::guest::root::Root;
use common::{finding, mounts_under};
use sha2::Digest;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<(i64, i64)>,
    content: String,
}

/// Every entry under `dirs` of the guest: type, mode, owner, content hash (or link target), and for
/// non-directories the mtime when `with_mtime`.
fn snapshot(root: &Path, dirs: &[&str], with_mtime: bool) -> BTreeMap<String, Node> {
    fn walk(base: &Path, p: &Path, with_mtime: bool, out: &mut BTreeMap<String, Node>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let t = m.file_type();
        let (kind, content) = if t.is_symlink() {
            ('l', std::fs::read_link(p).unwrap().display().to_string())
        } else if t.is_dir() {
            ('d', String::new())
        } else if t.is_file() {
            (
                'f',
                hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap())),
            )
        } else {
            ('o', String::new())
        };
        let rel = format!("/{}", p.strip_prefix(base).unwrap().display());
        out.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (with_mtime && kind != 'd').then(|| (m.mtime(), m.mtime_nsec())),
                content,
            },
        );
        if kind == 'd' {
            let mut names: Vec<_> = std::fs::read_dir(p).unwrap().flatten().collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                walk(base, &e.path(), with_mtime, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        let p = root.join(d.trim_start_matches('/'));
        if p.exists() {
            walk(root, &p, with_mtime, &mut out);
        }
    }
    out
}

fn assert_same(what: &str, a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("missing: {k}")),
            Some(w) if w != v => diffs.push(format!("changed: {k}: {v:?} -> {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("added: {k}"));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// A 2 GiB loop disk, one MBR partition (from 1 MiB) with ext4 holding a bookworm root, mounted:
/// (disk, mount point, partition device).
fn bookworm_on_a_loop_disk() -> (common::loopdev::LoopDisk, std::path::PathBuf, String) {
    let mut disk = common::loopdev::LoopDisk::new(2048, "label: dos\n,,L,*\n");
    let part = disk.part(1);
    common::sh("mkfs.ext4", &["-q", "-F", &part]);
    let mnt = disk.image.parent().unwrap().join("mnt");
    disk.mount(&part, &mnt, &[]);
    let st = Command::new(common::repo().join("scripts/mkroot.sh"))
        .args(["bookworm", mnt.to_str().unwrap(), "vm"])
        .status()
        .unwrap();
    assert!(st.success());
    (disk, mnt, part)
}

/// The first `n` bytes of a disk.
fn disk_head(dev: &str, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; n];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

#[test]
fn grub_install_boot_code_is_written_back_by_rollback() {
    use std::os::unix::fs::FileExt;
    common::require_root();
    const MIB: usize = 1 << 20;
    let (mut disk, mnt, _) = bookworm_on_a_loop_disk();
    // Another boot loader's code in the MBR and the gap before partition 1 (which starts at 1 MiB).
    let old: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk.dev)
            .unwrap();
        f.write_all_at(&old[..440], 0).unwrap();
        f.write_all_at(&old[512..], 512).unwrap();
        f.sync_all().unwrap();
    }
    let original = disk_head(&disk.dev, MIB);
    let root = Root::new(&mnt).unwrap();
    let findings = vec![finding(
        "test.grub-install",
        cmd(
            Phase::Post,
            cloudprep::checks::order::GRUB_INSTALL,
            &["grub-install", &disk.dev],
        ),
    )];
    let plan = compose_plan(&root, &findings);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    let installed = disk_head(&disk.dev, MIB);
    // GRUB's boot.img and core.img were written; the disk signature and partition table were not.
    assert!(
        installed[..440].windows(4).any(|w| w == b"GRUB"),
        "no GRUB boot code in the MBR"
    );
    assert_ne!(installed[512..], original[512..], "core.img not embedded");
    assert_eq!(installed[440..512], original[440..512]);
    let out = common::run_cloudprep(&mnt, &["rollback"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("restored {} (boot code)", disk.dev)),
        "{said}"
    );
    assert!(!said.contains("cannot undo"), "{said}");
    assert!(
        disk_head(&disk.dev, MIB) == original,
        "rollback did not restore the first MiB byte for byte"
    );

    // Once the disk is repartitioned (here: partition 1's type changed), rollback leaves the boot code.
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    let installed = disk_head(&disk.dev, MIB);
    common::sh(
        "sfdisk",
        &["-q", "--no-reread", "--part-type", &disk.dev, "1", "8e"],
    );
    let out = common::run_cloudprep(&mnt, &["rollback"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("its boot code was not restored"), "{said}");
    let now = disk_head(&disk.dev, MIB);
    assert_eq!(
        now[..440],
        installed[..440],
        "boot code written over a changed disk"
    );
    assert_eq!(now[512..], installed[512..]);
    disk.unmount_all();
}

const TREES: &[&str] = &["/etc", "/boot", "/var/cache/debconf"];

/// A bookworm guest with the test files planted, and its state before any run.
fn planted_guest() -> (common::Guest, BTreeMap<String, Node>) {
    common::require_root();
    let g = common::Guest::bookworm();
    plant(&g);
    let before = snapshot(g.root(), TREES, true);
    (g, before)
}

/// Files the edit tests work on, planted the way an old guest has them.
fn plant(g: &common::Guest) {
    std::fs::create_dir_all(g.path("/etc/fixtest")).unwrap();
    std::fs::write(g.path("/etc/fixtest/crlf.conf"), "# keep me\r\na=1\r\nb=2").unwrap();
    let p = g.path("/etc/fixtest/crlf.conf");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&p, Some(0), Some(4)).unwrap();
    std::fs::write(g.path("/etc/fixtest/real.conf"), "x=1\n").unwrap();
    std::os::unix::fs::symlink("/etc/fixtest/real.conf", g.path("/etc/fixtest/link.conf")).unwrap();
    std::fs::write(g.path("/etc/fixtest/gone.conf"), "obsolete\n").unwrap();
    // systemd-resolved's stub: dangling in an offline image.
    g.remove("/etc/resolv.conf");
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        g.path("/etc/resolv.conf"),
    )
    .unwrap();
    // A guest symlink that would leave the root if it were followed on the host.
    std::os::unix::fs::symlink(
        "/../../../../tmp/cloudprep-host-escape",
        g.path("/etc/fixtest/escape.conf"),
    )
    .unwrap();
    // Old mtimes, so a restore that forgets them is caught.
    for f in ["crlf.conf", "real.conf", "gone.conf"] {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_200_000_000, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(g.path(&format!("/etc/fixtest/{f}")))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// Findings whose fixes touch several files: all valid.
fn good_findings() -> Vec<Finding> {
    vec![
        finding(
            "test.crlf",
            Fix::default().edit(FileEdit::rewrite(
                "/etc/fixtest/crlf.conf",
                Validator::None,
                |s| Ok(s.replace("b=2", "b=3")),
            )),
        ),
        finding(
            "test.symlink",
            Fix::default().edit(FileEdit::rewrite(
                "/etc/fixtest/link.conf",
                Validator::ShellVars,
                |s| {
                    Ok(if s.contains("added=1") {
                        s.to_string()
                    } else {
                        format!("{s}added=1\n")
                    })
                },
            )),
        ),
        finding(
            "test.create",
            Fix::default().edit(FileEdit::create(
                "/etc/fixtest/new.d/created.conf",
                0o600,
                Validator::None,
                |_| Ok("created=1\n".into()),
            )),
        ),
        finding(
            "test.remove",
            Fix::default().edit(FileEdit::remove("/etc/fixtest/gone.conf")),
        ),
        finding(
            "test.fstab",
            Fix::default().edit(FileEdit::rewrite("/etc/fstab", Validator::Fstab, |s| {
                Ok(if s.contains("/dev/vda1") {
                    s.to_string()
                } else {
                    format!("{s}/dev/vda1 / ext4 errors=remount-ro 0 1\n")
                })
            })),
        ),
    ]
}

/// Findings whose new content the validators reject.
fn bad_findings() -> Vec<Finding> {
    vec![
        finding(
            "test.bad-shell",
            Fix::default().edit(FileEdit::rewrite(
                "/etc/default/grub",
                Validator::ShellVars,
                |s| {
                    Ok(if s.contains("unterminated") {
                        s.to_string()
                    } else {
                        format!("{s}GRUB_CMDLINE_LINUX=\"unterminated\n")
                    })
                },
            )),
        ),
        finding(
            "test.bad-yaml",
            Fix::default().edit(FileEdit::create(
                "/etc/cloud/cloud.cfg.d/99-test.cfg",
                0o644,
                Validator::CloudInit,
                |_| Ok("datasource_list: [ Ec2, None\n".into()),
            )),
        ),
        finding(
            "test.bad-fstab",
            Fix::default().edit(FileEdit::rewrite("/etc/fstab", Validator::Fstab, |s| {
                Ok(if s.contains("garbage") {
                    s.to_string()
                } else {
                    format!("{s}garbage\n")
                })
            })),
        ),
    ]
}

fn cmd(phase: Phase, order: u32, argv: &[&str]) -> Fix {
    Fix::default().command(PlannedCommand::new(phase, order, argv, "test"))
}

#[test]
fn apply_validate_undo_and_rollback_byte_identical() {
    let (g, before) = planted_guest();
    let root = Root::new(g.root()).unwrap();
    let mut findings = good_findings();
    findings.extend(bad_findings());
    findings.push(finding(
        "test.escape",
        Fix::default().edit(FileEdit::rewrite(
            "/etc/fixtest/escape.conf",
            Validator::None,
            |_| Ok("escaped=no\n".into()),
        )),
    ));
    findings.push(finding(
        "test.ifupdown",
        Fix::default().edit(FileEdit::rewrite(
            "/etc/network/interfaces",
            Validator::Ifupdown,
            |s| {
                Ok(if s.contains("eth0") {
                    s.to_string()
                } else {
                    format!("{s}\nallow-hotplug eth0\niface eth0 inet dhcp\n")
                })
            },
        )),
    ));
    findings.push(finding(
        "test.bad-ifupdown",
        Fix::default().edit(FileEdit::create(
            "/etc/network/interfaces.d/50-bad",
            0o644,
            Validator::Ifupdown,
            |_| Ok("address 10.0.0.1\niface eth1 inet static\n".into()),
        )),
    ));
    findings.push(finding("test.pre", cmd(Phase::Pre, 10, &["true"])));
    findings.push(finding("test.env", cmd(Phase::Post, 50, &["env"])));
    findings.push(finding(
        "test.resolv",
        cmd(Phase::Post, 55, &["cat", "/etc/resolv.conf"]),
    ));
    findings.push(finding(
        "test.touch",
        cmd(
            Phase::Post,
            60,
            &["touch", "/var/tmp/cloudprep-chroot-proof"],
        ),
    ));
    let plan = compose_plan(&root, &findings);
    assert!(
        plan.files.iter().all(|f| f.error.is_none()),
        "{:?}",
        plan.files
    );
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    let st = |p: &str| {
        rep.files
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("{p} not in {:?}", rep.files))
            .clone()
    };
    assert_eq!(rep.state, "partial", "{rep:#?}");
    assert!(rep.failed());
    // CRLF, comment and missing final newline kept; mode, owner and the rest byte-identical.
    assert_eq!(
        std::fs::read(g.path("/etc/fixtest/crlf.conf")).unwrap(),
        b"# keep me\r\na=1\r\nb=3"
    );
    let m = std::fs::metadata(g.path("/etc/fixtest/crlf.conf")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 0, 4));
    // Writing through the symlink changed its target and kept the link.
    assert!(std::fs::symlink_metadata(g.path("/etc/fixtest/link.conf"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(g.read("/etc/fixtest/real.conf"), "x=1\nadded=1\n");
    assert_eq!(
        st("/etc/fixtest/link.conf").resolved,
        "/etc/fixtest/real.conf"
    );
    // Created with its mode, root-owned; removed file gone.
    let m = std::fs::metadata(g.path("/etc/fixtest/new.d/created.conf")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 0, 0));
    assert!(!g.path("/etc/fixtest/gone.conf").exists());
    // The rejected files were restored (or removed again), the others stay applied. fstab had a good and
    // a bad edit composed: the bad one makes findmnt report a parse error, so the whole file is undone.
    for p in [
        "/etc/default/grub",
        "/etc/cloud/cloud.cfg.d/99-test.cfg",
        "/etc/fstab",
    ] {
        assert_eq!(st(p).status, "undone", "{p}: {:?}", st(p));
    }
    assert!(
        st("/etc/fstab").message.contains("line "),
        "{:?}",
        st("/etc/fstab")
    );
    assert!(st("/etc/default/grub").message.contains("sh -n"));
    assert!(st("/etc/cloud/cloud.cfg.d/99-test.cfg")
        .message
        .contains("YAML"));
    assert!(!g.path("/etc/cloud/cloud.cfg.d/99-test.cfg").exists());
    assert!(
        !g.path("/etc/cloud").exists(),
        "directories made for a rejected file are left"
    );
    let now = snapshot(g.root(), &["/etc/default", "/etc/fstab"], true);
    for p in ["/etc/default/grub", "/etc/fstab"] {
        assert_eq!(now.get(p), before.get(p), "{p} not restored exactly");
    }
    for p in [
        "/etc/fixtest/escape.conf",
        "/etc/fixtest/crlf.conf",
        "/etc/fixtest/link.conf",
        "/etc/fixtest/new.d/created.conf",
        "/etc/fixtest/gone.conf",
    ] {
        assert_eq!(st(p).status, "applied", "{p}: {:?}", st(p));
    }
    // Commands ran inside the guest, with exactly the documented environment.
    assert!(rep.commands.iter().all(|c| c.ok), "{:?}", rep.commands);
    assert!(g.path("/var/tmp/cloudprep-chroot-proof").exists());
    let env = rep.commands.iter().find(|c| c.argv == ["env"]).unwrap();
    let mut lines: Vec<&str> = env.output.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "DEBIAN_FRONTEND=noninteractive",
            "HOME=/root",
            "LC_ALL=C",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
    assert!(
        mounts_under(g.root()).is_empty(),
        "{:?}",
        mounts_under(g.root())
    );
    // Journal and backups are in the guest.
    let id = rep.run_id.clone().unwrap();
    let jdir = g.path(&format!("/var/lib/cloudprep/runs/{id}"));
    let journal = std::fs::read_to_string(jdir.join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"event\":\"backup\""));
    assert!(journal.contains("\"event\":\"undone\""));

    // Idempotent: the same fixes now plan nothing for the applied files.
    let again = compose_plan(&root, &good_findings());
    for f in &again.files {
        if f.path != "/etc/fstab" {
            assert!(f.diff.is_empty(), "{} replans: {}", f.path, f.diff);
        }
    }
    let empty = Plan::default();
    let r2 = fix::execute(&root, &Config::default(), &empty, &ExecOptions::default()).unwrap();
    assert_eq!(r2.state, "nothing");
    assert!(r2.run_id.is_none());

    // Someone edits a file after the run: rollback restores the original and says so.
    std::fs::write(g.path("/etc/fixtest/crlf.conf"), "edited later\n").unwrap();
    // `runs` lists it; `rollback` restores everything byte for byte and names what it cannot undo.
    let out = g.cloudprep(&["runs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id) && text.contains("applied"), "{text}");
    let out = g.cloudprep(&["rollback"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cannot undo: touch /var/tmp/cloudprep-chroot-proof"),
        "{text}"
    );
    assert!(!text.contains("cannot undo: true"), "{text}");
    assert!(
        text.contains("warning: /etc/fixtest/crlf.conf was changed after the run"),
        "{text}"
    );
    assert!(!text.contains("real.conf was changed"), "{text}");
    assert_same("after rollback", &before, &snapshot(g.root(), TREES, true));
    assert!(!g.path("/tmp/cloudprep-host-escape").exists());
    let out = g.cloudprep(&["runs", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["state"], "rolled-back");
    let out = g.cloudprep(&["rollback"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to roll back"));
    let out = g.cloudprep(&["rollback", &id]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn failing_command_rolls_back_the_whole_run() {
    let (g, before) = planted_guest();
    let root = Root::new(g.root()).unwrap();
    let mut findings = good_findings();
    findings.push(finding("test.fail", cmd(Phase::Post, 90, &["false"])));
    findings.push(finding(
        "test.missing",
        cmd(Phase::Post, 95, &["no-such-program-here"]),
    ));
    let plan = compose_plan(&root, &findings);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "rolled-back", "{rep:#?}");
    assert!(rep.failed());
    assert!(
        rep.errors.iter().any(|e| e.contains("`false` failed")),
        "{:?}",
        rep.errors
    );
    // The command after the failing one never ran.
    assert!(!rep
        .commands
        .iter()
        .any(|c| c.argv[0] == "no-such-program-here"));
    assert_same(
        "after a failed run",
        &before,
        &snapshot(g.root(), TREES, true),
    );
    let runs = fix::list_runs(&root).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state.as_str(), "rolled-back");
}

#[test]
fn a_hung_command_is_stopped_at_its_time_limit_and_the_run_rolled_back() {
    let (g, before) = planted_guest();
    let root = Root::new(g.root()).unwrap();
    let mut findings = good_findings();
    // Runs in the guest's chroot; `sleep` is the guest's own.
    findings.push(finding(
        "test.hang",
        cmd(Phase::Post, 90, &["sleep", "600"]),
    ));
    let plan = compose_plan(&root, &findings);
    let mut config = Config::default();
    config.fix.command_timeout = 2;
    let t0 = std::time::Instant::now();
    let rep = fix::execute(&root, &config, &plan, &ExecOptions::default()).unwrap();
    assert!(t0.elapsed().as_secs() < 120, "took {:?}", t0.elapsed());
    assert_eq!(rep.state, "rolled-back", "{rep:#?}");
    assert!(
        rep.errors
            .iter()
            .any(|e| e.contains("`sleep 600` failed (timed out after 2 s")),
        "{:?}",
        rep.errors
    );
    assert_same(
        "after a timed-out run",
        &before,
        &snapshot(g.root(), TREES, true),
    );
}

/// Helper run by `sigkill_at_every_journal_step` in a child process (it kills itself at a journal step).
/// Not a test of its own: run without the root that test prepares, it fails (never a silent pass).
#[test]
#[ignore = "helper process of sigkill_at_every_journal_step"]
fn fault_child() {
    let dir = std::env::var("CLOUDPREP_TEST_ROOT").expect(
        "fault_child is the child process of sigkill_at_every_journal_step (CLOUDPREP_TEST_ROOT unset)",
    );
    let root = Root::new(&dir).unwrap();
    let plan = compose_plan(&root, &fault_findings());
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    println!("STEPS={}", rep.journal_steps);
}

fn fault_findings() -> Vec<Finding> {
    let mut f = good_findings();
    f.push(finding("test.pre", cmd(Phase::Pre, 10, &["true"])));
    f.push(finding(
        "test.debconf",
        cmd(Phase::Post, 80, &["debconf-set-selections", "/dev/null"]),
    ));
    f
}

fn child(root: &Path, fault: Option<u64>) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "fault_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("CLOUDPREP_TEST_ROOT", root)
    .env_remove("CLOUDPREP_FAULT_STEP");
    if let Some(n) = fault {
        c.env("CLOUDPREP_FAULT_STEP", n.to_string());
    }
    c.output().unwrap()
}

#[test]
fn sigkill_at_every_journal_step() {
    let (g, original) = planted_guest();
    // The fully fixed state (mtimes aside), from one clean run, then back to the original.
    let out = child(g.root(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("STEPS=").map(|x| x.1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(steps >= 15, "only {steps} journal steps");
    let fixed = snapshot(g.root(), &["/etc"], false);
    let out = g.cloudprep(&["rollback"]);
    assert_eq!(out.status.code(), Some(0));
    assert_same(
        "after the clean run's rollback",
        &original,
        &snapshot(g.root(), TREES, true),
    );

    for n in 1..=steps {
        let out = child(g.root(), Some(n));
        if n == steps {
            // Killed after the final entry: the run is complete and applied.
            assert_eq!(out.status.signal(), Some(9), "step {n}");
            assert_same(
                &format!("killed after the last step {n}"),
                &fixed,
                &snapshot(g.root(), &["/etc"], false),
            );
            let out = g.cloudprep(&["rollback"]);
            assert_eq!(out.status.code(), Some(0));
        } else {
            assert_eq!(
                out.status.signal(),
                Some(9),
                "step {n}: not killed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            let root = Root::new(g.root()).unwrap();
            let runs = fix::list_runs(&root).unwrap();
            assert_eq!(
                runs.last().unwrap().state.as_str(),
                "incomplete",
                "step {n}"
            );
            match n % 4 {
                3 => {
                    // The `fix` command recovers first too (only a check that plans nothing: nothing to
                    // apply after).
                    let out = g.cloudprep(&["fix", "--yes", "--only", "platform.arch"]);
                    let e = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        e.contains("rolled back run") && e.contains("interrupted"),
                        "step {n}: {e}"
                    );
                    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
                }
                0 => {
                    // fix again: the interrupted run is rolled back first, then the plan applied.
                    let out = child(g.root(), None);
                    assert!(
                        out.status.success(),
                        "step {n}: {}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                    assert_same(
                        &format!("fix after a kill at step {n}"),
                        &fixed,
                        &snapshot(g.root(), &["/etc"], false),
                    );
                    let out = g.cloudprep(&["rollback"]);
                    assert_eq!(out.status.code(), Some(0));
                }
                1 => {
                    // A rollback that is itself killed right after it starts, then completed.
                    let mut c = Command::new(common::bin());
                    c.args(["rollback", "--root"])
                        .arg(g.root())
                        .env("CLOUDPREP_FAULT_STEP", "1");
                    let out = c.output().unwrap();
                    assert_eq!(out.status.signal(), Some(9), "step {n}");
                    let out = g.cloudprep(&["rollback"]);
                    assert_eq!(out.status.code(), Some(0), "step {n}");
                }
                _ => {
                    let out = g.cloudprep(&["rollback"]);
                    let t = String::from_utf8_lossy(&out.stdout);
                    assert_eq!(out.status.code(), Some(0), "step {n}: {t}");
                    assert!(t.contains("interrupted"), "step {n}: {t}");
                }
            }
        }
        assert_same(
            &format!("original after a kill at step {n} and recovery"),
            &original,
            &snapshot(g.root(), TREES, true),
        );
        assert!(mounts_under(g.root()).is_empty());
    }
    let root = Root::new(g.root()).unwrap();
    assert!(fix::list_runs(&root)
        .unwrap()
        .iter()
        .all(|r| r.state.as_str() == "rolled-back"));
}

#[test]
fn update_grub_in_a_loop_mounted_image_writes_root_uuid() {
    common::require_root();
    let (mut disk, mnt, part) = bookworm_on_a_loop_disk();
    let uuid = common::sh("blkid", &["-p", "-o", "value", "-s", "UUID", &part])
        .trim()
        .to_string();
    assert_eq!(uuid.len(), 36);
    let root = Root::new(&mnt).unwrap();
    // Control: without the /dev/disk/by-uuid link (no udev here) grub-mkconfig falls back to the kernel
    // device name. This is the trap the executor's private /dev avoids.
    let bare = fix::exec::Chroot::new(&root, &[]).unwrap();
    let o = fix::exec::run(Some(&bare), &["update-grub".to_string()]).unwrap();
    assert!(o.ok(), "{}", o.output);
    let cfg = std::fs::read_to_string(mnt.join("boot/grub/grub.cfg")).unwrap();
    assert!(cfg.contains("root=/dev/loop"), "control run: {cfg}");
    std::fs::remove_file(mnt.join("boot/grub/grub.cfg")).unwrap();
    let before = snapshot(&mnt, &["/boot", "/etc/default"], true);
    let findings = vec![finding(
        "test.grub",
        Fix::default()
            .edit(FileEdit::rewrite(
                "/etc/default/grub",
                Validator::ShellVars,
                |s| Ok(s.replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=1")),
            ))
            .command(PlannedCommand::new(
                Phase::Post,
                cloudprep::checks::order::UPDATE_GRUB,
                &["update-grub"],
                "regenerate grub.cfg",
            )),
    )];
    let plan = compose_plan(&root, &findings);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    let cfg = std::fs::read_to_string(mnt.join("boot/grub/grub.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("root=UUID={uuid}")),
        "grub.cfg has no root=UUID={uuid}:\n{}",
        cfg.lines()
            .filter(|l| l.contains("linux"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!cfg.contains("root=/dev/loop"), "{cfg}");
    assert!(cfg.contains("set timeout=1"));
    assert!(mounts_under(&mnt).is_empty(), "{:?}", mounts_under(&mnt));
    // Nothing was created in the host's /dev.
    assert!(!Path::new(&format!("/dev/disk/by-uuid/{uuid}")).exists());
    let out = common::run_cloudprep(&mnt, &["rollback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "after rollback",
        &before,
        &snapshot(&mnt, &["/boot", "/etc/default"], true),
    );
    disk.unmount_all();
}

/// Run `cloudprep fix` on `root` with a pseudo-terminal as its standard input and `answer` typed at its
/// prompt; returns (exit code, stderr).
fn fix_on_a_terminal(root: &Path, extra: &[&str], answer: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors; the other pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are ours from here on.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = Command::new(common::bin())
        .args(["fix", "--root"])
        .arg(root)
        .args(extra)
        .stdin(std::process::Stdio::from(slave))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    // Wait for the question before answering it, as a person would.
    let mut said = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&said).contains("[y/N]") {
        let n = err.read(&mut b).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&said));
        said.extend_from_slice(&b[..n]);
    }
    let mut m = std::fs::File::from(master);
    m.write_all(answer.as_bytes()).unwrap();
    err.read_to_end(&mut said).unwrap();
    let st = child.wait().unwrap();
    (st.code(), String::from_utf8_lossy(&said).into_owned())
}

#[test]
fn fix_on_a_terminal_asks_and_does_only_what_was_answered() {
    common::require_root();
    let g = common::Guest::bookworm();
    let rules = "/etc/udev/rules.d/70-persistent-net.rules";
    g.write(
        rules,
        "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0c:29:aa:bb:cc\", KERNEL==\"eth*\", NAME=\"eth0\"\n",
    );
    let only = ["--only", "network.udev-persistent-net"];
    let before = snapshot(g.root(), TREES, true);
    // "n" (and anything but yes): the plan was shown, nothing changed.
    for answer in ["n\n", "\n", "maybe\n"] {
        let (code, said) = fix_on_a_terminal(g.root(), &only, answer);
        assert!(
            said.contains(&format!("--- a{rules}")),
            "plan not shown:\n{said}"
        );
        assert!(said.contains("nothing changed"), "{said}");
        assert_eq!(code, Some(2), "{said}");
        assert_same(
            "after answering no",
            &before,
            &snapshot(g.root(), TREES, true),
        );
    }
    // "y": applied and journaled; the rules file is gone and rollback brings it back.
    let (code, said) = fix_on_a_terminal(g.root(), &only, "y\n");
    assert!(code.is_some_and(|c| c <= 1), "{code:?}: {said}");
    assert!(!g.path(rules).exists(), "{said}");
    let out = g.cloudprep(&["rollback"]);
    assert_eq!(out.status.code(), Some(0));
    assert_same("after rollback", &before, &snapshot(g.root(), TREES, true));
}

#[test]
fn fix_cli_dry_run_changes_nothing_and_refuses_without_a_terminal() {
    common::require_root();
    let g = common::Guest::bookworm();
    let before = snapshot(g.root(), TREES, true);
    let (audit_code, report) = g.audit_json(&[]);
    let out = g.cloudprep(&["fix", "--dry-run"]);
    assert_eq!(out.status.code(), Some(audit_code));
    assert_same("after --dry-run", &before, &snapshot(g.root(), TREES, true));
    let out = g.cloudprep(&["rollback"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to roll back"));
    let out = g.cloudprep(&["runs"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let has_plan = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| !f["fix"].is_null());
    let dry = String::from_utf8_lossy(&out.stdout).into_owned();
    // Without --yes and without a terminal on stdin: refused, nothing changed.
    let out = Command::new(common::bin())
        .args(["fix", "--root"])
        .arg(g.root())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if has_plan {
        assert!(!dry.is_empty());
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    } else {
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
        assert_eq!(out.status.code(), Some(audit_code));
    }
    assert_same(
        "after a refused fix",
        &before,
        &snapshot(g.root(), TREES, true),
    );
}

#[test]
fn update_initramfs_in_the_chroot_is_undone_byte_for_byte() {
    common::require_root();
    let g = common::Guest::bookworm();
    let before = snapshot(g.root(), &["/boot", "/var/lib/initramfs-tools"], true);
    let initrd: Vec<String> = before
        .keys()
        .filter(|k| k.starts_with("/boot/initrd.img-"))
        .cloned()
        .collect();
    assert!(!initrd.is_empty());
    let zstd = |b: &[u8]| b.windows(4).any(|w| w == [0x28, 0xb5, 0x2f, 0xfd]);
    assert!(
        zstd(&std::fs::read(g.path(&initrd[0])).unwrap()),
        "the fixture's initrd is not zstd"
    );
    let root = Root::new(g.root()).unwrap();
    let findings = vec![finding(
        "test.initramfs",
        Fix::default()
            .edit(FileEdit::create(
                "/etc/initramfs-tools/conf.d/cloudprep-test",
                0o644,
                Validator::ShellVars,
                |_| Ok("COMPRESS=gzip\n".into()),
            ))
            .command(PlannedCommand::new(
                Phase::Post,
                cloudprep::checks::order::UPDATE_INITRAMFS,
                &["update-initramfs", "-u", "-k", "all"],
                "rebuild with the virtio drivers",
            )),
    )];
    let plan = compose_plan(&root, &findings);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    let after = snapshot(g.root(), &["/boot"], true);
    for k in &initrd {
        assert_ne!(before[k].content, after[k].content, "{k} was not rebuilt");
        // gzip magic: the new configuration was used inside the chroot.
        let b = std::fs::read(g.path(k)).unwrap();
        assert!(
            b.windows(2).any(|w| w == [0x1f, 0x8b]),
            "{k} not gzip-compressed"
        );
    }
    let out = g.cloudprep(&["rollback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same(
        "after rollback",
        &before,
        &snapshot(g.root(), &["/boot", "/var/lib/initramfs-tools"], true),
    );
    assert!(!g
        .path("/etc/initramfs-tools/conf.d/cloudprep-test")
        .exists());
}

#[test]
fn special_files_and_directories_are_never_replaced() {
    common::require_root();
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for p in ["etc/dir.conf", "dev", "proc", "sys", "var/lib"] {
        std::fs::create_dir_all(r.join(p)).unwrap();
    }
    common::sh("mkfifo", &[r.join("etc/fifo.conf").to_str().unwrap()]);
    std::fs::write(r.join("etc/ok.conf"), "a\n").unwrap();
    let root = Root::new(r).unwrap();
    // Built by hand: reading a FIFO to compute a diff would block.
    let edit = |p: &str| FileEdit::rewrite(p, Validator::None, |s| Ok(format!("{s}b\n")));
    let pf = |p: &str| cloudprep::audit::PlannedFile {
        path: p.to_string(),
        edits: vec![edit(p)],
        findings: vec!["test.special".into()],
        action: "rewrite",
        diff: "x".into(),
        error: None,
    };
    let plan = Plan {
        files: vec![
            pf("/etc/fifo.conf"),
            pf("/etc/dir.conf"),
            pf("/etc/ok.conf"),
        ],
        commands: vec![],
    };
    let before = snapshot(r, &["/etc"], true);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "partial", "{rep:#?}");
    assert_eq!(rep.files[0].status, "error");
    assert!(rep.files[0].message.contains("FIFO"), "{:?}", rep.files[0]);
    assert_eq!(rep.files[1].status, "error");
    assert!(
        rep.files[1].message.contains("directory"),
        "{:?}",
        rep.files[1]
    );
    assert_eq!(rep.files[2].status, "applied");
    assert_eq!(
        std::fs::read_to_string(r.join("etc/ok.conf")).unwrap(),
        "a\nb\n"
    );
    let out = common::run_cloudprep(r, &["rollback"]);
    assert_eq!(out.status.code(), Some(0));
    assert_same("after rollback", &before, &snapshot(r, &["/etc"], true));
}
