//! Issue 13, points 4, 6 and 9 on real loop devices and real roots (needs root, qemu-img, btrfs-progs:
//! x.sh installs them; a missing one fails the test):
//! * export to a block device writes the device in place, checks its size, refuses mounted, held and
//!   source-disk devices, never creates a file in /dev; `arm --export /dev/...` and a relative `--export`;
//! * btrfs (anonymous device numbers) is seen by the consistency and same-disk checks;
//! * a corrupt ext4 superblock under `--consistency freeze` is an error of that partition, filesystems
//!   are thawed;
//! * an offline root with its /boot (or /var) partition not mounted: audit flags it, fix refuses;
//! * wrong input: unknown ids, `fix --dry-run --format json`, conflicting options, bad values.
mod common;

use common::loopdev::LoopDisk;
use common::sh;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn need_tools() {
    assert!(
        common::is_root(),
        "these tests need root (loop devices, mounts): run them as root"
    );
    for t in ["qemu-img", "mkfs.btrfs", "mke2fs", "sfdisk"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{t} is missing: install it (x.sh's package list)"
        );
    }
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    eprintln!(
        "cloudprep {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cloudprep-trust.")
        .tempdir_in(common::scratch())
        .unwrap()
}

fn dev_listing() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("cloudprep") || n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// A 64 MiB disk image with one ext4 partition holding files: the export source (not attached).
fn source_image(dir: &Path) -> PathBuf {
    let mut d = LoopDisk::new(64, "label: dos\nstart=2048, type=83\n");
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &d.part(1)]);
    let mnt = dir.join("src-mnt");
    d.mount(&d.part(1), &mnt, &[]);
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", mnt.join("random").display()),
            "bs=1M",
            "count=12",
            "status=none",
        ],
    );
    std::fs::write(mnt.join("hostname"), "oldvm\n").unwrap();
    d.unmount_all();
    let img = dir.join("source.img");
    std::fs::copy(&d.image, &img).unwrap();
    img
}

/// A loop device of `mib` MiB full of random bytes (stale content the export must not leave behind).
fn random_device(mib: u64) -> LoopDisk {
    let d = LoopDisk::new(mib, "");
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", d.dev),
            "bs=1M",
            &format!("count={mib}"),
            "conv=fsync",
            "status=none",
        ],
    );
    d
}

/// Exit 3 with `want` in the error.
fn assert_refused(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(3), "{}", stderr(o));
    assert!(stderr(o).contains(want), "wanted {want:?}: {}", stderr(o));
}

fn is_block(p: &str) -> bool {
    std::fs::metadata(p).unwrap().file_type().is_block_device()
}

