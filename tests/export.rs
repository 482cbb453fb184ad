//! `cloudprep export` on real loop-device disks (needs root): MBR and GPT images with ext4 (files, then
//! deleted data), a used swap partition, a vfat ESP, logical partitions, an LVM PV. Every output is
//! checked with QEMU's tools (qemu-img check / compare / convert), against the source (no fs-skip) or
//! against a reference with free blocks zeroed (e2image -ra, swap after the header page punched out).
//!
//! LVM logical volumes cannot be activated in this container (no device-mapper in the kernel), so the
//! LVM partition is only a PV (read and zero-detected); the dm/LVM walk of `--source auto` is covered by
//! the unit test on a synthetic sysfs tree.
mod common;

use common::loopdev::LoopDisk;
use common::sh;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PATTERN: &str = "CLOUDPREP-DELETED-DATA-PATTERN-7f3a9c\n";
const SWAP_UUID: &str = "0b5e7d2c-4a1f-4c3e-9d8b-1234567890ab";

/// These tests need root (loop devices, mounts) and qemu-img (x.sh installs qemu-utils): without them
/// they fail, they never pass silently.
fn need_root_and_qemu_img() {
    assert!(
        common::is_root(),
        "tests/export.rs needs root (loop devices, mounts): run it as root"
    );
    assert!(
        Command::new("qemu-img").arg("--version").output().is_ok(),
        "tests/export.rs needs qemu-img (apt-get install qemu-utils, as x.sh setup does)"
    );
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    eprintln!(
        "cloudprep {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn export_ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.status.code(), Some(0), "export {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(cmd: &str, args: &[&str]) -> i32 {
    Command::new(cmd)
        .args(args)
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

/// A partition's (offset, length) in bytes, from sysfs.
fn part_range(d: &LoopDisk, n: u32) -> (u64, u64) {
    let name = d.part(n).trim_start_matches("/dev/").to_string();
    let rd = |f: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/block/{name}/{f}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (rd("start") * 512, rd("size") * 512)
}

/// Populate an ext4 partition: kept files, and a recognisable pattern written, synced and deleted.
fn fill_ext4(d: &mut LoopDisk, n: u32, mkfs: &[&str], mnt: &Path) {
    let dev = d.part(n);
    let mut args = vec!["-q", "-F", "-t", "ext4"];
    args.extend_from_slice(mkfs);
    args.push(&dev);
    sh("mke2fs", &args);
    d.mount(&dev, mnt, &[]);
    std::fs::create_dir_all(mnt.join("etc")).unwrap();
    std::fs::write(mnt.join("etc/hostname"), "oldvm\n").unwrap();
    sh(
        "cp",
        &[
            "-a",
            "/usr/share/doc/bash",
            mnt.join("doc").to_str().unwrap(),
        ],
    );
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", mnt.join("keep.bin").display()),
            "bs=1M",
            "count=3",
            "status=none",
        ],
    );
    let p = PATTERN.repeat((12 << 20) / PATTERN.len());
    std::fs::write(mnt.join("deleted.txt"), p).unwrap();
    sh("sync", &[]);
    std::fs::remove_file(mnt.join("deleted.txt")).unwrap();
    sh("sync", &[]);
    d.unmount_all();
}

/// A one-partition MBR loop disk of `mib` MiB with an empty ext4 mounted at `dir/mnt`.
fn mounted_ext4(mib: u64, dir: &Path) -> (LoopDisk, PathBuf) {
    let mut d = LoopDisk::new(mib, "label: dos\nstart=2048, type=83\n");
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &d.part(1)]);
    let mnt = dir.join("mnt");
    d.mount(&d.part(1), &mnt, &[]);
    (d, mnt)
}

fn fill_swap(d: &LoopDisk, n: u32) {
    let dev = d.part(n);
    sh("mkswap", &["-U", SWAP_UUID, &dev]);
    // Pages swapped out by the old VM: data after the header page.
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={dev}"),
            "bs=4096",
            "seek=1",
            "count=2048",
            "status=none",
        ],
    );
    let pat = PATTERN.repeat(4096 / PATTERN.len() * 64);
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, pat.as_bytes(), 3 << 20).unwrap();
}

