//! The .deb: static binary, lintian, file layout, conffile, man page in sync with the CLI, systemd units,
//! install / audit / arm / upgrade / remove / purge inside real debootstrap roots of bullseye, bookworm
//! and trixie; and the pre-migration and first-boot sequences on an offline root. Needs root.

mod common;

use common::{repo, sh};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const PREMIGRATE: &str = "cloudprep-premigrate.service";
const FIRSTBOOT: &str = "cloudprep-firstboot.service";

/// Build the .deb once per test binary (the musl LTO build is the slow part).
fn deb() -> &'static PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(common::build_deb)
}

/// The package's files unpacked (dpkg-deb -x) into a fresh directory.
fn unpacked() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    sh(
        "dpkg-deb",
        &["-x", deb().to_str().unwrap(), d.path().to_str().unwrap()],
    );
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn binary_is_static_stripped_and_the_deb_is_lintian_clean() {
    common::require_root();
    let d = unpacked();
    let bin = d.path().join("usr/sbin/cloudprep");
    // Test-only hooks (fault injection, a fake sysfs) are not in the release binary; the test build has
    // the fault hook (the search itself works).
    let contains = |file: &Path, s: &str| {
        let bytes = std::fs::read(file).unwrap();
        bytes.windows(s.len()).any(|w| w == s.as_bytes())
    };
    for hook in ["CLOUDPREP_FAULT_STEP", "CLOUDPREP_SYSFS"] {
        assert!(!contains(&bin, hook), "{hook} is in the release binary");
    }
    assert!(contains(&common::bin(), "CLOUDPREP_FAULT_STEP"));
    let f = sh("file", &["-b", bin.to_str().unwrap()]);
    assert!(
        f.contains("static-pie linked") || f.contains("statically linked"),
        "{f}"
    );
    assert!(f.contains("stripped") && !f.contains("not stripped"), "{f}");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let l = text(&ldd);
    assert!(
        l.contains("not a dynamic executable") || l.contains("statically linked"),
        "ldd: {l}"
    );
    let v = sh(bin.to_str().unwrap(), &["--version"]);
    assert_eq!(v.trim(), format!("cloudprep {}", env!("CARGO_PKG_VERSION")));

    // Reproducible: a second build is byte-identical (SOURCE_DATE_EPOCH from the changelog).
    let again = tempfile::tempdir().unwrap();
    let o = Command::new(repo().join("packaging/build-deb.sh"))
        .arg(again.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let second = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(
        std::fs::read(&second).unwrap() == std::fs::read(deb()).unwrap(),
        "the .deb is not reproducible"
    );

    // Old dpkg reads only gzip (or uncompressed) members.
    let members = sh("ar", &["t", deb().to_str().unwrap()]);
    assert_eq!(
        members.split_whitespace().collect::<Vec<_>>(),
        ["debian-binary", "control.tar.gz", "data.tar.gz"]
    );
    let control = sh("dpkg-deb", &["-f", deb().to_str().unwrap()]);
    assert!(control.contains("Package: cloudprep\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {}-", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    assert!(
        !control.contains("Depends:"),
        "static: no Depends\n{control}"
    );
    assert!(!control.contains("Recommends:"), "{control}");

    // lintian: no errors, no warnings except those overridden (with a comment each).
    let o = Command::new("lintian")
        .args(["--pedantic", "--display-info", "--show-overrides"])
        .arg(deb())
        .output()
        .unwrap();
    let out = text(&o);
    let bad: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(bad.is_empty(), "lintian:\n{out}");
    let overrides =
        std::fs::read_to_string(d.path().join("usr/share/lintian/overrides/cloudprep")).unwrap();
    assert_eq!(
        overrides,
        std::fs::read_to_string(repo().join("packaging/debian/cloudprep.lintian-overrides"))
            .unwrap()
    );
    let mut prev_comment = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            prev_comment = true;
        } else if !line.trim().is_empty() {
            assert!(
                prev_comment,
                "override without a justifying comment: {line}"
            );
            // Every override is still needed: lintian reports it as overridden (O:).
            let tag = line.split_whitespace().nth(1).unwrap();
            assert!(
                out.lines().any(|l| l.starts_with("O:") && l.contains(tag)),
                "unused override {tag}:\n{out}"
            );
            prev_comment = false;
        }
    }
}

#[test]
fn packaged_files_man_page_and_config_match_the_sources() {
    common::require_root();
    let d = unpacked();
    let p = |s: &str| d.path().join(s);
    // The man page is generated from the clap definition: it must equal what this build prints.
    let gz = std::fs::read(p("usr/share/man/man8/cloudprep.8.gz")).unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut page).unwrap();
    let fresh = Command::new(common::bin()).arg("man").output().unwrap();
    assert!(fresh.status.success());
    assert_eq!(
        page,
        String::from_utf8(fresh.stdout).unwrap(),
        "packaged man page is stale"
    );
    assert!(page.contains(".TH cloudprep 8 "));
    // groff renders it without warnings.
    let g = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(page.as_bytes())?;
            c.wait_with_output()
        });
    if let Ok(g) = g {
        assert!(
            g.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&g.stderr)
        );
    }

    for (packaged, source) in [
        ("etc/cloudprep/cloudprep.toml", "packaging/cloudprep.toml"),
        (
            "usr/share/cloudprep/report.schema.json",
            "docs/report.schema.json",
        ),
        (
            "lib/systemd/system/cloudprep-premigrate.service",
            "systemd/cloudprep-premigrate.service",
        ),
        (
            "lib/systemd/system/cloudprep-firstboot.service",
            "systemd/cloudprep-firstboot.service",
        ),
        (
            "usr/share/doc/cloudprep/copyright",
            "packaging/debian/copyright",
        ),
    ] {
        assert_eq!(
            std::fs::read(p(packaged)).unwrap(),
            std::fs::read(repo().join(source)).unwrap(),
            "{packaged}"
        );
    }
    let cl = std::fs::read(p("usr/share/doc/cloudprep/changelog.Debian.gz")).unwrap();
    let mut changelog = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&cl[..]), &mut changelog)
        .unwrap();
    assert!(changelog.starts_with(&format!("cloudprep ({}-", env!("CARGO_PKG_VERSION"))));
    // The shipped config is the defaults (also a unit test) and the binary accepts it.
    let o = common::run_cloudprep(
        d.path(),
        &[
            "audit",
            "--format",
            "json",
            "--config",
            p("etc/cloudprep/cloudprep.toml").to_str().unwrap(),
        ],
    );
    assert!(matches!(o.status.code(), Some(0..=2)), "{}", text(&o));
    // Modes and owners.
    let listing = sh("dpkg-deb", &["-c", deb().to_str().unwrap()]);
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "{line}");
        let mode = line.split_whitespace().next().unwrap();
        if line.ends_with("./usr/sbin/cloudprep") {
            assert_eq!(mode, "-rwxr-xr-x");
        } else if mode.starts_with('-') {
            assert_eq!(mode, "-rw-r--r--", "{line}");
        }
    }
    let conffiles = sh("dpkg-deb", &["-I", deb().to_str().unwrap(), "conffiles"]);
    assert_eq!(conffiles, "/etc/cloudprep/cloudprep.toml\n");
}