#[test]
fn export_writes_a_block_device_in_place() {
    need_tools();
    let dir = scratch_dir();
    let src = source_image(dir.path());
    let src_s = src.to_str().unwrap();
    let t = random_device(80);
    let before = dev_listing();

    // raw: the first 64 MiB of the device are the disk byte for byte (zero runs zeroed, not skipped);
    // --verify reads it back.
    let o = run(&["export", "--source", src_s, "-o", &t.dev, "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("output         {}", t.dev)));
    assert!(is_block(&t.dev), "{} is no longer a block device", t.dev);
    assert_eq!(
        Command::new("cmp")
            .args(["-n", &(64u64 << 20).to_string(), src_s, &t.dev])
            .status()
            .unwrap()
            .code(),
        Some(0),
        "the device does not hold the disk"
    );

    // qcow2, plain and zstd-compressed (stale bytes after a compressed run must not reach QEMU).
    for extra in [
        &[][..],
        &["--compress", "zstd"][..],
        &["--compress", "zlib"][..],
    ] {
        sh(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={}", t.dev),
                "bs=1M",
                "count=80",
                "conv=fsync",
                "status=none",
            ],
        );
        let mut args = vec![
            "export", "--source", src_s, "--format", "qcow2", "-o", &t.dev,
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", stderr(&o));
        assert_eq!(
            common_status("qemu-img", &["check", "-q", "-f", "qcow2", &t.dev]),
            0,
            "{extra:?}: qemu-img check"
        );
        assert_eq!(
            common_status(
                "qemu-img",
                &["compare", "-q", "-f", "raw", "-F", "qcow2", src_s, &t.dev]
            ),
            0,
            "{extra:?}: qemu-img compare"
        );
        assert!(is_block(&t.dev));
    }
    assert_eq!(dev_listing(), before, "something was created in /dev");
}

fn common_status(cmd: &str, args: &[&str]) -> i32 {
    Command::new(cmd)
        .args(args)
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn block_device_targets_that_are_refused() {
    need_tools();
    let dir = scratch_dir();
    let src = source_image(dir.path());
    let src_s = src.to_str().unwrap();
    let before = dev_listing();

    // Too small for raw: refused before anything is written.
    let small = random_device(32);
    let head = std::fs::read(&small.image).unwrap()[..65536].to_vec();
    let o = run(&["export", "--source", src_s, "-o", &small.dev]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("holds 33554432 bytes") && stderr(&o).contains("needs 67108864"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&small.image).unwrap()[..65536], head[..]);
    // qcow2 of more data than the device holds: a clear error naming the device.
    let tiny = random_device(8);
    let o = run(&[
        "export", "--source", src_s, "--format", "qcow2", "-o", &tiny.dev,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(&format!("does not fit on {}", tiny.dev)),
        "{}",
        stderr(&o)
    );
    assert!(is_block(&tiny.dev));

    // Mounted (its partition): refused, naming the mount; the kernel's exclusive open agrees.
    let mut m = LoopDisk::new(96, "label: dos\nstart=2048, type=83\n");
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &m.part(1)]);
    let mnt = dir.path().join("target-mnt");
    m.mount(&m.part(1), &mnt, &[]);
    for target in [m.dev.clone(), m.part(1)] {
        let o = run(&["export", "--source", src_s, "-o", &target]);
        assert_eq!(o.status.code(), Some(3), "{target}");
        assert!(
            stderr(&o).contains("is mounted on") && stderr(&o).contains(mnt.to_str().unwrap()),
            "{target}: {}",
            stderr(&o)
        );
    }
    m.unmount_all();

    // The source disk itself, or a partition of it.
    let s = LoopDisk::attach(&src);
    for target in [s.dev.clone(), s.part(1)] {
        let o = run(&["export", "--source", &s.dev, "-o", &target]);
        assert_eq!(o.status.code(), Some(3), "{target}");
        let e = stderr(&o);
        assert!(
            e.contains("onto the source") || e.contains("on the disk being exported"),
            "{target}: {e}"
        );
    }
    drop(s);

    // A /dev path that is not an existing block device: never a file in /dev; not a character device.
    for target in ["/dev/cloudprep-no-such-disk", "/dev/null"] {
        let o = run(&["export", "--source", src_s, "-o", target]);
        assert_eq!(o.status.code(), Some(3), "{target}");
        assert!(
            stderr(&o).contains("must be an existing block device")
                || stderr(&o).contains("neither a regular file nor a block device"),
            "{target}: {}",
            stderr(&o)
        );
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(dev_listing(), before, "something was created in /dev");
}

#[test]
fn arm_export_to_a_device_and_a_relative_path() {
    need_tools();
    let g = common::Guest::release("bookworm", "min");
    for u in [
        "cloudprep-premigrate.service",
        "cloudprep-firstboot.service",
    ] {
        g.write(
            &format!("/lib/systemd/system/{u}"),
            &std::fs::read_to_string(common::repo().join("systemd").join(u)).unwrap(),
        );
    }
    let marker = || -> toml::Value {
        toml::from_str(&g.read("/var/lib/cloudprep/premigrate-armed")).unwrap()
    };
    let arm = |cwd: &Path, args: &[&str]| {
        Command::new(common::bin())
            .arg("arm")
            .args(args)
            .arg("--root")
            .arg(g.root())
            .current_dir(cwd)
            .env_remove("CLOUDPREP_INVOKED_BY")
            .output()
            .unwrap()
    };
    let dir = scratch_dir();
    let t = random_device(80);

    // A device: stored as given, no mount drop-in (a device is not a mounted file system).
    let o = arm(dir.path(), &["--export", &t.dev, "--format", "qcow2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = marker();
    assert_eq!(m["export_output"].as_str(), Some(t.dev.as_str()));
    assert_eq!(m["export_format"].as_str(), Some("qcow2"));
    assert!(!g
        .path("/etc/systemd/system/cloudprep-premigrate.service.d")
        .join("cloudprep-premigrate.conf")
        .exists());
    // The export the armed unit plans (premigrate runs `export` with the marker's settings; its source
    // is the running disk, here an image): the device is written in place.
    let src = source_image(dir.path());
    let o = run(&[
        "export",
        "--source",
        src.to_str().unwrap(),
        "--format",
        m["export_format"].as_str().unwrap(),
        "-o",
        m["export_output"].as_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(is_block(&t.dev));
    assert_eq!(
        common_status(
            "qemu-img",
            &[
                "compare",
                "-q",
                "-f",
                "raw",
                "-F",
                "qcow2",
                src.to_str().unwrap(),
                &t.dev
            ]
        ),
        0
    );

    // A relative path is made absolute against the directory arm runs in (the unit runs in /).
    let o = arm(dir.path(), &["--export", "images/vm.raw"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = dir.path().join("images/vm.raw");
    assert_eq!(
        marker()["export_output"].as_str(),
        Some(want.to_str().unwrap())
    );
    let dropin =
        g.read("/etc/systemd/system/cloudprep-premigrate.service.d/cloudprep-premigrate.conf");
    assert!(
        dropin.contains(&format!(
            "RequiresMountsFor={}",
            dir.path().join("images").display()
        )),
        "{dropin}"
    );
    // Empty: refused.
    let o = arm(dir.path(), &["--export", ""]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn btrfs_mounts_are_seen_by_consistency_and_output_checks() {
    need_tools();
    let dir = scratch_dir();
    let mut d = LoopDisk::new(256, "label: gpt\nstart=2048, size=220MiB\n");
    sh("mkfs.btrfs", &["-q", "-f", &d.part(1)]);
    let mnt = dir.path().join("btrfs");
    d.mount(&d.part(1), &mnt, &[]);
    std::fs::write(mnt.join("data"), "btrfs content\n").unwrap();
    // mountinfo reports an anonymous device number for btrfs.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi
        .lines()
        .find(|l| l.contains(&format!(" {} ", mnt.display())))
        .unwrap();
    assert!(line.split(' ').nth(2).unwrap().starts_with("0:"), "{line}");

    let out = dir.path().join("out.raw");
    // Mounted read-write: a consistency mode is required.
    let o = run(&["export", "--source", &d.dev, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("mounted read-write") && stderr(&o).contains(mnt.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    // freeze: the btrfs mount is frozen, and thawed after.
    let o = run(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "freeze",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("froze {}", mnt.display())),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains(&format!("consistency    freeze ({})", mnt.display())),
        "{}",
        stdout(&o)
    );
    std::fs::write(mnt.join("after"), "writable again\n").unwrap();
    // The output on the btrfs filesystem of the source disk: refused.
    let inside = mnt.join("image.raw");
    let o = run(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "freeze",
        "-o",
        inside.to_str().unwrap(),
    ]);
    assert_refused(&o, "onto the disk being exported");
    assert!(!inside.exists());
    // -o - into a file on it: refused too (it would block on the frozen filesystem).
    let f = std::fs::File::create(mnt.join("stdout.raw")).unwrap();
    let o = Command::new(common::bin())
        .args([
            "export",
            "--source",
            &d.dev,
            "--consistency",
            "freeze",
            "-o",
            "-",
        ])
        .stdout(Stdio::from(f))
        .output()
        .unwrap();
    assert_refused(&o, "standard output is a file on");
}

#[test]
fn corrupt_ext4_superblock_under_freeze_is_an_error_and_thaws() {
    need_tools();
    let dir = scratch_dir();
    let mut d = LoopDisk::new(
        128,
        "label: dos\nstart=2048, size=100MiB, type=83\nstart=206848, type=83\n",
    );
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &d.part(1)]);
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &d.part(2)]);
    // s_first_data_block = 0xffffffff in partition 2's superblock.
    let p2 = std::fs::read_to_string(format!(
        "/sys/class/block/{}/start",
        d.part(2).trim_start_matches("/dev/")
    ))
    .unwrap()
    .trim()
    .parse::<u64>()
    .unwrap()
        * 512;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d.dev)
            .unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), p2 + 1024 + 0x14)
            .unwrap();
        f.sync_all().unwrap();
    }
    let mnt = dir.path().join("mnt");
    d.mount(&d.part(1), &mnt, &[]);
    let out = dir.path().join("out.qcow2");
    let o = run(&[
        "export",
        "--source",
        &d.dev,
        "--format",
        "qcow2",
        "--consistency",
        "freeze",
        "-o",
        out.to_str().unwrap(),
    ]);
    // The partition is copied whole (its superblock is not trusted), the export completes.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("partition 2") && stderr(&o).contains("implausible first data block"),
        "{}",
        stderr(&o)
    );
    // Thawed: a write completes.
    let st = Command::new("timeout")
        .args([
            "10",
            "sh",
            "-c",
            &format!(
                "echo x > {}/probe && sync -f {}/probe",
                mnt.display(),
                mnt.display()
            ),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "the filesystem stayed frozen");
    // Partition 2 (untrusted superblock) is in the image byte for byte.
    d.unmount_all();
    let back = dir.path().join("back.raw");
    let (o, b) = (out.to_str().unwrap(), back.to_str().unwrap());
    sh("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", o, b]);
    let len = 128u64 * 1024 * 1024 - p2;
    assert_eq!(
        common_status(
            "cmp",
            &[
                &format!("--ignore-initial={p2}:{p2}"),
                &format!("--bytes={len}"),
                b,
                &d.dev
            ]
        ),
        0,
        "partition 2 differs in the image"
    );
}

/// A bookworm root on a loop disk: partition 1 is /boot, partition 2 is /; the guest's fstab mounts both.
struct SplitBoot {
    disk: LoopDisk,
    mnt: tempfile::TempDir,
}

fn split_boot_root() -> SplitBoot {
    let mnt = tempfile::Builder::new()
        .prefix("cloudprep-mnt.")
        .tempdir_in(common::scratch())
        .unwrap();
    let mut disk = LoopDisk::new(
        1200,
        "label: dos\nstart=2048, size=200MiB, type=83\nstart=411648, type=83\n",
    );
    let (p1, p2) = (disk.part(1), disk.part(2));
    sh(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext2",
            "-U",
            "0b007000-0000-4000-8000-000000000001",
            &p1,
        ],
    );
    sh(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-U",
            "0b007000-0000-4000-8000-000000000002",
            &p2,
        ],
    );
    disk.mount(&p2, mnt.path(), &[]);
    let st = Command::new(common::repo().join("scripts/mkroot.sh"))
        .args(["bookworm", mnt.path().to_str().unwrap(), "min"])
        .status()
        .unwrap();
    assert!(st.success(), "scripts/mkroot.sh failed");
    // /boot's content moves to its own filesystem; the directory on / stays empty, as installed.
    let staging = mnt.path().join("boot-staging");
    disk.mount(&p1, &staging, &[]);
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "cp -a {b}/. {s}/ && rm -rf {b} && mkdir {b}",
                b = mnt.path().join("boot").display(),
                s = staging.display()
            ),
        ],
    );
    disk.unmount_all();
    std::fs::remove_dir(&staging).ok();
    disk.mount(&p2, mnt.path(), &[]);
    std::fs::remove_dir(mnt.path().join("boot-staging")).ok();
    std::fs::write(
        mnt.path().join("etc/fstab"),
        "UUID=0b007000-0000-4000-8000-000000000002 / ext4 errors=remount-ro 0 1\n\
         UUID=0b007000-0000-4000-8000-000000000001 /boot ext2 defaults 0 2\n",
    )
    .unwrap();
    SplitBoot { disk, mnt }
}

