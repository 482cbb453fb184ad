//! A UEFI guest as Debian installs it, on a real GPT disk image: an EFI system partition (FAT32, built with
//! mkfs.fat + mtools, since this host's kernel cannot mount vfat) holding GRUB only in `\EFI\debian`, and an
//! ext4 root from the cached bookworm `uefi` root (grub-efi-amd64: real EFI binaries). `--root` on the
//! mounted ext4 with the ESP NOT mounted: the audit is never READY, `fix` writes the fallback loader into
//! the FAT itself, `fsck.fat -n` is clean, mtools reads the loader back equal to the guest's GRUB, a second
//! fix plans nothing, and rollback restores the ESP byte for byte.

mod common;

use common::{findings, loopdev::LoopDisk, mt, mtools, sh};
use std::path::Path;
use std::process::Command;

const ESP_UUID: &str = "1234ABCD";
const ESP_MIB: u64 = 64;

fn get(img: &str, p: &str, tmp: &Path) -> Option<Vec<u8>> {
    let dst = tmp.join("get.out");
    let _ = std::fs::remove_file(&dst);
    let o = mtools(
        "mcopy",
        img,
        &["-n", &format!("::{p}"), dst.to_str().unwrap()],
    );
    o.status.success().then(|| std::fs::read(&dst).unwrap())
}

