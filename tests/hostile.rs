//! A hostile offline image under `--root`: symlinks to host files at every guest path cloudprep writes,
//! forged journals, planted run directories. Whatever the image holds, the host must stay byte-identical
//! and nothing may be created outside the root. Each scenario is one from the security review
//! (docs in ../shared/reviews/security-review.md: C1, H1, H2, H6, M1, M2).

mod common;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SECRET: &str = "host secret: must never change or be copied into a guest\n";
const RULES: &str = "/etc/udev/rules.d/70-persistent-net.rules";
const RULES_TEXT: &str = "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0c:29:aa:bb:cc\", KERNEL==\"eth*\", NAME=\"eth0\"\n";

fn need_root() {
    assert!(
        common::is_root(),
        "tests/hostile.rs needs root (file owners, chown, mounts): run the suite as root"
    );
}

/// Files on the host that a hostile image aims at, with known content, and everything else in their
/// directory (so a file created beside them shows up too).
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-host-bait.")
            .tempdir_in(common::scratch())
            .unwrap();
        let h = Host { dir };
        std::fs::write(h.path("secret"), SECRET).unwrap();
        std::fs::write(h.path("empty-journal.jsonl"), "").unwrap();
        std::fs::create_dir(h.path("victim-dir")).unwrap();
        std::fs::create_dir(h.path("run-dir")).unwrap();
        std::fs::write(h.path("run-dir/journal.jsonl"), "").unwrap();
        // A "disk": a regular file whose first sector is known (what /etc/crontab is to an attacker).
        let mut disk = vec![0x5au8; 64 << 10];
        disk[510] = 0x55;
        disk[511] = 0xaa;
        std::fs::write(h.path("disk.img"), disk).unwrap();
        h
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> BTreeMap<String, String> {
        common::tree_state(self.dir.path(), &["/"], &[])
    }
}