#[test]
fn offline_root_with_its_boot_partition_not_mounted() {
    need_tools();
    let mut r = split_boot_root();
    let root = r.mnt.path().to_path_buf();
    // Only / is mounted: the audit flags /boot (blocker, evidence the fstab line).
    let (code, rep) = common::audit_json(&root, &[]);
    assert_eq!(code, 2);
    common::validate_report(&rep);
    let f = common::findings(&rep, "storage.offline-mounts");
    assert_eq!(f.len(), 1, "{rep:#}");
    assert_eq!(f[0]["severity"], "blocker");
    assert!(f[0]["message"].as_str().unwrap().contains("/boot"));
    assert!(common::has_evidence(
        &rep,
        "storage.offline-mounts",
        "/etc/fstab",
        Some(2)
    ));
    // fix refuses, naming the mount and the fstab line, and changes nothing (no run, no journal).
    let o = common::run_cloudprep(&root, &["fix", "--yes"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("line 2")
            && e.contains("on /boot")
            && e.contains(&format!(
                "nothing is mounted at /boot (under {})",
                root.display()
            )),
        "{e}"
    );
    assert!(!root.join("var/lib/cloudprep/runs").exists());
    assert_eq!(std::fs::read_dir(root.join("boot")).unwrap().count(), 0);
    // A dry run is allowed (it changes nothing) and shows the plan.
    let o = common::run_cloudprep(&root, &["fix", "--dry-run"]);
    assert_ne!(o.status.code(), Some(3), "{}", stderr(&o));

    // A separate /var not mounted: refused before anything (the journal lives there).
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        format!("{fstab}/dev/sdb9 /var ext4 defaults 0 2\n"),
    )
    .unwrap();
    let o = common::run_cloudprep(&root, &["fix", "--yes"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("/dev/sdb9 on /var"), "{}", stderr(&o));
    std::fs::write(root.join("etc/fstab"), &fstab).unwrap();

    // With /boot mounted there, the finding is gone.
    let p1 = r.disk.part(1);
    r.disk.mount(&p1, &root.join("boot"), &[]);
    let (_, rep) = common::audit_json(&root, &[]);
    assert!(
        common::findings(&rep, "storage.offline-mounts").is_empty(),
        "{rep:#}"
    );
    r.disk.unmount_all();
}

#[test]
fn wrong_selection_and_options_are_refused() {
    need_tools();
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["audit", "--only", "nosuch"], "`nosuch` is not a check id"),
        (&["audit", "--only", ""], "empty check id"),
        (
            &["audit", "--only", "boot.grub"],
            "nearest: boot.grub-install",
        ),
        (
            &["audit", "--skip", "network.udev-persistant-net"],
            "nearest: network.udev-persistent-net",
        ),
        (
            &["fix", "--yes", "--only", "nosuch"],
            "`nosuch` is not a check id",
        ),
        (
            &["fix", "--dry-run", "--skip", "platform.archh"],
            "nearest: platform.arch",
        ),
    ];
    for (args, want) in cases {
        let o = common::run_cloudprep(root, args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // Prefixes, area names and ids still select.
    for only in [
        "boot.",
        "boot",
        "fstab",
        "boot.grub-installed",
        "network.,cloud-init.",
    ] {
        let o = common::run_cloudprep(root, &["audit", "--only", only]);
        assert!(o.status.code().unwrap() < 3, "{only}: {}", stderr(&o));
    }
    // The configuration: [checks] skip and [waivers] with unknown ids, enumerated values.
    let cfg = root.join("etc/cloudprep/cloudprep.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    for (text, want) in [
        (
            "[checks]\nskip = [\"nosuch.\"]\n",
            "[checks] skip: `nosuch.`",
        ),
        (
            "[waivers]\n\"firewall.ssh\" = \"x\"\n",
            "nearest: network.firewall-ssh",
        ),
        ("[cloud]\ndisk_bus = \"virtio-scsi\"\n", "virtio-scsi"),
        ("[export]\nformat = \"vmdk\"\n", "vmdk"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = common::run_cloudprep(root, &["audit"]);
        assert_eq!(o.status.code(), Some(3), "{text}");
        assert!(
            stderr(&o).contains(want) && stderr(&o).contains("cloudprep.toml"),
            "{text}: {}",
            stderr(&o)
        );
    }
    std::fs::remove_file(&cfg).unwrap();
    // Conflicting or out-of-range options: clap errors, exit 3.
    for args in [
        &[
            "upload",
            "--file",
            "/nonexistent.raw",
            "--consistency",
            "freeze",
        ][..],
        &[
            "upload",
            "--file",
            "/nonexistent.raw",
            "--source",
            "/dev/sda",
        ][..],
        &["export", "--threads", "0", "-o", "/nonexistent/x.raw"][..],
        &["export", "--threads", "65", "-o", "/nonexistent/x.raw"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert!(stderr(&o).starts_with("error:"), "{args:?}: {}", stderr(&o));
    }
    // An invalid freeze timeout is an error, not one hour.
    let img = d.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let o = Command::new(common::bin())
        .args(["export", "--source", img.to_str().unwrap(), "-o", "-"])
        .stdout(Stdio::piped())
        .env("CLOUDPREP_FREEZE_TIMEOUT", "abc")
        .output()
        .unwrap();
    assert_refused(&o, "CLOUDPREP_FREEZE_TIMEOUT");
}

#[test]
fn fix_dry_run_json_is_the_plan() {
    need_tools();
    // A minimal root without cloud-init: the plan installs it and writes its datasource.
    let g = common::Guest::release("bookworm", "min");
    let cfg = "/etc/cloud/cloud.cfg.d/90_dpkg.cfg";
    assert!(!g.path(cfg).exists());
    let o = g.cloudprep(&["fix", "--dry-run", "--format", "json"]);
    assert!(o.status.code().unwrap() < 3, "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("fix --dry-run --format json prints JSON");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("docs/fix-plan.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{v:#}");
    assert_eq!(v["changes"], true);
    let file = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == cfg)
        .unwrap_or_else(|| panic!("no plan for {cfg}: {v:#}"));
    assert_eq!(file["action"], "create");
    assert!(
        file["diff"].as_str().unwrap().contains("+datasource_list"),
        "{file:#}"
    );
    assert!(file["findings"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("cloud-init.datasource")));
    let install = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["argv"] == serde_json::json!(["apt-get", "install", "-y", "cloud-init"]))
        .unwrap_or_else(|| panic!("no cloud-init install: {v:#}"));
    assert_eq!(install["phase"], "pre");
    // Nothing was changed.
    assert!(!g.path(cfg).exists());
    assert!(!g.path("/var/lib/cloudprep/runs").exists());
    // A selection that plans nothing: changes false, empty lists.
    let o = g.cloudprep(&[
        "fix",
        "--dry-run",
        "--format",
        "json",
        "--only",
        "platform.arch",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"changes": false, "files": [], "commands": []})
    );
}
