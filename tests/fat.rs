//! The pure-Rust FAT module against images made by the real tools: mkfs.fat (dosfstools) formats them,
//! mtools fills them (long names, fragmented free space), cloudprep writes, then `fsck.fat -n` must find
//! nothing, mtools must read back the same bytes, and writing back the saved old bytes of the planned
//! ranges must restore the image byte for byte.

mod common;

use cloudprep::guest::fat::{FatType, Plan, Volume};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bytes before the filesystem in every image: the plan must leave them (and everything after it) alone.
const PREFIX: u64 = 1 << 20;
const SUFFIX: u64 = 64 << 10;

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
    fs_len: u64,
}

impl Img {
    /// A filesystem of `kib` KiB made by `mkfs.fat ARGS`, placed at PREFIX in a larger image whose other
    /// bytes are a pattern (so a stray write shows).
    fn new(kib: u64, mkfs: &[&str]) -> Img {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("fs.img");
        let mut args: Vec<&str> = mkfs.to_vec();
        let kibs = kib.to_string();
        args.extend(["-C", fs.to_str().unwrap(), &kibs]);
        common::sh("mkfs.fat", &args);
        let path = dir.path().join("disk.img");
        let mut all: Vec<u8> = (0..PREFIX).map(|i| (i % 251) as u8).collect();
        all.extend(std::fs::read(&fs).unwrap());
        all.extend((0..SUFFIX).map(|i| (i % 241) as u8));
        std::fs::write(&path, all).unwrap();
        std::fs::remove_file(fs).unwrap();
        Img {
            _dir: dir,
            path,
            fs_len: kib << 10,
        }
    }

    /// mtools' name for a path in this image's filesystem.
    fn m(&self, p: &str) -> String {
        format!("::{p}")
    }

    fn mt(&self, cmd: &str, args: &[&str]) -> String {
        common::mt(cmd, &format!("{}@@{PREFIX}", self.path.display()), args)
    }

    fn put(&self, data: &[u8], dest: &str) {
        let src = self._dir.path().join("put.tmp");
        std::fs::write(&src, data).unwrap();
        self.mt("mcopy", &["-o", src.to_str().unwrap(), &self.m(dest)]);
    }

    /// A file's bytes as mtools reads them.
    fn get(&self, p: &str) -> Vec<u8> {
        let dst = self._dir.path().join("get.tmp");
        let _ = std::fs::remove_file(&dst);
        self.mt("mcopy", &["-n", &self.m(p), dst.to_str().unwrap()]);
        std::fs::read(dst).unwrap()
    }

    /// `fsck.fat -n` on the filesystem (copied out of the image): panics with its output unless clean.
    fn fsck(&self) {
        let all = std::fs::read(&self.path).unwrap();
        let fs = self._dir.path().join("fsck.img");
        std::fs::write(&fs, &all[PREFIX as usize..(PREFIX + self.fs_len) as usize]).unwrap();
        let o = Command::new("fsck.fat")
            .args(["-n", "-V"])
            .arg(&fs)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "fsck.fat -n found problems:\n{out}");
        std::fs::remove_file(fs).unwrap();
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// Plan with `f`, check the plan stays inside the filesystem, save the old bytes, apply; returns
    /// (plan, old bytes).
    fn change(&self, f: impl FnOnce(&mut Volume)) -> (Plan, Vec<u8>) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut v = Volume::open(&file, PREFIX, self.fs_len).unwrap();
        v.set_time(1_796_199_718);
        f(&mut v);
        let plan = v.plan().unwrap();
        for (o, l) in plan.areas() {
            assert!(
                o >= PREFIX && o + l <= PREFIX + self.fs_len,
                "write {o}+{l} leaves the partition"
            );
        }
        let old = read_areas(&file, &plan.areas());
        plan.apply(&file, "image").unwrap();
        assert_eq!(read_areas(&file, &plan.areas()), plan.new_bytes());
        (plan, old)
    }

    fn restore(&self, plan: &Plan, old: &[u8]) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut at = 0;
        for (o, l) in plan.areas() {
            std::os::unix::fs::FileExt::write_all_at(&file, &old[at..at + l as usize], o).unwrap();
            at += l as usize;
        }
    }
}

fn read_areas(f: &std::fs::File, areas: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(o, l) in areas {
        let mut b = vec![0u8; l as usize];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut b, o).unwrap();
        out.extend(b);
    }
    out
}