/// A minimal guest tree: the cloudprep units installed, the runs directory, a udev rules file the fix
/// removes (a plan of one file change that needs no guest program).
fn minimal_guest() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("cloudprep-hostile.")
        .tempdir_in(common::scratch())
        .unwrap();
    let w = |guest: &str, text: &str| {
        let p = d.path().join(guest.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for u in [
        "cloudprep-premigrate.service",
        "cloudprep-firstboot.service",
    ] {
        w(
            &format!("/lib/systemd/system/{u}"),
            &std::fs::read_to_string(common::repo().join("systemd").join(u)).unwrap(),
        );
    }
    w(RULES, RULES_TEXT);
    w("/etc/hostname", "hostile\n");
    std::fs::create_dir_all(d.path().join("var/lib/cloudprep/runs")).unwrap();
    d
}

/// Root is needed; the host bait and a minimal guest.
fn setup() -> (Host, tempfile::TempDir) {
    need_root();
    (Host::new(), minimal_guest())
}

fn gpath(root: &Path, guest: &str) -> PathBuf {
    root.join(guest.trim_start_matches('/'))
}

fn plant_link(root: &Path, guest: &str, target: &Path) {
    let p = gpath(root, guest);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    symlink(target, &p).unwrap();
}

/// Run cloudprep with `--root`, killed after `limit` (a hang or an endless read is a failure, not a stuck
/// test run).
fn run(root: &Path, args: &[&str], limit: Duration) -> Output {
    let mut c = Command::new(common::bin());
    c.args(args)
        .arg("--root")
        .arg(root)
        .env_remove("CLOUDPREP_INVOKED_BY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Output is read while it runs (a pipe that fills up must not look like a hang).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().unwrap();
            panic!(
                "cloudprep {args:?} did not finish within {limit:?} (hang or endless read)\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The exit code is one of the documented ones (0-3), never a panic or a signal.
fn documented_exit(o: &Output) {
    assert!(
        matches!(o.status.code(), Some(0..=3)),
        "undocumented exit: {}",
        text(o)
    );
}

fn assert_host_untouched(what: &str, host: &Host, before: &BTreeMap<String, String>) {
    let now = host.state();
    assert_eq!(
        &now,
        before,
        "{what}: the host changed (files under {})",
        host.dir.path().display()
    );
    assert_eq!(
        std::fs::read_to_string(host.path("secret")).unwrap(),
        SECRET
    );
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn write_journal(root: &Path, id: &str, lines: &[serde_json::Value]) -> PathBuf {
    let dir = gpath(root, &format!("/var/lib/cloudprep/runs/{id}"));
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).unwrap());
        s.push('\n');
    }
    std::fs::write(dir.join("journal.jsonl"), s).unwrap();
    dir
}

fn begin(id: &str) -> serde_json::Value {
    serde_json::json!({"event":"begin","id":id,"time":"2099-01-01T00:00:00Z","unix":4070908800i64,
        "root":"/","version":"0","files":[],"commands":[]})
}

fn meta() -> serde_json::Value {
    serde_json::json!({"mode":0o644,"uid":0,"gid":0,"mtime":1,"mtime_nsec":0})
}

/// H1: `arm`, `premigrate` and `firstboot` write markers and reports through a temp file next to them;
/// a guest symlink at the temp name (or at the marker) must not make them write a host file.
#[test]
fn lifecycle_writes_never_follow_guest_symlinks_to_the_host() {
    let (host, g) = setup();
    let root = g.path();
    let secret = host.path("secret");
    let nologin = host.path("nologin");
    for t in [
        "/var/lib/cloudprep/premigrate-armed.cloudprep-tmp",
        "/var/lib/cloudprep/premigrate-audit.cloudprep-tmp",
        "/var/lib/cloudprep/premigrate-report.cloudprep-tmp",
        "/var/lib/cloudprep/premigrate-summary.cloudprep-tmp",
        "/var/lib/cloudprep/firstboot-armed.cloudprep-tmp",
        "/var/lib/cloudprep/firstboot-report.cloudprep-tmp",
        "/var/lib/cloudprep/firstboot-steps.cloudprep-tmp",
        "/etc/systemd/system/poweroff.target.d/cloudprep-premigrate.cloudprep-tmp",
        "/etc/systemd/system/halt.target.d/cloudprep-premigrate.cloudprep-tmp",
    ] {
        plant_link(root, t, &secret);
    }
    plant_link(root, "/var/lib/cloudprep/runs/.lock", &nologin);
    let before = host.state();

    let o = run(root, &["arm"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_host_untouched("after arm", &host, &before);
    let marker = gpath(root, "/var/lib/cloudprep/premigrate-armed");
    let m = std::fs::symlink_metadata(&marker).unwrap();
    assert!(
        m.is_file(),
        "the marker must be a regular file in the guest"
    );
    assert!(std::fs::read_to_string(&marker)
        .unwrap()
        .contains("armed_at"));

    // premigrate by hand (offline): its fix step meets the planted .lock symlink and must not create the
    // host file it points at.
    let o = run(root, &["premigrate"], Duration::from_secs(120));
    documented_exit(&o);
    assert_host_untouched("after premigrate", &host, &before);
    assert!(!nologin.exists(), "the .lock symlink was followed");
    for r in ["premigrate-audit.json", "premigrate-summary.json"] {
        let p = gpath(root, &format!("/var/lib/cloudprep/{r}"));
        assert!(
            std::fs::symlink_metadata(&p).unwrap().is_file(),
            "{r}: {}",
            text(&o)
        );
    }

    // firstboot, armed by hand.
    std::fs::write(
        gpath(root, "/var/lib/cloudprep/firstboot-armed"),
        "# test\n",
    )
    .unwrap();
    let o = run(root, &["firstboot"], Duration::from_secs(120));
    documented_exit(&o);
    assert_host_untouched("after firstboot", &host, &before);
    let p = gpath(root, "/var/lib/cloudprep/firstboot-report.json");
    assert!(
        std::fs::symlink_metadata(&p).unwrap().is_file(),
        "{}",
        text(&o)
    );
}

/// H1: `runs/.lock` planted as a symlink to a host path: no command creates or opens that host file.
#[test]
fn a_lock_symlink_is_refused() {
    let (host, g) = setup();
    let root = g.path();
    plant_link(root, "/var/lib/cloudprep/runs/.lock", &host.path("nologin"));
    plant_link(root, "/var/lib/cloudprep/runs/.lock2", &host.path("secret"));
    let before = host.state();
    for args in [
        &["rollback"][..],
        &["fix", "--yes", "--only", "network.udev-persistent-net"][..],
    ] {
        let o = run(root, args, Duration::from_secs(60));
        documented_exit(&o);
        assert_host_untouched(&format!("after {args:?}"), &host, &before);
        assert!(!host.path("nologin").exists(), "{}", text(&o));
        assert!(
            text(&o).contains(".lock is a symbolic link"),
            "{}",
            text(&o)
        );
    }
    // The same with the lock pointing at an existing host file: its content and mode stay.
    plant_link(root, "/var/lib/cloudprep/runs/.lock", &host.path("secret"));
    let o = run(root, &["rollback"], Duration::from_secs(60));
    documented_exit(&o);
    assert_host_untouched("after rollback with .lock -> secret", &host, &before);
}

/// C1: a run directory that is a symlink to a host directory, and a journal that is a symlink to a host
/// file, are not runs: nothing is read from or appended to the host.
#[test]
fn run_directories_and_journals_are_not_followed() {
    let (host, g) = setup();
    let root = g.path();
    plant_link(
        root,
        "/var/lib/cloudprep/runs/20990101T000000Z-0001",
        &host.path("run-dir"),
    );
    let d = gpath(root, "/var/lib/cloudprep/runs/20990101T000000Z-0002");
    std::fs::create_dir_all(&d).unwrap();
    symlink(host.path("empty-journal.jsonl"), d.join("journal.jsonl")).unwrap();
    let before = host.state();
    for args in [
        &["runs"][..],
        &["rollback"][..],
        &["rollback", "20990101T000000Z-0001"][..],
        &["fix", "--yes", "--only", "network.udev-persistent-net"][..],
    ] {
        let o = run(root, args, Duration::from_secs(60));
        documented_exit(&o);
        assert_host_untouched(&format!("after {args:?}"), &host, &before);
        if args[0] == "runs" {
            // Both are named, not silently dropped.
            let t = text(&o);
            assert!(t.contains("skipping run 20990101T000000Z-0001"), "{t}");
            assert!(t.contains("skipping run 20990101T000000Z-0002"), "{t}");
        }
    }
}

/// C1: forged journals. Backup paths outside the run directory (absolute, `../`, `/dev/zero`) and boot
/// code aimed at a host file whose identity the attacker computed in advance.
#[test]
fn forged_journals_never_read_or_write_host_files() {
    let (host, g) = setup();
    let root = g.path();
    let secret = host.path("secret");
    let up = "../".repeat(40) + secret.to_str().unwrap().trim_start_matches('/');
    let id = "20990101T000000Z-0001";
    let s = sha(SECRET.as_bytes());
    let backup = |guest: &str, rel: &str, sum: &str| {
        serde_json::json!({"event":"backup","seq":1,"path":guest,"kind":"file","backup":rel,
            "sha256":sum,"target":null,"meta":meta(),"reason":"rewrite"})
    };
    // The identity of the host "disk" as cloudprep computes it (predictable for a regular file).
    let disk = host.path("disk.img");
    let identity = cloudprep::fix::bootcode::Disk::open(disk.to_str().unwrap(), false)
        .unwrap()
        .table()
        .unwrap()
        .2;
    let payload = vec![0xccu8; 440];
    let table = vec![0xddu8; 64];
    let dir = write_journal(
        root,
        id,
        &[
            begin(id),
            backup("/etc/victim-abs", secret.to_str().unwrap(), &s),
            backup("/etc/victim-up", &up, &s),
            backup("/etc/victim-zero", "/dev/zero", &s),
            serde_json::json!({"event":"boot-code","device":disk.to_str().unwrap(),"areas":[[0,440]],
                "identity":identity,"backup":"files/bootcode-1","sha256":sha(&payload)}),
            serde_json::json!({"event":"boot-code","device":disk.to_str().unwrap(),"areas":[[446,64]],
                "identity":identity,"backup":"files/bootcode-2","sha256":sha(&table)}),
            serde_json::json!({"event":"finished","state":"applied","summary":"forged"}),
        ],
    );
    std::fs::write(dir.join("files/bootcode-1"), &payload).unwrap();
    std::fs::write(dir.join("files/bootcode-2"), &table).unwrap();
    let before = host.state();
    let o = run(root, &["rollback"], Duration::from_secs(60));
    documented_exit(&o);
    assert_host_untouched("after rollback of a forged journal", &host, &before);
    for v in ["/etc/victim-abs", "/etc/victim-up", "/etc/victim-zero"] {
        let p = gpath(root, v);
        assert!(
            std::fs::read(&p)
                .map(|b| b != SECRET.as_bytes())
                .unwrap_or(true),
            "{v}: a host file was copied into the guest"
        );
    }
    let out = text(&o);
    assert!(
        out.contains("/dev/zero") || out.contains("victim-zero"),
        "{out}"
    );
    assert!(
        out.contains("boot code"),
        "the refused boot code is named: {out}"
    );

    // The same journal found by an interrupted-run recovery (`fix` recovers before anything else).
    let id2 = "20990101T000000Z-0002";
    let dir2 = write_journal(
        root,
        id2,
        &[
            begin(id2),
            backup("/etc/victim-abs2", secret.to_str().unwrap(), &s),
            serde_json::json!({"event":"boot-code","device":disk.to_str().unwrap(),"areas":[[0,440]],
                "identity":identity,"backup":"files/bootcode-1","sha256":sha(&payload)}),
        ],
    );
    std::fs::write(dir2.join("files/bootcode-1"), &payload).unwrap();
    let o = run(
        root,
        &["fix", "--yes", "--only", "network.udev-persistent-net"],
        Duration::from_secs(60),
    );
    documented_exit(&o);
    assert_host_untouched("after fix recovering a forged run", &host, &before);
    assert!(!gpath(root, "/etc/victim-abs2").exists());
}

/// H1: a pre-planted `runs/<the next run id>` symlink to a host directory does not receive the journal
/// and the backups; the run gets a directory of its own.
#[test]
fn a_planted_run_directory_is_never_reused() {
    let (host, g) = setup();
    let root = g.path();
    // The next id is <UTC second>Z-<highest sequence + 1>: plant 41, so the run will be 42, and the
    // symlinks for every second of the next two minutes.
    plant_link(
        root,
        "/var/lib/cloudprep/runs/20000101T000000Z-0041",
        &host.path("victim-dir"),
    );
    let now = std::time::SystemTime::now();
    for s in 0..120 {
        let id = cloudprep::fix::journal::new_run_id(now + Duration::from_secs(s), 42);
        plant_link(
            root,
            &format!("/var/lib/cloudprep/runs/{id}"),
            &host.path("victim-dir"),
        );
    }
    let before = host.state();
    let o = run(
        root,
        &["fix", "--yes", "--only", "network.udev-persistent-net"],
        Duration::from_secs(60),
    );
    documented_exit(&o);
    assert_host_untouched("after fix", &host, &before);
    assert!(
        std::fs::read_dir(host.path("victim-dir")).unwrap().count() == 0,
        "the run wrote into the host directory"
    );
    // The run still happened, in a real directory, and can be rolled back.
    assert!(!gpath(root, RULES).exists(), "{}", text(&o));
    let o = run(root, &["rollback"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(gpath(root, RULES)).unwrap(),
        RULES_TEXT
    );
    assert_host_untouched("after rollback", &host, &before);
}

/// H2: run directories are 0700 and a backup has the original file's mode, never wider.
#[test]
fn backups_keep_the_secrecy_of_their_originals() {
    need_root();
    let g = minimal_guest();
    let root = g.path();
    let rules = gpath(root, RULES);
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(
        root,
        &["fix", "--yes", "--only", "network.udev-persistent-net"],
        Duration::from_secs(60),
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    assert!(!rules.exists(), "{}", text(&o));
    let runs = gpath(root, "/var/lib/cloudprep/runs");
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .find(|e| e.file_type().unwrap().is_dir())
        .expect("a run directory")
        .path();
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&run_dir), 0o700, "{}", run_dir.display());
    assert_eq!(mode(&run_dir.join("files")), 0o700);
    assert_eq!(mode(&run_dir.join("journal.jsonl")) & 0o077, 0);
    let backups: Vec<PathBuf> = std::fs::read_dir(run_dir.join("files"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(mode(&backups[0]), 0o600);
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), RULES_TEXT);
}

/// H6: a run interrupted during a command (no `created` entry) is recovered without deleting what
/// appeared in the watched tree afterwards: it is kept and named. A file the command had backed up and
/// that changed since is restored, and the later version is kept in the run directory and named.
#[test]
fn recovery_keeps_what_appeared_after_the_crash() {
    need_root();
    let g = minimal_guest();
    let root = g.path();
    let boot = gpath(root, "/boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz-1"), "old kernel\n").unwrap();
    std::fs::write(boot.join("initrd.img-1"), "old initrd\n").unwrap();
    let id = "20990101T000000Z-0001";
    let initrd = b"old initrd\n";
    let dir = write_journal(
        root,
        id,
        &[
            begin(id),
            serde_json::json!({"event":"backup","seq":1,"path":"/boot/initrd.img-1","kind":"file",
                "backup":"files/1","sha256":sha(initrd),"target":null,"meta":meta(),
                "reason":"before update-initramfs -u"}),
            serde_json::json!({"event":"snapshot","dir":"/boot","recursive":false,
                "entries":["initrd.img-1","vmlinuz-1"]}),
            serde_json::json!({"event":"command-start","idx":1,"argv":["update-initramfs","-u"],
                "phase":"post","reversible":true,"note":""}),
        ],
    );
    std::fs::write(dir.join("files/1"), initrd).unwrap();
    // After the crash: a new kernel was installed (by unattended-upgrades, a week later).
    std::fs::write(boot.join("vmlinuz-2"), "new kernel\n").unwrap();
    std::fs::write(boot.join("initrd.img-2"), "new initrd\n").unwrap();
    std::fs::write(boot.join("initrd.img-1"), "regenerated later\n").unwrap();
    let o = run(root, &["rollback"], Duration::from_secs(60));
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", text(&o));
    let out = text(&o);
    for k in ["vmlinuz-2", "initrd.img-2"] {
        assert_eq!(
            std::fs::read_to_string(boot.join(k)).ok().as_deref(),
            Some(if k.starts_with("vm") {
                "new kernel\n"
            } else {
                "new initrd\n"
            }),
            "{k} was deleted by recovery: {out}"
        );
        assert!(out.contains(&format!("/boot/{k}")), "{k} not named: {out}");
    }
    // The backed-up file: the original is back, the later version kept and named.
    assert_eq!(
        std::fs::read_to_string(boot.join("initrd.img-1")).unwrap(),
        "old initrd\n"
    );
    assert!(out.contains("/boot/initrd.img-1"), "{out}");
    let kept: Vec<PathBuf> = walk(&dir)
        .into_iter()
        .filter(|p| std::fs::read(p).ok().as_deref() == Some(b"regenerated later\n"))
        .collect();
    assert_eq!(kept.len(), 1, "the later version is kept once: {out}");
    assert!(
        out.contains(&kept[0].file_name().unwrap().to_string_lossy().to_string()),
        "{out}"
    );
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// M1: a torn last journal line (a crash or a full disk mid-write) is trimmed when the journal is
/// reopened, so the rollback's own entries stay readable and the run stays listed.
#[test]
fn a_torn_journal_line_is_trimmed_on_reopen() {
    need_root();
    let g = minimal_guest();
    let root = g.path();
    let id = "20990101T000000Z-0001";
    let rules_sha = sha(RULES_TEXT.as_bytes());
    let dir = write_journal(
        root,
        id,
        &[
            begin(id),
            serde_json::json!({"event":"backup","seq":1,"path":RULES,"kind":"file",
                "backup":"files/1","sha256":rules_sha,"target":null,"meta":meta(),"reason":"remove"}),
        ],
    );
    std::fs::write(dir.join("files/1"), RULES_TEXT).unwrap();
    std::fs::remove_file(gpath(root, RULES)).unwrap();
    let mut j = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("journal.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut j, b"{\"event\":\"applied\",\"seq\":1,\"pa").unwrap();
    drop(j);
    let o = run(root, &["rollback"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(gpath(root, RULES)).unwrap(),
        RULES_TEXT
    );
    let o = run(root, &["runs", "--format", "json"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["id"], id, "{}", text(&o));
    assert_eq!(v[0]["state"], "rolled-back", "{}", text(&o));
    let j = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(!j.contains("\"pa{"), "torn text merged into a line: {j}");
}

/// M2: a 10 GB (sparse) /etc/fstab is an error finding naming the file, not an out-of-memory kill.
#[test]
fn a_huge_config_file_is_an_error_not_an_oom() {
    need_root();
    let g = minimal_guest();
    let root = g.path();
    let f = std::fs::File::create(gpath(root, "/etc/fstab")).unwrap();
    f.set_len(10 << 30).unwrap();
    drop(f);
    let o = run(
        root,
        &["audit", "--format", "json"],
        Duration::from_secs(120),
    );
    documented_exit(&o);
    let out = text(&o);
    assert!(
        out.contains("/etc/fstab") && out.contains("too large"),
        "{out}"
    );
}

/// Point 5: a full disk during a run gives a clear error, and the run is rolled back (nothing half done).
#[test]
fn a_full_disk_during_a_run_is_a_clear_error_and_rolls_back() {
    need_root();
    let g = minimal_guest();
    let mnt = tempfile::Builder::new()
        .prefix("cloudprep-full.")
        .tempdir_in(common::scratch())
        .unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "mounting a small tmpfs");
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(mnt.path().to_path_buf());
    let root = mnt.path();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", g.path().display()))
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success());
    // A big rules file: its backup copy cannot fit once the rest of the filesystem is filled.
    let big = RULES_TEXT.repeat(3000);
    std::fs::write(gpath(root, RULES), &big).unwrap();
    let mut fill = std::fs::File::create(root.join("filler")).unwrap();
    let chunk = vec![1u8; 4096];
    while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
    // Leave room for the run directory and its journal lines, not for the backup copy.
    let len = fill.metadata().unwrap().len();
    fill.set_len(len.saturating_sub(64 << 10)).unwrap();
    drop(fill);
    let o = run(
        root,
        &["fix", "--yes", "--only", "network.udev-persistent-net"],
        Duration::from_secs(60),
    );
    documented_exit(&o);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert_eq!(
        std::fs::read_to_string(gpath(root, RULES)).unwrap(),
        big,
        "the file changed although its backup could not be written: {out}"
    );
    // Space again: the runs are listed and none needs recovery.
    std::fs::remove_file(root.join("filler")).unwrap();
    let o = run(root, &["rollback"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(root, &["runs", "--format", "json"], Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for r in v.as_array().unwrap() {
        assert!(r["state"] == "rolled-back", "{v}");
    }
    assert_eq!(std::fs::read_to_string(gpath(root, RULES)).unwrap(), big);
}

/// H6: a command that finished (its finish time journaled) but whose `created` record was never written
/// (killed right after): what it created before it finished is removed, what appeared later is kept.
#[test]
fn recovery_removes_only_what_the_finished_command_created() {
    let (_host, g) = setup();
    let root = g.path();
    let boot = gpath(root, "/boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz-1"), "old kernel\n").unwrap();
    // Made by the command, before it finished.
    std::fs::write(boot.join("initrd.img-1.new"), "the command's\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let finished = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    std::thread::sleep(Duration::from_millis(50));
    // After it finished: not the run's.
    std::fs::write(boot.join("vmlinuz-2"), "new kernel\n").unwrap();
    let id = "20990101T000000Z-0001";
    write_journal(
        root,
        id,
        &[
            begin(id),
            serde_json::json!({"event":"snapshot","dir":"/boot","recursive":false,
                "entries":["vmlinuz-1"]}),
            serde_json::json!({"event":"command-start","idx":1,"argv":["update-initramfs","-u"],
                "phase":"post","reversible":true,"note":""}),
            serde_json::json!({"event":"command-done","idx":1,"argv":["update-initramfs","-u"],
                "status":0,"signal":null,"ok":true,"output":"","time_ns":finished}),
        ],
    );
    let o = run(root, &["rollback"], Duration::from_secs(60));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!boot.join("initrd.img-1.new").exists(), "{out}");
    assert!(out.contains("removed  /boot/initrd.img-1.new"), "{out}");
    assert_eq!(
        std::fs::read_to_string(boot.join("vmlinuz-2")).unwrap(),
        "new kernel\n",
        "{out}"
    );
    assert!(
        out.contains("/boot/vmlinuz-2") && out.contains("kept"),
        "{out}"
    );
    assert!(boot.join("vmlinuz-1").exists());
}

/// Point 5: when the journal cannot take another line (full disk, read-only file), the rollback is done
/// all the same, says so, and leaves the run to be rolled back again.
#[test]
fn a_journal_that_cannot_be_written_does_not_stop_the_rollback() {
    let (_host, g) = setup();
    let root = g.path();
    let id = "20990101T000000Z-0001";
    let dir = write_journal(
        root,
        id,
        &[
            begin(id),
            serde_json::json!({"event":"backup","seq":1,"path":RULES,"kind":"file",
                "backup":"files/1","sha256":sha(RULES_TEXT.as_bytes()),"target":null,"meta":meta(),
                "reason":"remove"}),
            serde_json::json!({"event":"applied","seq":1,"path":RULES,"action":"remove",
                "sha256":null,"findings":[]}),
        ],
    );
    std::fs::write(dir.join("files/1"), RULES_TEXT).unwrap();
    std::fs::remove_file(gpath(root, RULES)).unwrap();
    let j = dir.join("journal.jsonl");
    let st = Command::new("chattr").arg("+i").arg(&j).status().unwrap();
    assert!(
        st.success(),
        "chattr +i (the scratch directory needs ext4 or xfs)"
    );
    let o = run(root, &["rollback"], Duration::from_secs(60));
    let _ = Command::new("chattr").arg("-i").arg(&j).status();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("the journal cannot be updated"), "{out}");
    assert_eq!(
        std::fs::read_to_string(gpath(root, RULES)).unwrap(),
        RULES_TEXT,
        "{out}"
    );
    // Still unfinished in the journal: the next rollback does it again (idempotent) and marks it.
    let o = run(root, &["rollback"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(root, &["runs", "--format", "json"], Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "rolled-back", "{v}");
}

/// H2: an exported image holds /etc/shadow and the host keys: it is created 0600 (raw and qcow2).
#[test]
fn exported_images_are_private() {
    let (_host, g) = setup();
    let src = g.path().join("disk.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    for (name, fmt) in [("out.raw", "raw"), ("out.qcow2", "qcow2")] {
        let out = g.path().join(name);
        let o = run(
            g.path(),
            &[
                "export",
                "--source",
                src.to_str().unwrap(),
                "--format",
                fmt,
                "-o",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(120),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let mode = std::fs::metadata(&out).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
}