/// An ESP: vfat made by mkfs.vfat. The kernel here has no vfat driver (and mtools is not installed), so
/// "file" data is written into its data area directly; the exporter reads and zero-detects vfat anyway.
fn fill_vfat(d: &mut LoopDisk, n: u32, _mnt: &Path) {
    let dev = d.part(n);
    sh("mkfs.vfat", &[&dev]);
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={dev}"),
            "bs=64K",
            "seek=64",
            "count=8",
            "status=none",
        ],
    );
}

/// LVM commands seeing only `dev` (other loop devices on the machine are not scanned), with no udev,
/// no metadata backups in the host's /etc/lvm, and no device-mapper (this kernel has none: LVs are
/// created without activation).
fn lvm(cmd: &str, dev: &str, args: &[&str]) -> String {
    let cfg = format!(
        "devices {{ filter=[\"a|^{dev}$|\",\"r|.*|\"] global_filter=[\"a|^{dev}$|\",\"r|.*|\"] \
         obtain_device_list_from_udev=0 }} activation {{ udev_sync=0 udev_rules=0 }} \
         backup {{ backup=0 archive=0 }}"
    );
    let mut a = vec!["--config", &cfg, "--driverloaded", "n"];
    a.extend_from_slice(args);
    let out = Command::new(cmd)
        .args(&a)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a byte range of another device; detached on drop.
struct Window(String);

impl Window {
    fn new(dev: &str, off: u64, len: u64) -> Window {
        let w = sh(
            "losetup",
            &[
                "-f",
                "--show",
                "-o",
                &off.to_string(),
                "--sizelimit",
                &len.to_string(),
                dev,
            ],
        );
        Window(w.trim().to_string())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// An LVM PV on partition `n` with VG `vg` and one LV `lv0` holding an ext4 filesystem with files.
/// The LV cannot be activated (no device-mapper here), so its filesystem is made through a loop device
/// over the LV's extents, found in the LVM metadata. Returns the LV's (offset, length) in the partition.
fn fill_lvm(d: &mut LoopDisk, n: u32, vg: &str, mnt: &Path) -> (u64, u64) {
    let dev = d.part(n);
    lvm("pvcreate", &dev, &["-qq", "-ff", "-y", &dev]);
    lvm("vgcreate", &dev, &["-qq", "-s", "1m", vg, &dev]);
    lvm(
        "lvcreate",
        &dev,
        &["-qq", "-an", "-Zn", "-L", "48m", "-n", "lv0", vg],
    );
    let num = |cmd: &str, field: &str, what: &str| -> String {
        lvm(
            cmd,
            &dev,
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                field,
                what,
            ],
        )
        .trim()
        .to_string()
    };
    let pe_start: u64 = num("pvs", "pe_start", &dev).parse().unwrap();
    let extent: u64 = num("vgs", "vg_extent_size", vg).parse().unwrap();
    let size: u64 = num("lvs", "lv_size", &format!("{vg}/lv0")).parse().unwrap();
    // "/dev/loop3p4:0-47": one linear segment.
    let ranges = num("lvs", "seg_pe_ranges", &format!("{vg}/lv0"));
    let first: u64 = ranges
        .rsplit(':')
        .next()
        .and_then(|r| r.split('-').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("LV extents {ranges:?}"));
    let (off, len) = (pe_start + first * extent, size);
    let w = Window::new(&dev, off, len);
    sh("mke2fs", &["-q", "-F", "-t", "ext4", "-L", "lvroot", &w.0]);
    d.mount(&w.0, mnt, &[]);
    std::fs::write(mnt.join("on-the-lv"), "CLOUDPREP-LV-FILE\n".repeat(5000)).unwrap();
    sh(
        "cp",
        &[
            "-a",
            "/usr/share/doc/bash",
            mnt.join("doc").to_str().unwrap(),
        ],
    );
    sh("sync", &[]);
    d.unmount_all();
    (off, len)
}

/// Boot code in the gap before the first partition (as GRUB's core.img sits there).
fn fill_gap(d: &LoopDisk, at: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&d.dev)
        .unwrap();
    let core: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
    std::os::unix::fs::FileExt::write_all_at(&f, &core, at).unwrap();
    f.sync_all().unwrap();
}

fn contains_pattern(file: &Path) -> bool {
    status(
        "grep",
        &["-q", "-a", "-F", PATTERN.trim(), file.to_str().unwrap()],
    ) == 0
}

/// Free block ranges of an ext partition as e2fsprogs sees them (`dumpe2fs`), in bytes relative to the
/// partition.
fn ext_free_ranges(dev: &str) -> Vec<(u64, u64)> {
    let out = sh("dumpe2fs", &[dev]);
    let bs: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut v = Vec::new();
    for l in out.lines() {
        let Some(r) = l.trim().strip_prefix("Free blocks: ") else {
            continue;
        };
        for part in r.split(", ").filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            v.push((a * bs, (b + 1) * bs));
        }
    }
    assert!(!v.is_empty(), "dumpe2fs listed no free blocks on {dev}");
    v
}