/// Deterministic bytes that differ per seed (a stand-in for an EFI binary).
fn blob(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn open_ro(p: &Path) -> std::fs::File {
    std::fs::File::open(p).unwrap()
}

/// An ESP as the Debian installer leaves it: \EFI\debian with GRUB, plus clutter with long names.
fn debian_esp(img: &Img) -> Vec<u8> {
    img.mt("mmd", &["::/EFI", "::/EFI/debian"]);
    let grub = blob(300_000, 1);
    img.put(&grub, "/EFI/debian/grubx64.efi");
    img.put(
        b"search.fs_uuid 1234 root\nconfigfile ($root)/boot/grub/grub.cfg\n",
        "/EFI/debian/grub.cfg",
    );
    img.put(&blob(5000, 2), "/EFI/debian/A Long Vendor Name.efi");
    grub
}

fn install_fallback(img: &Img, grub: &[u8]) -> (Plan, Vec<u8>) {
    img.change(|v| {
        assert!(v.lookup("EFI/BOOT/BOOTX64.EFI").unwrap().is_none());
        v.create_dir_all("EFI/BOOT").unwrap();
        v.write_file("EFI/BOOT/BOOTX64.EFI", grub).unwrap();
        v.write_file("EFI/BOOT/grubx64.efi", grub).unwrap();
        v.write_file("EFI/BOOT/shimx64.efi.signed", b"long name")
            .unwrap();
    })
}

fn round_trip(mkfs: &[&str], kib: u64, want: FatType) {
    let img = Img::new(kib, mkfs);
    let grub = debian_esp(&img);
    let before = img.bytes();
    {
        let f = open_ro(&img.path);
        let v = Volume::open(&f, PREFIX, img.fs_len).unwrap();
        assert_eq!(v.bpb.fat_type, want);
        // Lookups without case, by long name and by the 8.3 alias mtools made.
        assert_eq!(
            v.read_file("\\efi\\DEBIAN\\GRUBX64.EFI", 1 << 20)
                .unwrap()
                .unwrap(),
            grub
        );
        assert_eq!(
            v.read_file("EFI/debian/a long vendor name.EFI", 1 << 20)
                .unwrap()
                .unwrap(),
            blob(5000, 2)
        );
        let names: Vec<String> = v
            .list("EFI/debian")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.contains(&"A Long Vendor Name.efi".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"grubx64.efi".to_string()), "{names:?}");
        let alias = v
            .lookup("EFI/debian/A Long Vendor Name.efi")
            .unwrap()
            .unwrap()
            .short_name();
        assert!(alias.contains('~'), "{alias}");
        assert!(v.lookup(&format!("EFI/debian/{alias}")).unwrap().is_some());
        assert!(
            v.read_file("EFI/debian/grubx64.efi", 1000).is_err(),
            "max size is enforced"
        );
        assert!(v.lookup("EFI/BOOT/BOOTX64.EFI").unwrap().is_none());
        assert!(v.list("EFI/nothing").unwrap().is_none());
    }
    let (plan, old) = install_fallback(&img, &grub);
    assert!(
        plan.changes
            .iter()
            .any(|c| c.contains("\\EFI\\BOOT\\BOOTX64.EFI")),
        "{:?}",
        plan.changes
    );
    img.fsck();
    assert_eq!(img.get("/EFI/BOOT/BOOTX64.EFI"), grub);
    assert_eq!(img.get("/EFI/BOOT/grubx64.efi"), grub);
    assert_eq!(img.get("/EFI/BOOT/shimx64.efi.signed"), b"long name");
    assert_eq!(
        img.get("/EFI/debian/grubx64.efi"),
        grub,
        "the source is untouched"
    );
    let listing = img.mt("mdir", &["-a", "::/EFI/BOOT"]);
    assert!(listing.contains("shimx64.efi.signed"), "{listing}");
    let after = img.bytes();
    assert_eq!(&after[..PREFIX as usize], &before[..PREFIX as usize]);
    assert_eq!(
        &after[(PREFIX + img.fs_len) as usize..],
        &before[(PREFIX + img.fs_len) as usize..]
    );
    // A second run plans nothing.
    let (again, _) = img.change(|v| {
        v.create_dir_all("EFI/BOOT").unwrap();
        v.write_file("EFI/BOOT/BOOTX64.EFI", &grub).unwrap();
    });
    assert!(again.is_empty(), "{again:?}");
    // Rollback of the planned ranges restores the image exactly.
    img.restore(&plan, &old);
    assert!(
        img.bytes() == before,
        "rollback did not restore the image byte for byte"
    );
    img.fsck();
}

#[test]
fn fat16_install_fallback_loader() {
    round_trip(&["-F", "16", "-n", "ESP"], 32 << 10, FatType::Fat16);
}