fn fsck(dev: &str) {
    let o = Command::new("fsck.fat").args(["-n", dev]).output().unwrap();
    assert!(
        o.status.success(),
        "fsck.fat -n {dev}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read_all(dev: &str) -> Vec<u8> {
    std::fs::read(dev).unwrap_or_else(|e| panic!("reading {dev}: {e}"))
}

fn commands(report: &serde_json::Value, id: &str) -> Vec<Vec<String>> {
    findings(report, id)
        .iter()
        .flat_map(|f| common::argvs(&f["fix"]["commands"]))
        .collect()
}

struct UefiDisk {
    disk: LoopDisk,
    mnt: tempfile::TempDir,
    esp: String,
    grub: Vec<u8>,
    tmp: tempfile::TempDir,
}

/// GPT: partition 1 the ESP, partition 2 the ext4 root (mounted, the ESP not).
fn uefi_disk() -> UefiDisk {
    assert!(common::is_root(), "this test needs root (loop devices)");
    let mut disk = LoopDisk::new(2048, &format!("label: gpt\n,{ESP_MIB}M,U\n,,L\n"));
    let esp = disk.part(1);
    sh("mkfs.fat", &["-F", "32", "-i", ESP_UUID, "-n", "EFI", &esp]);
    sh("mkfs.ext4", &["-q", "-F", "-L", "root", &disk.part(2)]);
    let mnt = tempfile::Builder::new()
        .prefix("cloudprep-uefi.")
        .tempdir_in(common::scratch())
        .unwrap();
    disk.mount(&disk.part(2), mnt.path(), &[]);
    let st = Command::new(common::repo().join("scripts/mkroot.sh"))
        .args(["bookworm", mnt.path().to_str().unwrap(), "uefi"])
        .status()
        .expect("running scripts/mkroot.sh");
    assert!(st.success(), "scripts/mkroot.sh bookworm uefi failed");
    let root_uuid = sh("blkid", &["-s", "UUID", "-o", "value", &disk.part(2)])
        .trim()
        .to_string();
    std::fs::write(
        mnt.path().join("etc/fstab"),
        format!(
            "UUID={root_uuid} / ext4 errors=remount-ro 0 1\nUUID=1234-ABCD /boot/efi vfat umask=0077 0 1\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(mnt.path().join("boot/efi")).unwrap();
    // As the Debian installer leaves the ESP: GRUB and its grub.cfg stub in \EFI\debian only.
    let tmp = tempfile::tempdir().unwrap();
    let grub_src = mnt
        .path()
        .join("usr/lib/grub/x86_64-efi/monolithic/grubx64.efi");
    let grub = std::fs::read(&grub_src).expect("the uefi root has GRUB's EFI image");
    assert!(grub.starts_with(b"MZ") && grub.len() > 100_000);
    let cfg = tmp.path().join("grub.cfg");
    std::fs::write(
        &cfg,
        format!("search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"),
    )
    .unwrap();
    mt("mmd", &esp, &["::/EFI", "::/EFI/debian"]);
    mt(
        "mcopy",
        &esp,
        &[grub_src.to_str().unwrap(), "::/EFI/debian/grubx64.efi"],
    );
    mt(
        "mcopy",
        &esp,
        &[cfg.to_str().unwrap(), "::/EFI/debian/grub.cfg"],
    );
    fsck(&esp);
    UefiDisk {
        disk,
        mnt,
        esp,
        grub,
        tmp,
    }
}

#[test]
fn unmounted_esp_is_verified_and_repaired_through_the_fat() {
    let mut u = uefi_disk();
    let root = u.mnt.path();
    let esp_before = read_all(&u.esp);
    let debconf_before = std::fs::read(root.join("var/cache/debconf/config.dat")).unwrap();

    // The audit reads the FAT: no fallback loader, a blocker, the fix planned on the ESP's device.
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 2, "{rep:#}");
    let f = findings(&rep, "boot.grub-installed");
    assert_eq!(f.len(), 2, "{rep:#}");
    assert_eq!(f[0]["severity"], "blocker");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("has no removable fallback loader \\EFI\\BOOT\\BOOTX64.EFI"),
        "{msg}"
    );
    assert!(msg.contains(&u.esp), "{msg}");
    assert_eq!(f[1]["severity"], "warning");
    assert!(f[1]["message"]
        .as_str()
        .unwrap()
        .contains("grub2/force_efi_extra_removable"));
    let len = (ESP_MIB << 20).to_string();
    assert_eq!(
        commands(&rep, "boot.grub-installed"),
        vec![[
            "cloudprep",
            "esp-install",
            "--device",
            &u.esp,
            "--offset",
            "0",
            "--length",
            &len,
            "EFI/debian/grubx64.efi=EFI/BOOT/BOOTX64.EFI",
            "EFI/debian/grub.cfg=EFI/BOOT/grub.cfg"
        ]
        .map(String::from)
        .to_vec()]
    );
    // The dry run shows the same command and changes nothing.
    let out = common::run_cloudprep(root, &["fix", "--dry-run", "--only", "boot.grub-installed"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("cloudprep esp-install --device {}", u.esp)),
        "{said}"
    );
    assert!(
        read_all(&u.esp) == esp_before,
        "the dry run wrote to the ESP"
    );

    let out = common::run_cloudprep(root, &["fix", "--yes", "--only", "boot.grub-installed"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    fsck(&u.esp);
    assert!(
        get(&u.esp, "/EFI/BOOT/BOOTX64.EFI", u.tmp.path()).unwrap() == u.grub,
        "\\EFI\\BOOT\\BOOTX64.EFI is not the guest's GRUB"
    );
    assert_eq!(
        get(&u.esp, "/EFI/BOOT/grub.cfg", u.tmp.path()),
        get(&u.esp, "/EFI/debian/grub.cfg", u.tmp.path())
    );
    assert!(get(&u.esp, "/EFI/debian/grubx64.efi", u.tmp.path()).unwrap() == u.grub);
    let dc = std::fs::read_to_string(root.join("var/cache/debconf/config.dat")).unwrap();
    assert!(
        dc.contains("Name: grub2/force_efi_extra_removable\nTemplate: grub2/force_efi_extra_removable\nValue: true\n"),
        "debconf not set"
    );
    // The journal holds the ESP ranges with their old bytes.
    let runs = root.join("var/lib/cloudprep/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("journal.jsonl").exists())
        .unwrap()
        .path();
    let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"event\":\"esp-write\""), "{journal}");

    // Ready now; a second fix plans nothing.
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 0, "{rep:#}");
    let after = read_all(&u.esp);
    let out = common::run_cloudprep(root, &["fix", "--yes", "--only", "boot.grub-installed"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do: no planned change"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(read_all(&u.esp) == after, "the second fix wrote to the ESP");

    // Rollback restores the ESP and debconf byte for byte.
    let out = common::run_cloudprep(root, &["rollback"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("{} (EFI system partition)", u.esp)),
        "{said}"
    );
    assert!(
        read_all(&u.esp) == esp_before,
        "rollback did not restore the ESP byte for byte"
    );
    assert_eq!(
        std::fs::read(root.join("var/cache/debconf/config.dat")).unwrap(),
        debconf_before
    );
    fsck(&u.esp);

    // Killed (SIGKILL) right after each journal step of the fix, then recovered by rollback: the ESP and
    // debconf are back byte for byte every time.
    let mut n = 1;
    loop {
        let out = Command::new(common::bin())
            .args(["fix", "--yes", "--only", "boot.grub-installed", "--root"])
            .arg(root)
            .env("CLOUDPREP_FAULT_STEP", n.to_string())
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let killed = out.status.signal() == Some(9);
        let rb = common::run_cloudprep(root, &["rollback"]);
        assert_eq!(
            rb.status.code(),
            Some(0),
            "step {n}: {}",
            String::from_utf8_lossy(&rb.stdout)
        );
        assert!(
            read_all(&u.esp) == esp_before,
            "step {n}: the ESP differs after recovery"
        );
        assert_eq!(
            std::fs::read(root.join("var/cache/debconf/config.dat")).unwrap(),
            debconf_before,
            "step {n}"
        );
        if !killed {
            assert_eq!(out.status.code(), Some(0), "step {n}");
            break;
        }
        n += 1;
        assert!(n < 40, "the fix never finished");
    }
    assert!(n >= 6, "only {n} journal steps");
    fsck(&u.esp);

    // Without the fstab line, the ESP is found as the EFI System partition of the disk holding /.
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        fstab.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 2);
    let c = commands(&rep, "boot.grub-installed");
    assert_eq!(c[0][3], u.disk.dev, "{c:?}");
    assert_eq!(c[0][5], (1u64 << 20).to_string(), "{c:?}");
    // An ESP that is not FAT at all: unverifiable, still a blocker, nothing planned.
    std::fs::write(root.join("etc/fstab"), fstab).unwrap();
    let zeros = vec![0u8; 4096];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&u.esp)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &zeros, 0).unwrap();
    f.sync_all().unwrap();
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 2, "{rep:#}");
    let f = findings(&rep, "boot.grub-installed");
    assert!(
        f[0]["message"]
            .as_str()
            .unwrap()
            .contains("could not be verified"),
        "{rep:#}"
    );
    assert!(commands(&rep, "boot.grub-installed").is_empty());
    u.disk.unmount_all();
}