/// A staged root: the host's systemd units, the package's files, /bin/true; then systemd-analyze verify.
#[test]
fn units_verify_and_are_never_enabled_by_the_package() {
    common::require_root();
    let d = unpacked();
    let stage = d.path();
    std::fs::create_dir_all(stage.join("usr/lib")).unwrap();
    sh(
        "cp",
        &[
            "-a",
            "/usr/lib/systemd",
            stage.join("usr/lib/").to_str().unwrap(),
        ],
    );
    // Our units live in /lib/systemd/system (usrmerge on the guests): merge them in the staged /usr/lib.
    for u in [PREMIGRATE, FIRSTBOOT] {
        std::fs::copy(
            stage.join("lib/systemd/system").join(u),
            stage.join("usr/lib/systemd/system").join(u),
        )
        .unwrap();
    }
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    std::fs::copy("/bin/true", stage.join("bin/true")).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", stage.display()))
        .args([PREMIGRATE, FIRSTBOOT])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "systemd-analyze verify:\n{out}");
    assert!(
        !out.lines().any(|l| l.contains("cloudprep")),
        "systemd-analyze verify:\n{out}"
    );

    let pre = std::fs::read_to_string(repo().join("systemd").join(PREMIGRATE)).unwrap();
    let has = |unit: &str, kv: &str| unit.lines().any(|l| l.trim() == kv);
    assert!(has(&pre, "Type=oneshot") && has(&pre, "RemainAfterExit=yes"));
    assert!(has(&pre, "ExecStop=/usr/sbin/cloudprep premigrate"));
    assert!(has(&pre, "ExecStart=/bin/true"), "nothing runs at boot");
    assert!(has(
        &pre,
        "Environment=CLOUDPREP_INVOKED_BY=cloudprep-premigrate.service"
    ));
    assert!(has(&pre, "TimeoutStopSec=infinity"));
    assert!(has(
        &pre,
        &format!(
            "ConditionPathExists={}",
            cloudprep::lifecycle::PREMIGRATE_MARKER
        )
    ));
    let fb = std::fs::read_to_string(repo().join("systemd").join(FIRSTBOOT)).unwrap();
    assert!(has(&fb, "ConditionVirtualization=vm"));
    assert!(has(
        &fb,
        &format!(
            "ConditionPathExists={}",
            cloudprep::lifecycle::FIRSTBOOT_MARKER
        )
    ));
    assert!(has(&fb, "ExecStart=/usr/sbin/cloudprep firstboot"));
    // The maintainer scripts never enable or start a unit.
    for s in ["postinst", "prerm", "postrm"] {
        let t = std::fs::read_to_string(repo().join("packaging/debian").join(s)).unwrap();
        for l in t.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !l.contains("enable") && !l.contains(" start ") && !l.contains("restart"),
                "{s}: {l}"
            );
        }
    }
}