#[test]
fn fat32_install_fallback_loader() {
    // 512-byte clusters: many clusters per file and directories that grow past one cluster.
    round_trip(
        &["-F", "32", "-s", "1", "-n", "ESP"],
        40 << 10,
        FatType::Fat32,
    );
}

#[test]
fn fat32_with_4k_clusters_and_fat12() {
    round_trip(&["-F", "32", "-s", "8"], 300 << 10, FatType::Fat32);
    round_trip(&["-F", "12"], 2 << 10, FatType::Fat12);
}

#[test]
fn fragmented_free_space_and_replacing_a_file() {
    let img = Img::new(40 << 10, &["-F", "32", "-s", "1"]);
    img.mt("mmd", &["::/D"]);
    // 200 two-cluster files, every other one deleted: the free space is in 1 KiB holes.
    for i in 0..200 {
        img.put(&blob(1024, 100 + i), &format!("/D/F{i}.BIN"));
    }
    for i in (0..200).step_by(2) {
        img.mt("mdel", &[&format!("::/D/F{i}.BIN")]);
    }
    img.put(&blob(20_000, 7), "/OLD.EFI");
    img.fsck();
    let before = img.bytes();
    let big = blob(150_000, 9);
    let (plan, old) = img.change(|v| {
        v.create_dir_all("EFI/BOOT").unwrap();
        v.write_file("EFI/BOOT/BOOTX64.EFI", &big).unwrap();
        // Replace an existing file: new clusters, the old ones freed.
        v.write_file("old.efi", b"replaced").unwrap();
        // Many names in one directory: it grows by clusters.
        for i in 0..40 {
            v.write_file(
                &format!("EFI/BOOT/file number {i}.txt"),
                format!("{i}").as_bytes(),
            )
            .unwrap();
        }
        // Reads see the planned changes.
        assert_eq!(
            v.read_file("EFI/BOOT/BOOTX64.EFI", 1 << 20)
                .unwrap()
                .unwrap(),
            big
        );
    });
    img.fsck();
    assert_eq!(img.get("/EFI/BOOT/BOOTX64.EFI"), big);
    assert_eq!(img.get("/OLD.EFI"), b"replaced");
    assert_eq!(img.get("/EFI/BOOT/file number 39.txt"), b"39");
    for i in (1..200).step_by(2) {
        assert_eq!(img.get(&format!("/D/F{i}.BIN")), blob(1024, 100 + i));
    }
    // The big file really spans the holes (the FAT has more than a few changed sectors).
    assert!(plan.writes.len() > 10, "{}", plan.writes.len());
    img.restore(&plan, &old);
    assert!(img.bytes() == before);
    img.fsck();
}