fn punch(f: &std::fs::File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
    };
    assert_eq!(r, 0, "punching a hole");
}

/// Reference for fs-skip exports: the source with ext free blocks (per dumpe2fs) and swap pages after
/// the header punched out.
fn reference(d: &LoopDisk, src: &Path, ext: &[u32], swap: &[u32], dir: &Path) -> PathBuf {
    let r = dir.join("reference.img");
    sh(
        "cp",
        &[
            "--sparse=always",
            src.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
    );
    let f = std::fs::OpenOptions::new().write(true).open(&r).unwrap();
    for &n in ext {
        let (off, _) = part_range(d, n);
        for (a, b) in ext_free_ranges(&d.part(n)) {
            punch(&f, off + a, b - a);
        }
    }
    for &n in swap {
        let (off, len) = part_range(d, n);
        punch(&f, off + 4096, len - 4096);
    }
    r
}

/// `e2image -ra` of two partitions (what e2fsprogs considers the filesystem's content) is identical.
fn same_e2image(a: &str, b: &str, dir: &Path) {
    let (ea, eb) = (dir.join("a.e2i"), dir.join("b.e2i"));
    sh("e2image", &["-ra", a, ea.to_str().unwrap()]);
    sh("e2image", &["-ra", b, eb.to_str().unwrap()]);
    assert_eq!(
        status("cmp", &["-s", ea.to_str().unwrap(), eb.to_str().unwrap()]),
        0,
        "e2image of {a} and {b} differ"
    );
    std::fs::remove_file(ea).unwrap();
    std::fs::remove_file(eb).unwrap();
}

fn compare(a: &Path, afmt: &str, b: &Path, bfmt: &str) -> i32 {
    status(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            afmt,
            "-F",
            bfmt,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    )
}

fn qcheck(p: &Path) {
    assert_eq!(
        status("qemu-img", &["check", "-q", p.to_str().unwrap()]),
        0,
        "qemu-img check {}",
        p.display()
    );
}

fn to_raw(p: &Path, fmt: &str) -> PathBuf {
    let r = p.with_extension("back.raw");
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            p.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
    );
    r
}

/// The summary's digest: (kind from the `digest` line, hex from the `sha256` line).
fn digest_of(summary: &str) -> (String, String) {
    let field = |name: &str| {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in the summary:\n{summary}"))
            .trim()
            .to_string()
    };
    let kind = field("digest");
    let kind = kind.split(':').next().unwrap().to_string();
    (kind, field("sha256"))
}

/// The summary's SHA-256, which must be the default kind: of the output as written.
fn sha_of(summary: &str) -> String {
    let (kind, sha) = digest_of(summary);
    assert_eq!(
        kind, "output",
        "the default digest is the output's:\n{summary}"
    );
    sha
}