/// The in-guest path: the ESP mounted at /boot/efi (here a tmpfs standing in for vfat, which this host
/// cannot mount). The copies are guest file writes, undone by rollback.
#[test]
fn mounted_esp_gets_the_fallback_loader_as_guest_files() {
    assert!(common::is_root(), "this test needs root (mounts)");
    let g = common::Guest::release("bookworm", "uefi");
    let root = g.root();
    let efi = root.join("boot/efi");
    std::fs::create_dir_all(&efi).unwrap();
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "esp",
            efi.to_str().unwrap(),
        ],
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&efi);
    let grub = std::fs::read(root.join("usr/lib/grub/x86_64-efi/monolithic/grubx64.efi")).unwrap();
    std::fs::create_dir_all(efi.join("EFI/debian")).unwrap();
    std::fs::write(efi.join("EFI/debian/grubx64.efi"), &grub).unwrap();
    std::fs::write(efi.join("EFI/debian/shimx64.efi"), b"MZ shim").unwrap();
    std::fs::write(efi.join("EFI/debian/mmx64.efi"), b"MZ mm").unwrap();
    // A debconf database without the question (a grub-efi older than Debian 9's, or a trimmed
    // config.dat): a warning without a fix (debconf-set-selections refuses an unknown question).
    let dc_path = root.join("var/cache/debconf/config.dat");
    let dc = std::fs::read_to_string(&dc_path).unwrap();
    let stanza_at = dc.find("Name: grub2/force_efi_extra_removable\n").unwrap();
    let stanza_end = stanza_at + dc[stanza_at..].find("\n\n").unwrap() + 2;
    let trimmed = format!("{}{}", &dc[..stanza_at], &dc[stanza_end..]);
    std::fs::write(&dc_path, &trimmed).unwrap();
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 2, "{rep:#}");
    assert_eq!(commands(&rep, "boot.grub-installed").len(), 1, "{rep:#}");
    let f = findings(&rep, "boot.grub-installed");
    assert_eq!(f[1]["severity"], "warning");
    assert!(f[1]["message"]
        .as_str()
        .unwrap()
        .contains("no grub2/force_efi_extra_removable question"));
    assert_eq!(
        commands(&rep, "boot.grub-installed")[0],
        [
            "cloudprep",
            "esp-install",
            "--dir",
            "/boot/efi",
            "EFI/debian/shimx64.efi=EFI/BOOT/BOOTX64.EFI",
            "EFI/debian/grubx64.efi=EFI/BOOT/grubx64.efi",
            "EFI/debian/mmx64.efi=EFI/BOOT/mmx64.efi"
        ]
        .map(String::from)
        .to_vec()
    );
    let out = g.cloudprep(&["fix", "--yes", "--only", "boot.grub-installed"]);
    let said = String::from_utf8_lossy(&out.stdout);
    // Exit 1: the debconf warning has no fix.
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(": applied\n"), "{said}");
    assert_eq!(
        std::fs::read(efi.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
        b"MZ shim"
    );
    assert!(std::fs::read(efi.join("EFI/BOOT/grubx64.efi")).unwrap() == grub);
    assert_eq!(
        std::fs::read(efi.join("EFI/BOOT/mmx64.efi")).unwrap(),
        b"MZ mm"
    );
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 1, "{rep:#}");
    assert_eq!(findings(&rep, "boot.grub-installed").len(), 1, "{rep:#}");
    std::fs::write(&dc_path, &dc).unwrap();
    let (code, rep) = common::audit_json(root, &["--only", "boot.grub-installed"]);
    assert_eq!(code, 1, "only the debconf warning: {rep:#}");
    std::fs::write(&dc_path, &trimmed).unwrap();
    let out = g.cloudprep(&["rollback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !efi.join("EFI/BOOT").exists(),
        "rollback left \\EFI\\BOOT behind"
    );
    assert!(efi.join("EFI/debian/grubx64.efi").exists());
    assert_eq!(std::fs::read_to_string(&dc_path).unwrap(), trimmed);
}