/// Unmounts on drop (lazily, with everything below it, so a failed test still cleans up before the root is
/// deleted).
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn chroot(root: &Path, args: &[&str]) -> Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env_remove("CLOUDPREP_INVOKED_BY")
        .output()
        .expect("running chroot")
}

fn chroot_ok(root: &Path, args: &[&str]) -> String {
    let o = chroot(root, args);
    assert!(o.status.success(), "chroot {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wants(root: &Path, unit: &str) -> PathBuf {
    root.join("etc/systemd/system/multi-user.target.wants")
        .join(unit)
}

fn lifecycle_in(release: &str, variant: &str) {
    let guest = common::Guest::release(release, variant);
    let root = guest.root().to_path_buf();
    let proc_dir = root.join("proc");
    sh("mount", &["-t", "proc", "proc", proc_dir.to_str().unwrap()]);
    let _proc = Mounted(proc_dir);
    let name = deb().file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(deb(), root.join("tmp").join(&name)).unwrap();
    let in_guest = format!("/tmp/{name}");

    chroot_ok(&root, &["apt-get", "install", "-y", "-q", &in_guest]);
    let status = chroot_ok(
        &root,
        &["dpkg-query", "-W", "-f=${Status} ${Version}", "cloudprep"],
    );
    assert!(status.starts_with("install ok installed "), "{status}");
    let files = chroot_ok(&root, &["dpkg", "-L", "cloudprep"]);
    for f in [
        "/usr/sbin/cloudprep",
        "/usr/share/man/man8/cloudprep.8.gz",
        "/etc/cloudprep/cloudprep.toml",
        "/usr/share/cloudprep/report.schema.json",
        "/lib/systemd/system/cloudprep-premigrate.service",
        "/lib/systemd/system/cloudprep-firstboot.service",
        "/usr/share/doc/cloudprep/changelog.Debian.gz",
        "/usr/share/doc/cloudprep/copyright",
        "/usr/share/lintian/overrides/cloudprep",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{release}: {f} not in dpkg -L:\n{files}"
        );
    }
    let conf = chroot_ok(&root, &["dpkg-query", "-W", "-f=${Conffiles}", "cloudprep"]);
    assert!(
        conf.trim_start()
            .starts_with("/etc/cloudprep/cloudprep.toml "),
        "{release}: conffiles {conf:?}"
    );
    // Installing enabled nothing.
    for u in [PREMIGRATE, FIRSTBOOT] {
        assert!(!wants(&root, u).exists() && wants(&root, u).symlink_metadata().is_err());
    }
    let state = root.join("var/lib/cloudprep");
    assert!(state.is_dir());

    // The static binary runs on this release's userland: a report, not a loader error.
    let o = chroot(&root, &["cloudprep", "audit", "--format", "json"]);
    let code = o.status.code();
    assert!(
        matches!(code, Some(0..=2)),
        "{release}: audit exit {code:?}:\n{}",
        text(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{release}: report is not JSON: {e}\n{}", text(&o)));
    common::validate_report(&report);
    assert_eq!(report["schema"], 1);
    // The man page is readable by the guest's tools.
    let gz = std::fs::read(root.join("usr/share/man/man8/cloudprep.8.gz")).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);

    // Arm / disarm inside the guest (no systemd running in a chroot: file operations only).
    chroot_ok(
        &root,
        &[
            "cloudprep",
            "arm",
            "--export",
            "/srv/vm.qcow2",
            "--format",
            "qcow2",
        ],
    );
    let marker = root.join("var/lib/cloudprep/premigrate-armed");
    let armed = std::fs::read_to_string(&marker).unwrap();
    assert!(armed.contains("export_output = \"/srv/vm.qcow2\"") && armed.contains("qcow2"));
    let link = std::fs::read_link(wants(&root, PREMIGRATE)).unwrap();
    assert_eq!(link, Path::new("/lib/systemd/system").join(PREMIGRATE));
    assert!(root
        .join("etc/systemd/system/poweroff.target.d/cloudprep-premigrate.conf")
        .is_file());
    chroot_ok(&root, &["cloudprep", "disarm"]);
    assert!(!marker.exists() && wants(&root, PREMIGRATE).symlink_metadata().is_err());
    assert!(!root.join("etc/systemd/system/poweroff.target.d").exists());
    // A bad export setting is refused at arm time, not during the shutdown.
    for bad in [&["--export", "-"][..], &["--format", "qcow2"][..]] {
        let mut args = vec!["cloudprep", "arm"];
        args.extend_from_slice(bad);
        let o = chroot(&root, &args);
        assert_eq!(o.status.code(), Some(3), "{bad:?}: {}", text(&o));
        assert!(!marker.exists());
    }

    // An upgrade (reinstall) keeps an armed machine armed and enables nothing else.
    chroot_ok(&root, &["cloudprep", "arm"]);
    chroot_ok(&root, &["dpkg", "-i", &in_guest]);
    assert!(marker.is_file(), "{release}: upgrade disarmed");
    assert!(wants(&root, PREMIGRATE).symlink_metadata().is_ok());
    assert!(wants(&root, FIRSTBOOT).symlink_metadata().is_err());

    // A fix run journal and an edited conffile survive `remove`; removal disarms.
    let journal = state.join("runs/20260101T000000Z/journal.json");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, "{}\n").unwrap();
    let conffile = root.join("etc/cloudprep/cloudprep.toml");
    let mut edited = std::fs::read_to_string(&conffile).unwrap();
    edited.push_str("# edited by the operator\n");
    std::fs::write(&conffile, &edited).unwrap();
    chroot_ok(&root, &["apt-get", "remove", "-y", "-q", "cloudprep"]);
    assert!(!root.join("usr/sbin/cloudprep").exists());
    assert!(
        journal.is_file(),
        "{release}: remove deleted the run journals"
    );
    assert_eq!(std::fs::read_to_string(&conffile).unwrap(), edited);
    assert!(!marker.exists(), "{release}: remove left the machine armed");
    assert!(wants(&root, PREMIGRATE).symlink_metadata().is_err());
    let status = chroot_ok(&root, &["dpkg-query", "-W", "-f=${Status}", "cloudprep"]);
    assert_eq!(status, "deinstall ok config-files");

    chroot_ok(&root, &["apt-get", "purge", "-y", "-q", "cloudprep"]);
    assert!(!state.exists(), "{release}: purge left /var/lib/cloudprep");
    assert!(
        !root.join("etc/cloudprep").exists(),
        "{release}: purge left /etc/cloudprep"
    );
    let o = chroot(&root, &["dpkg-query", "-W", "-f=${Status}", "cloudprep"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() || s.contains("not-installed"), "{s}");
}

#[test]
fn deb_lifecycle_bookworm() {
    common::require_root();
    lifecycle_in("bookworm", "min");
}

#[test]
fn deb_lifecycle_trixie() {
    common::require_root();
    lifecycle_in("trixie", "min");
}

/// bullseye (systemd 247): the VMware-era guest variant, so its own systemd-analyze checks the units too.
#[test]
fn deb_lifecycle_bullseye_and_systemd_247_verify() {
    common::require_root();
    let guest = common::Guest::release("bullseye", "vm");
    let root = guest.root().to_path_buf();
    let proc_dir = root.join("proc");
    sh("mount", &["-t", "proc", "proc", proc_dir.to_str().unwrap()]);
    let _proc = Mounted(proc_dir);
    // systemd-analyze's test manager needs the cgroup hierarchy.
    let sys_dir = root.join("sys");
    sh("mount", &["--rbind", "/sys", sys_dir.to_str().unwrap()]);
    let _sys = Mounted(sys_dir);
    let name = deb().file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(deb(), root.join("tmp").join(&name)).unwrap();
    chroot_ok(&root, &["dpkg", "-i", &format!("/tmp/{name}")]);
    let v = chroot_ok(&root, &["systemctl", "--version"]);
    assert!(v.starts_with("systemd 247"), "{v}");
    let o = chroot(
        &root,
        &[
            "systemd-analyze",
            "verify",
            "--man=no",
            "/lib/systemd/system/cloudprep-premigrate.service",
            "/lib/systemd/system/cloudprep-firstboot.service",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "systemd 247 verify:\n{out}");
    assert!(
        !out.lines().any(|l| l.contains("cloudprep")),
        "systemd 247 verify:\n{out}"
    );
    drop(_sys);
    drop(_proc);
    drop(guest);
    lifecycle_in("bullseye", "min");
}

/// Install the units into an offline root the way the package does (for the sequences below).
fn root_with_units() -> common::Guest {
    let g = common::Guest::release("bookworm", "min");
    for u in [PREMIGRATE, FIRSTBOOT] {
        g.write(
            &format!("/lib/systemd/system/{u}"),
            &std::fs::read_to_string(repo().join("systemd").join(u)).unwrap(),
        );
    }
    g
}

fn run(root: &Path, args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut c = Command::new(common::bin());
    c.args(args)
        .arg("--root")
        .arg(root)
        .env_remove("CLOUDPREP_INVOKED_BY");
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn premigrate_sequence_on_an_offline_root() {
    common::require_root();
    let g = root_with_units();
    let root = g.root();
    let o = run(root, &["arm", "--export", "/srv/vm.img"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let marker = g.path("/var/lib/cloudprep/premigrate-armed");
    assert!(marker.is_file());

    // The unit's ExecStop= when the system is not shutting down (a manual stop, a package removal):
    // nothing happens and the machine stays armed. (This host's systemd is not running: "offline".)
    let o = run(
        root,
        &["premigrate"],
        Some(("CLOUDPREP_INVOKED_BY", PREMIGRATE)),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to do"), "{}", text(&o));
    assert!(marker.is_file());
    assert!(!g.path("/var/lib/cloudprep/premigrate-report.json").exists());

    // Run by hand: the whole sequence (fix may not be able to do everything on a minimal root).
    let o = run(root, &["premigrate"], None);
    let code = o.status.code().unwrap();
    assert!((0..=3).contains(&code), "{}", text(&o));
    for r in ["premigrate-audit.json", "premigrate-report.json"] {
        let v: serde_json::Value =
            serde_json::from_str(&g.read(&format!("/var/lib/cloudprep/{r}"))).unwrap();
        common::validate_report(&v);
    }
    let summary: serde_json::Value =
        serde_json::from_str(&g.read("/var/lib/cloudprep/premigrate-summary.json")).unwrap();
    let after = summary["audit_after_exit"].as_i64().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&g.read("/var/lib/cloudprep/premigrate-report.json")).unwrap();
    assert!((0..=2).contains(&after));
    // Disarmed, so the exported image does not migrate again at its first shutdown in the cloud.
    assert!(!marker.exists());
    assert!(wants(root, PREMIGRATE).symlink_metadata().is_err());
    assert!(!g.path("/etc/systemd/system/poweroff.target.d").exists());
    // First boot armed exactly when no blocker is left; never an export from an offline root.
    let ready = after < 2;
    assert_eq!(summary["firstboot_armed"], ready, "{summary}\n{report}");
    assert_eq!(
        g.path("/var/lib/cloudprep/firstboot-armed").is_file(),
        ready
    );
    assert_eq!(wants(root, FIRSTBOOT).symlink_metadata().is_ok(), ready);
    let export = summary["export"].as_str().unwrap();
    assert!(export.starts_with("skipped:"), "{export}");
}

#[test]
fn firstboot_runs_once_on_an_offline_root() {
    common::require_root();
    let g = root_with_units();
    let root = g.root();
    // Not armed: nothing.
    let o = run(root, &["firstboot"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!g.path("/var/lib/cloudprep/firstboot-report.json").exists());

    g.write("/var/lib/cloudprep/firstboot-armed", "# test\n");
    std::fs::create_dir_all(wants(root, FIRSTBOOT).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/cloudprep-firstboot.service",
        wants(root, FIRSTBOOT),
    )
    .unwrap();
    let o = run(root, &["firstboot"], None);
    let out = text(&o);
    assert!(matches!(o.status.code(), Some(0..=2)), "{out}");
    // grub-pc is not in a minbase root: the GRUB step says so instead of failing.
    assert!(out.contains("grub: skipped"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&g.read("/var/lib/cloudprep/firstboot-report.json")).unwrap();
    common::validate_report(&v);
    assert!(!g.path("/var/lib/cloudprep/firstboot-armed").exists());
    assert!(wants(root, FIRSTBOOT).symlink_metadata().is_err());
    // Once only.
    std::fs::remove_file(g.path("/var/lib/cloudprep/firstboot-report.json")).unwrap();
    let o = run(root, &["firstboot"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(!g.path("/var/lib/cloudprep/firstboot-report.json").exists());
}

/// Boot the guest with systemd as PID 1 in a container (systemd-nspawn, private network) until it powers
/// off by itself; `driver` is the ExecStart= list of a unit run at the end of the boot.
fn boot_container(root: &Path, driver: &[&str]) -> String {
    let mut unit = String::from(
        "[Unit]\nAfter=cloudprep-premigrate.service multi-user.target\n[Service]\nType=oneshot\n",
    );
    for d in driver {
        unit.push_str(&format!("ExecStart={d}\n"));
    }
    unit.push_str("[Install]\nWantedBy=multi-user.target\n");
    std::fs::write(root.join("etc/systemd/system/test-driver.service"), unit).unwrap();
    let link = root.join("etc/systemd/system/multi-user.target.wants/test-driver.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/test-driver.service", &link).unwrap();
    let o = Command::new("timeout")
        .args([
            "180",
            "systemd-nspawn",
            "-q",
            "-b",
            "--register=no",
            "--keep-unit",
        ])
        .args(["--private-network", "--console=pipe", "-D"])
        .arg(root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running systemd-nspawn");
    assert_ne!(
        o.status.code(),
        Some(124),
        "the container did not shut down:\n{}",
        text(&o)
    );
    let j = Command::new("journalctl")
        .arg("-D")
        .arg(root.join("var/log/journal"))
        .args(["--no-pager", "-o", "cat"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&j.stdout).into_owned()
}

/// The units under a real systemd (252, in a container): a manual stop and a reboot do not migrate; a
/// power-off runs the sequence, disarms it and arms the first boot, which does not run outside KVM.
#[test]
fn premigrate_unit_under_systemd_runs_only_at_poweroff() {
    common::require_root();
    if Command::new("systemd-nspawn")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-nspawn missing: ./x.sh setup installs systemd-container");
    }
    let guest = common::Guest::release("bookworm", "vm");
    let root = guest.root().to_path_buf();
    let name = deb().file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(deb(), root.join("tmp").join(&name)).unwrap();
    chroot_ok(&root, &["dpkg", "-i", &format!("/tmp/{name}")]);
    {
        // cloudprep checks every directory it writes through /proc/self/fd, as on any running system.
        let proc_dir = root.join("proc");
        sh("mount", &["-t", "proc", "proc", proc_dir.to_str().unwrap()]);
        let _proc = Mounted(proc_dir);
        chroot_ok(&root, &["cloudprep", "arm"]);
    }
    let state = root.join("var/lib/cloudprep");
    let marker = state.join("premigrate-armed");

    // Boot 1: a manual stop (and start) of the unit, then a reboot: nothing happens, still armed.
    let j = boot_container(
        &root,
        &[
            "/bin/systemctl stop cloudprep-premigrate.service",
            "/bin/systemctl start cloudprep-premigrate.service",
            "/bin/systemctl reboot --no-block",
        ],
    );
    assert!(
        j.contains("nothing to do: the system is not shutting down"),
        "{j}"
    );
    assert!(j.contains("this shutdown is a reboot"), "{j}");
    assert!(marker.is_file(), "disarmed by a stop or a reboot:\n{j}");
    assert!(!state.join("premigrate-report.json").exists(), "{j}");

    // Boot 2: power-off: audit, fix, audit, reports, first boot armed, pre-migration disarmed.
    let j = boot_container(&root, &["/bin/systemctl poweroff --no-block"]);
    assert!(j.contains("cloudprep premigrate: auditing /"), "{j}");
    assert!(!marker.exists(), "{j}");
    assert!(wants(&root, PREMIGRATE).symlink_metadata().is_err());
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("premigrate-summary.json")).unwrap(),
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("premigrate-report.json")).unwrap(),
    )
    .unwrap();
    common::validate_report(&report);
    assert_eq!(summary["export"], "none");
    let ready = summary["audit_after_exit"].as_i64().unwrap() < 2;
    assert_eq!(state.join("firstboot-armed").is_file(), ready, "{summary}");

    // Boot 3: not KVM (a container): the first-boot unit's condition keeps it from running.
    if ready {
        let j = boot_container(&root, &["/bin/systemctl poweroff --no-block"]);
        assert!(state.join("firstboot-armed").is_file(), "{j}");
        assert!(!state.join("firstboot-report.json").exists(), "{j}");
        assert!(!j.contains("cloudprep firstboot:"), "{j}");
    }
}