/// What `sha256sum FILE` prints for the file.
fn sha256sum(p: &Path) -> String {
    sh("sha256sum", &[p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Export `d` in every format with and without fs-skip and check each against the source/reference.
/// `lv`: (partition, offset, length) of an ext4 filesystem inside an LVM LV, which must come back intact.
fn check_all_formats(
    d: &LoopDisk,
    ext: &[u32],
    swap: &[u32],
    lv: Option<(u32, u64, u64)>,
    dir: &Path,
) {
    let src = d.image.clone();
    assert!(
        contains_pattern(&src),
        "the deleted pattern must be on the source disk for this test to mean anything"
    );
    let reference = reference(d, &src, ext, swap, dir);
    assert!(!contains_pattern(&reference));
    let full_sha = sha256sum(&src);
    let ref_sha = sha256sum(&reference);
    for (fmt, comp) in [
        ("raw", "none"),
        ("qcow2", "none"),
        ("qcow2", "zlib"),
        ("qcow2", "zstd"),
    ] {
        for skip in [false, true] {
            let out = dir.join(format!("out-{fmt}-{comp}-{skip}.img"));
            let mut args = vec![
                "export",
                "--source",
                &d.dev,
                "--format",
                fmt,
                "--compress",
                comp,
                "--verify",
                "-o",
            ];
            let o = out.to_str().unwrap().to_string();
            args.push(&o);
            if !skip {
                args.push("--no-fs-skip");
            }
            // zlib exports ask for the guest-content digest; all others keep the default (the output's).
            let content = comp == "zlib";
            if content {
                args.extend(["--digest", "content"]);
            }
            let stdout = export_ok(&args);
            if fmt == "qcow2" {
                qcheck(&out);
            }
            let want = if skip { &reference } else { &src };
            assert_eq!(
                compare(want, "raw", &out, fmt),
                0,
                "{fmt}/{comp} fs-skip={skip} differs from the expected content"
            );
            let want_content = if skip { &ref_sha } else { &full_sha };
            if content {
                // The guest-visible content exported: the source, or the reference with free blocks and
                // swap pages zero.
                assert_eq!(
                    digest_of(&stdout),
                    ("content".to_string(), want_content.clone()),
                    "{fmt}/{comp} fs-skip={skip}: not the sha256 of the exported content"
                );
            } else {
                // The default: exactly what sha256sum prints on the file written.
                assert_eq!(
                    sha_of(&stdout),
                    sha256sum(&out),
                    "{fmt}/{comp} fs-skip={skip}: the digest is not sha256sum of the output file"
                );
                if fmt == "raw" {
                    // A raw file is the guest content (holes read as zeros).
                    assert_eq!(&sha_of(&stdout), want_content);
                }
            }
            // Independent reader: QEMU's converter back to raw, byte for byte.
            let back = to_raw(&out, fmt);
            assert_eq!(
                status(
                    "cmp",
                    &["-s", back.to_str().unwrap(), want.to_str().unwrap()]
                ),
                0
            );
            assert_eq!(
                contains_pattern(&back),
                !skip,
                "deleted data present iff fs-skip is off"
            );
            if skip && fmt == "qcow2" && comp == "zstd" {
                // The exported filesystems are intact.
                let b = LoopDisk::attach(&back);
                for &n in ext {
                    assert_eq!(
                        status("e2fsck", &["-fn", &b.part(n)]),
                        0,
                        "e2fsck of exported partition {n}"
                    );
                    same_e2image(&d.part(n), &b.part(n), dir);
                }
                for &n in swap {
                    let blk = sh("blkid", &["-o", "value", "-s", "UUID", &b.part(n)]);
                    assert_eq!(blk.trim(), SWAP_UUID, "swap header (UUID) kept");
                }
                if let Some((n, off, len)) = lv {
                    // The LVM metadata names the LV, and its filesystem is the source's.
                    let lvs = lvm(
                        "lvs",
                        &b.part(n),
                        &["--noheadings", "-o", "vg_name,lv_name"],
                    );
                    assert!(lvs.contains("lv0"), "exported PV lists the LV: {lvs}");
                    let (ws, wb) = (
                        Window::new(&d.part(n), off, len),
                        Window::new(&b.part(n), off, len),
                    );
                    assert_eq!(
                        status("e2fsck", &["-fn", &wb.0]),
                        0,
                        "e2fsck of the exported LV"
                    );
                    same_e2image(&ws.0, &wb.0, dir);
                }
            }
            std::fs::remove_file(back).unwrap();
            std::fs::remove_file(&out).unwrap();
        }
    }
    // Streaming to a pipe: raw gives exactly the bytes of the disk (zeros written); qcow2 streams an
    // image with the same guest content.
    // The summary (on stderr) carries the SHA-256 of the bytes streamed.
    for fmt in ["raw", "qcow2"] {
        let out = dir.join(format!("stream.{fmt}"));
        let f = std::fs::File::create(&out).unwrap();
        let st = Command::new(common::bin())
            .args(["export", "--source", &d.dev, "--format", fmt, "-o", "-"])
            .stdout(Stdio::from(f))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let summary = String::from_utf8_lossy(&st.stderr);
        assert!(st.status.success(), "stream {fmt}: {summary}");
        assert_eq!(
            sha_of(&summary),
            sha256sum(&out),
            "stream {fmt}: the digest is not sha256sum of the bytes streamed"
        );
        if fmt == "qcow2" {
            qcheck(&out);
        }
        assert_eq!(compare(&reference, "raw", &out, fmt), 0, "stream {fmt}");
        if fmt == "raw" {
            assert_eq!(
                std::fs::metadata(&out).unwrap().len(),
                std::fs::metadata(&src).unwrap().len()
            );
        }
        std::fs::remove_file(out).unwrap();
    }
    let st = Command::new(common::bin())
        .args([
            "export",
            "--source",
            &d.dev,
            "--format",
            "qcow2",
            "--compress",
            "zstd",
            "-o",
            "-",
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&st.stderr).contains("cannot be streamed"));
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cloudprep-export.")
        .tempdir_in(common::scratch())
        .unwrap()
}

#[test]
fn mbr_disk_with_logical_partitions() {
    need_root_and_qemu_img();
    let dir = scratch_dir();
    let layout = "label: dos\n\
start=2048, size=65536, type=c\n\
start=67584, size=204800, type=83\n\
start=272384, size=81920, type=82\n\
start=354304, type=5\n\
start=356352, size=163840, type=83\n";
    let mut d = LoopDisk::new(256, layout);
    let mnt = dir.path().join("mnt");
    fill_vfat(&mut d, 1, &mnt);
    fill_ext4(&mut d, 2, &["-b", "4096"], &mnt);
    fill_swap(&d, 3);
    fill_ext4(&mut d, 5, &["-b", "1024"], &mnt);
    fill_gap(&d, 512);
    check_all_formats(&d, &[2, 5], &[3], None, dir.path());
}

#[test]
fn gpt_disk_with_esp_swap_and_lvm_lv() {
    need_root_and_qemu_img();
    let dir = scratch_dir();
    let layout = "label: gpt\n\
start=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
start=67584, size=204800, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
start=272384, size=81920, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n\
start=354304, size=163840, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n";
    let mut d = LoopDisk::new(256, layout);
    let mnt = dir.path().join("mnt");
    fill_vfat(&mut d, 1, &mnt);
    fill_ext4(&mut d, 2, &["-O", "64bit,flex_bg,metadata_csum"], &mnt);
    fill_swap(&d, 3);
    // A VG name of its own: LVM refuses duplicates among the devices it sees.
    let vg = format!("cpvg{}", std::process::id());
    let (off, len) = fill_lvm(&mut d, 4, &vg, &mnt);
    fill_gap(&d, 34 * 512);
    check_all_formats(&d, &[2], &[3], Some((4, off, len)), dir.path());
}

#[test]
fn refusals_and_auto_source() {
    need_root_and_qemu_img();
    let dir = scratch_dir();
    let (d, mnt) = mounted_ext4(64, dir.path());
    let out = dir.path().join("out.raw");
    // Mounted read-write and no --consistency: refused, nothing written.
    let o = run(&["export", "--source", &d.dev, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mounted read-write"));
    assert!(!out.exists());
    // Output onto the disk being exported: refused.
    let onto = mnt.join("img.raw");
    let o = run(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "none",
        "-o",
        onto.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("onto the disk being exported"));
    assert!(std::fs::read_dir(&mnt)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains("img.raw")));
    // --source auto with --root on the mounted filesystem resolves the whole loop disk (through the
    // partition); --consistency none is recorded in the summary.
    let o = run(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "none",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("journal needs recovery"),
        "a mounted, unfrozen ext4 must be copied whole (its bitmaps may be stale)"
    );
    let s = export_ok(&[
        "export",
        "--root",
        mnt.to_str().unwrap(),
        "--source",
        "auto",
        "--consistency",
        "none",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        s.lines()
            .any(|l| l.starts_with("source") && l.trim_end().ends_with(&d.dev)),
        "{s}"
    );
    assert!(s.contains("consistency    none"), "{s}");
    // A source that may change is hashed from the very buffers written (not read again): the digest is
    // the raw output's.
    assert_eq!(sha_of(&s), sha256sum(&out));
    // Read-only remount: the filesystem is read-write again afterwards.
    let s = export_ok(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "readonly",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(s.contains("readonly"));
    std::fs::write(mnt.join("after"), "rw again").unwrap();
    // --digest none: no SHA-256 in the summary; --verify still reads the output back and compares its
    // guest content with what was read.
    let q = dir.path().join("out.qcow2");
    let s = export_ok(&[
        "export",
        "--source",
        &d.dev,
        "--consistency",
        "readonly",
        "--format",
        "qcow2",
        "--digest",
        "none",
        "--verify",
        "-o",
        q.to_str().unwrap(),
    ]);
    assert!(s.contains("digest         none"), "{s}");
    assert!(!s.lines().any(|l| l.starts_with("sha256")), "{s}");
    qcheck(&q);
    // A failing export (output directory vanished mid-way is hard to simulate; use an unwritable path)
    // leaves no temporary file behind.
    let ro = dir.path().join("missing/out.raw");
    assert_eq!(
        run(&[
            "export",
            "--source",
            &d.dev,
            "--consistency",
            "none",
            "-o",
            ro.to_str().unwrap()
        ])
        .status
        .code(),
        Some(3)
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn freeze_while_a_writer_appends() {
    need_root_and_qemu_img();
    let dir = scratch_dir();
    let (d, mnt) = mounted_ext4(128, dir.path());
    let log = mnt.join("log.txt");
    let script = format!(
        "while :; do echo 'a line of log output from a busy service' >> {}; done",
        log.display()
    );
    let writer = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let writer = Kill(writer);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = dir.path().join("frozen.qcow2");
    let s = export_ok(&[
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
    assert!(s.contains("consistency    freeze"), "{s}");
    assert_eq!(sha_of(&s), sha256sum(&out), "qcow2 output digest");
    // The writer resumes after the thaw.
    let before = std::fs::metadata(&log).unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let after = std::fs::metadata(&log).unwrap().len();
    assert!(
        after > before,
        "writer did not resume ({before} -> {after})"
    );
    drop(writer);
    qcheck(&out);
    let back = to_raw(&out, "qcow2");
    let b = LoopDisk::attach(&back);
    assert_eq!(
        status("e2fsck", &["-fn", &b.part(1)]),
        0,
        "exported filesystem is clean"
    );
}

#[test]
fn watchdog_and_sigterm_thaw() {
    need_root_and_qemu_img();
    let dir = scratch_dir();
    let (d, mnt) = mounted_ext4(64, dir.path());
    let writable = |what: &str| {
        let f = mnt.join("probe");
        let st = Command::new("timeout")
            .args([
                "10",
                "sh",
                "-c",
                &format!("echo x > {} && sync -f {}", f.display(), f.display()),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "filesystem not writable after {what}");
    };
    // Watchdog: a zero timeout thaws at once and aborts the export; no partial output is left.
    let out = dir.path().join("w.raw");
    let o = Command::new(common::bin())
        .args([
            "export",
            "--source",
            &d.dev,
            "--consistency",
            "freeze",
            "-o",
            out.to_str().unwrap(),
        ])
        .env("CLOUDPREP_FREEZE_TIMEOUT", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("freeze timeout"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    writable("the watchdog");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("w.raw"))
        .collect();
    assert!(left.is_empty(), "partial output left behind");
    // SIGTERM while frozen (the export blocks on a pipe nobody reads): the handler thaws.
    let mut child = Command::new(common::bin())
        .args([
            "export",
            "--source",
            &d.dev,
            "--consistency",
            "freeze",
            "-o",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    // A write blocks (uninterruptibly) while frozen: start it and look whether it finished.
    let mut probe = Command::new("sh")
        .args(["-c", &format!("echo y > {}/frozen-probe", mnt.display())])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        probe.try_wait().unwrap().is_none(),
        "the filesystem should be frozen during the export"
    );
    sh("kill", &["-TERM", &child.id().to_string()]);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + 15));
    assert!(
        probe.wait().unwrap().success(),
        "the blocked writer completes after the thaw"
    );
    writable("SIGTERM");
}
