//! Shared test harness: real debootstrap roots, loop-device disk images, running the binary, and
//! validating JSON reports against docs/report.schema.json.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod fleet;
pub mod legacy;
pub mod loopdev;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloudprep"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Tests never pass by doing nothing: without root (loop devices, mounts, chroot) they fail, saying so.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (loop devices, mounts, the guest's chroot): run the suite as root, through \
         scripts/test.sh"
    );
}

/// A tmpfs of `size` mounted at a directory (created), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(target: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(target).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                target.to_str().unwrap(),
            ],
        );
        Tmpfs(target.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// Fail loudly when a program the test needs is not installed (x.sh installs `package`).
pub fn require_tool(prog: &str, package: &str) {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| Path::new(d).join(prog).is_file());
    assert!(
        found,
        "{prog} is not installed: this test needs it (package {package}, installed by x.sh)"
    );
}

/// A real Debian root filesystem unpacked from the cached debootstrap tarball (scripts/mkroot.sh).
pub struct Guest {
    pub dir: tempfile::TempDir,
}

impl Guest {
    /// A bookworm root with a kernel, grub-pc, ifupdown, openssh-server and initramfs-tools.
    pub fn bookworm() -> Guest {
        Guest::release("bookworm", "vm")
    }

    pub fn release(release: &str, variant: &str) -> Guest {
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-guest.")
            .tempdir_in(scratch())
            .unwrap();
        let st = Command::new(repo().join("scripts/mkroot.sh"))
            .args([release, dir.path().to_str().unwrap(), variant])
            .status()
            .expect("running scripts/mkroot.sh");
        assert!(st.success(), "scripts/mkroot.sh {release} failed");
        Guest { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of a guest path.
    pub fn path(&self, guest: &str) -> PathBuf {
        self.dir.path().join(guest.trim_start_matches('/'))
    }

    pub fn write(&self, guest: &str, content: &str) {
        let p = self.path(guest);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }

    pub fn read(&self, guest: &str) -> String {
        std::fs::read_to_string(self.path(guest)).unwrap_or_else(|e| panic!("reading {guest}: {e}"))
    }

    pub fn remove(&self, guest: &str) {
        let p = self.path(guest);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else if p.exists() || p.is_symlink() {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Run cloudprep with `--root` pointing at this guest.
    pub fn cloudprep(&self, args: &[&str]) -> Output {
        run_cloudprep(self.root(), args)
    }

    /// `cloudprep audit --format json`; returns the exit code and the report (validated against the schema).
    pub fn audit_json(&self, extra: &[&str]) -> (i32, serde_json::Value) {
        audit_json(self.root(), extra)
    }
}

/// A debootstrap root unpacked onto a real ext3 filesystem on a loop device, mounted at `guest.root()`.
/// Field order matters: the disk (and its mount) is dropped before the mountpoint directory.
pub struct DiskGuest {
    pub disk: loopdev::LoopDisk,
    pub guest: Guest,
    pub root_uuid: String,
    pub swap_uuid: String,
}

impl DiskGuest {
    /// MBR disk: partition 1 ext3 (the root, as the old guest's fstab says), partition 2 swap.
    pub fn new(release: &str, variant: &str) -> DiskGuest {
        let mut disk = loopdev::LoopDisk::new(3072, "label: dos\n,2600M,L,*\n,,S\n");
        let root_uuid = "6b1f6f2e-8d7c-4a1e-b0a4-2f6f0f3c9e11".to_string();
        let swap_uuid = "0d4b3a1c-5e6f-4a7b-8c9d-0e1f2a3b4c5d".to_string();
        sh(
            "mkfs.ext3",
            &["-q", "-F", "-U", &root_uuid, "-L", "rootfs", &disk.part(1)],
        );
        sh("mkswap", &["-U", &swap_uuid, &disk.part(2)]);
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-mnt.")
            .tempdir_in(scratch())
            .unwrap();
        disk.mount(&disk.part(1), dir.path(), &[]);
        let st = Command::new(repo().join("scripts/mkroot.sh"))
            .args([release, dir.path().to_str().unwrap(), variant])
            .status()
            .expect("running scripts/mkroot.sh");
        assert!(st.success(), "scripts/mkroot.sh {release} failed");
        DiskGuest {
            disk,
            guest: Guest { dir },
            root_uuid,
            swap_uuid,
        }
    }
}

/// Checksums, modes and owners of every file under `dirs` of a root (symlink targets included), for
/// byte-identical comparisons; paths under `skip` prefixes are left out.
pub fn tree_state(
    root: &Path,
    dirs: &[&str],
    skip: &[&str],
) -> std::collections::BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack: Vec<PathBuf> = dirs
        .iter()
        .map(|d| root.join(d.trim_start_matches('/')))
        .collect();
    while let Some(p) = stack.pop() {
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let what = if m.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
            "dir".to_string()
        } else if m.is_file() {
            format!(
                "file {}",
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
            )
        } else {
            "special".to_string()
        };
        out.insert(
            rel,
            format!("{what} mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid()),
        );
    }
    out
}

/// Where big test trees go (not tmpfs: roots are ~700 MB).
pub fn scratch() -> PathBuf {
    let p = PathBuf::from(std::env::var("CLOUDPREP_SCRATCH").unwrap_or_else(|_| "/var/tmp".into()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn run_cloudprep(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .arg("--root")
        .arg(root)
        .arg("--color")
        .arg("never");
    cmd.output().expect("running cloudprep")
}

pub fn audit_json(root: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["audit", "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_cloudprep(root, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit JSON did not parse: {e}\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    validate_report(&v);
    (out.status.code().unwrap_or(-1), v)
}

/// Validate a report against docs/report.schema.json; panics with every violation.
pub fn validate_report(v: &serde_json::Value) {
    validate_schema("docs/report.schema.json", v);
}

/// Validate JSON against a schema file of the repository; panics with every violation.
pub fn validate_schema(schema_file: &str, v: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(schema_file)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "JSON does not match {schema_file}:\n{}",
        errors.join("\n")
    );
}

/// The .deb built by packaging/build-deb.sh into `target/deb-test` (the musl LTO build is the slow part;
/// cargo reuses it when nothing changed).
pub fn build_deb() -> PathBuf {
    let out = repo().join("target/deb-test");
    let o = Command::new(repo().join("packaging/build-deb.sh"))
        .arg(&out)
        .output()
        .expect("running packaging/build-deb.sh");
    assert!(
        o.status.success(),
        "build-deb.sh failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string());
    let p = if p.is_absolute() { p } else { repo().join(p) };
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// Findings of a report with the given check id.
pub fn findings<'a>(report: &'a serde_json::Value, id: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .collect()
}

/// Assert that the report has exactly `n` findings with check id `id` (all findings shown when not).
pub fn assert_findings(report: &serde_json::Value, id: &str, n: usize) {
    assert_eq!(
        findings(report, id).len(),
        n,
        "{id}: {:#}",
        report["findings"]
    );
}

/// Does the report have a finding `id` with evidence at `path` (and `line`, when given)?
pub fn has_evidence(report: &serde_json::Value, id: &str, path: &str, line: Option<u64>) -> bool {
    findings(report, id).iter().any(|f| {
        f["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == path && line.is_none_or(|l| e["line"] == l))
    })
}

/// Run a command, panicking with its output on failure.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The argv of each planned command in a JSON `commands` array.
pub fn argvs(commands: &serde_json::Value) -> Vec<Vec<String>> {
    commands
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Run an mtools command on `image` (`FILE`, `FILE@@OFFSET` or a device), with the geometry check off.
pub fn mtools(cmd: &str, image: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(image)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (x.sh installs mtools): {e}"))
}

/// [`mtools`], panicking with its output on failure; returns its standard output.
pub fn mt(cmd: &str, image: &str, args: &[&str]) -> String {
    let o = mtools(cmd, image, args);
    assert!(
        o.status.success(),
        "{cmd} -i {image} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A blocker finding planted by a test, carrying `fix`.
pub fn finding(id: &'static str, fix: cloudprep::checks::Fix) -> cloudprep::checks::Finding {
    use cloudprep::checks::{Area, CheckInfo, Finding, Severity};
    let info = CheckInfo {
        id,
        title: "test",
        area: Area::Platform,
        severity: Severity::Blocker,
        fixable: true,
    };
    Finding::new(&info, "planted by the test").fix(fix)
}

/// Mount points below `p` (in this process's namespace): none may be left after a command ran.
pub fn mounts_under(p: &Path) -> Vec<String> {
    let p = std::fs::canonicalize(p).unwrap().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&format!("{p}/")))
        .collect()
}