#[test]
fn full_filesystem_is_an_error_and_plans_nothing() {
    let img = Img::new(2 << 10, &["-F", "12"]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let mut v = Volume::open(&f, PREFIX, img.fs_len).unwrap();
    let e = v.write_file("BIG.BIN", &blob(4 << 20, 1)).unwrap_err();
    assert!(e.to_string().contains("full"), "{e}");
    assert!(v
        .write_file("NODIR/X.EFI", b"x")
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}

/// Corrupt boot sectors, FATs and directories: every operation returns (an error or a result), none
/// panics or hangs, and no plan leaves the filesystem.
#[test]
fn corrupt_images_give_errors_not_panics() {
    let img = Img::new(2 << 10, &["-F", "12", "-s", "1"]);
    img.mt("mmd", &["::/EFI", "::/EFI/debian"]);
    img.put(&blob(40_000, 3), "/EFI/debian/grubx64.efi");
    img.put(b"x", "/EFI/debian/Long Name Here.cfg");
    let fs16 = Img::new(16 << 10, &["-F", "16", "-s", "1"]);
    fs16.mt("mmd", &["::/EFI", "::/EFI/debian"]);
    fs16.put(&blob(40_000, 3), "/EFI/debian/grubx64.efi");
    let fs32 = Img::new(34 << 10, &["-F", "32", "-s", "1"]);
    fs32.mt("mmd", &["::/EFI", "::/EFI/debian"]);
    fs32.put(&blob(40_000, 3), "/EFI/debian/grubx64.efi");
    let n: u32 = std::env::var("CLOUDPREP_FUZZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut seed = 0x2545_f491u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for im in [&img, &fs16, &fs32] {
        let good = im.bytes()[PREFIX as usize..(PREFIX + im.fs_len) as usize].to_vec();
        let v = Volume::open(&good, 0, im.fs_len).unwrap();
        // Where the metadata is: boot sector, FAT, the directories.
        let meta_end = (v.bpb.reserved_sectors + v.bpb.num_fats * v.bpb.fat_sectors)
            * v.bpb.bytes_per_sector
            + 64 * v.bpb.bytes_per_sector;
        drop(v);
        for _ in 0..n {
            let mut b = good.clone();
            for _ in 0..(1 + rnd() % 8) {
                let off = match rnd() % 3 {
                    0 => (rnd() % 96) as u64,
                    _ => (rnd() as u64) % meta_end,
                } as usize;
                b[off] = match rnd() % 4 {
                    0 => 0,
                    1 => 0xff,
                    _ => rnd() as u8,
                };
            }
            exercise(&b);
        }
    }
    // Hand-made cases: a cyclic chain, a cluster out of range, a huge size.
    let good = fs32.bytes()[PREFIX as usize..(PREFIX + fs32.fs_len) as usize].to_vec();
    let v = Volume::open(&good, 0, fs32.fs_len).unwrap();
    let node = v.lookup("EFI/debian/grubx64.efi").unwrap().unwrap();
    let fat0 = (v.bpb.reserved_sectors * v.bpb.bytes_per_sector) as usize;
    let c = node.first_cluster as usize;
    let mut b = good.clone();
    b[fat0 + 4 * (c + 1)..fat0 + 4 * (c + 2)].copy_from_slice(&(c as u32).to_le_bytes());
    let v = Volume::open(&b, 0, fs32.fs_len).unwrap();
    let e = v.read_file("EFI/debian/grubx64.efi", 1 << 20);
    // The file's 79 clusters now loop back after 2: the read stops with an error at the end.
    assert!(e.is_err() || e.unwrap().unwrap() != blob(40_000, 3));
    let mut b = good.clone();
    b[fat0 + 4 * c..fat0 + 4 * (c + 1)].copy_from_slice(&(c as u32).to_le_bytes());
    let v = Volume::open(&b, 0, fs32.fs_len).unwrap();
    let mut v2 = Volume::open(&b, 0, fs32.fs_len).unwrap();
    assert!(
        v.read_file("EFI/debian/grubx64.efi", 1 << 20).is_err()
            || v.read_file("EFI/debian/grubx64.efi", 1 << 20)
                .unwrap()
                .unwrap()
                != blob(40_000, 3)
    );
    // Replacing that file must walk its (cyclic) chain to free it: an error, not a hang.
    assert!(v2.write_file("EFI/debian/grubx64.efi", b"new").is_err());
    let mut b = good.clone();
    b[fat0 + 4 * c..fat0 + 4 * (c + 1)].copy_from_slice(&0x0fff_fff0u32.to_le_bytes());
    let v = Volume::open(&b, 0, fs32.fs_len).unwrap();
    let e = v.read_file("EFI/debian/grubx64.efi", 1 << 20).unwrap_err();
    assert!(format!("{e:#}").contains("outside the data area"), "{e:#}");
    // A directory whose chain is a loop of one cluster: listing ends with an error.
    let efi = v.lookup("EFI").unwrap().unwrap();
    let mut b = good.clone();
    let dc = efi.first_cluster as usize;
    b[fat0 + 4 * dc..fat0 + 4 * (dc + 1)].copy_from_slice(&(dc as u32).to_le_bytes());
    let v = Volume::open(&b, 0, fs32.fs_len).unwrap();
    let e = v.list("EFI").unwrap_err();
    assert!(format!("{e:#}").contains("cyclic"), "{e:#}");
    // A filesystem larger than its partition, or a partition shorter than a sector.
    assert!(Volume::open(&good, 0, fs32.fs_len - 512).is_err());
    assert!(Volume::open(&good, 0, 100).is_err());
    assert!(Volume::open(&good[..100].to_vec(), 0, fs32.fs_len).is_err());
}

fn exercise(b: &Vec<u8>) {
    let len = b.len() as u64;
    let Ok(mut v) = Volume::open(b, 0, len) else {
        return;
    };
    let _ = v.list("");
    let _ = v.list("EFI/debian");
    let _ = v.read_file("EFI/debian/grubx64.efi", 1 << 20);
    let _ = v.read_file("EFI/debian/long name here.cfg", 1 << 20);
    let _ = v.create_dir_all("EFI/BOOT");
    let _ = v.write_file("EFI/BOOT/BOOTX64.EFI", &blob(3000, 5));
    let _ = v.write_file("EFI/BOOT/a long name.efi", b"x");
    let _ = v.write_file("EFI/debian/grubx64.efi", b"y");
    if let Ok(plan) = v.plan() {
        for (o, l) in plan.areas() {
            assert!(o + l <= len, "write {o}+{l} past {len}");
        }
        let mut copy = b.to_vec();
        plan.apply_mem(&mut copy).unwrap();
    }
}
