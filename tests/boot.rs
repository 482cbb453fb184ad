//! Boot area: GRUB and initramfs checks on real debootstrap bookworm roots, with problems planted the way an
//! old VMware guest has them, and initramfs images made by the real cpio/gzip/zstd/xz/lz4/bzip2 tools.
mod common;

use cloudprep::audit::{apply_edits, run_with_facts, Selection};
use cloudprep::checks::boot::initramfs::cpio;
use cloudprep::checks::Status;
use cloudprep::config::Config;
use cloudprep::guest::facts::{Disk, Facts, Mount};
use cloudprep::guest::root::Root;
use common::{assert_findings, findings, has_evidence, sh, Guest};
use std::path::Path;
use std::process::{Command, Stdio};

const VER: &str = "6.1.0-50-amd64";

fn kernel(g: &Guest) -> String {
    let k: Vec<String> = std::fs::read_dir(g.path("/boot"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(k.len(), 1, "{k:?}");
    k[0].clone()
}

/// Run a shell pipeline (for `find | cpio | gzip` style image building).
fn pipeline(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with a few module files for `ver`; `virtio` adds the virtio drivers.
fn module_tree(dir: &Path, ver: &str, virtio: bool) {
    let mut mods = vec![
        "kernel/drivers/scsi/vmw_pvscsi.ko",
        "kernel/drivers/message/fusion/mptspi.ko",
        "kernel/fs/ext4/ext4.ko",
    ];
    if virtio {
        mods.extend([
            "kernel/drivers/block/virtio_blk.ko.xz",
            "kernel/drivers/scsi/virtio_scsi.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/virtio/virtio_pci.ko",
        ]);
    }
    for m in mods {
        let p = dir.join("usr/lib/modules").join(ver).join(m);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![0x7fu8; 3000]).unwrap();
    }
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("init"), "#!/bin/sh\n").unwrap();
}

fn names_by_cpio_tool(img: &Path, decompress: &str) -> usize {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{decompress} < '{}' | cpio -t --quiet",
            img.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn real_bookworm_initramfs_lists_like_cpio() {
    let g = Guest::bookworm();
    let ver = kernel(&g);
    let img = g.path(&format!("/boot/initrd.img-{ver}"));
    let t = std::time::Instant::now();
    let l = cpio::list(std::fs::File::open(&img).unwrap()).unwrap();
    eprintln!(
        "listed {} entries of {} in {:?}",
        l.entries.len(),
        img.display(),
        t.elapsed()
    );
    assert_eq!(l.segments[0].compression, cpio::Compression::Zstd);
    assert_eq!(l.entries.len(), names_by_cpio_tool(&img, "zstd -dc"));
    let mods: Vec<_> = l
        .entries
        .iter()
        .filter_map(|e| cloudprep::checks::boot::initramfs::module_of(&e.name, &ver))
        .collect();
    assert!(mods.contains(&"virtio_blk".to_string()), "{mods:?}");
}

#[test]
fn images_made_by_real_tools() {
    let d = tempfile::tempdir_in(common::scratch()).unwrap();
    let tree = d.path().join("tree");
    module_tree(&tree, VER, true);
    let early = d.path().join("early");
    std::fs::create_dir_all(early.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        early.join("kernel/x86/microcode/GenuineIntel.bin"),
        vec![1u8; 4097],
    )
    .unwrap();
    pipeline(&early, "find . | cpio -o -H newc --quiet > ../early.cpio");
    for (name, comp) in [
        ("gz", "gzip -9"),
        ("zst", "zstd -q -19"),
        ("xz", "xz --check=crc32"),
        ("lz4", "lz4 -q -9 -l"),
        ("lzma", "lzma -c"),
    ] {
        let img = d.path().join(format!("initrd.{name}"));
        pipeline(
            &tree,
            &format!(
                "find . | LC_ALL=C sort | cpio -o -H newc --quiet | {comp} > {}",
                img.display()
            ),
        );
        let l = cpio::list(std::fs::File::open(&img).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let n = l
            .entries
            .iter()
            .filter_map(|e| cloudprep::checks::boot::initramfs::module_of(&e.name, VER))
            .count();
        assert_eq!(n, 7, "{name}: {:?}", l.entries);
        // Concatenated early (raw) + main, as initramfs-tools writes it with microcode.
        let cat = d.path().join(format!("initrd-early.{name}"));
        pipeline(
            d.path(),
            &format!("cat early.cpio {} > {}", img.display(), cat.display()),
        );
        let l = cpio::list(std::fs::File::open(&cat).unwrap())
            .unwrap_or_else(|e| panic!("early+{name}: {e:#}"));
        assert_eq!(l.segments.len(), 2, "{name}");
        assert_eq!(l.segments[0].compression, cpio::Compression::None);
        assert!(l
            .entries
            .iter()
            .any(|e| e.name == "kernel/x86/microcode/GenuineIntel.bin"));
        assert_eq!(
            l.entries
                .iter()
                .filter_map(|e| cloudprep::checks::boot::initramfs::module_of(&e.name, VER))
                .count(),
            7
        );
    }
    // cpio's own "crc" format and bzip2 (recognised, reported as not listable).
    let crc = d.path().join("initrd.crc");
    pipeline(
        &tree,
        &format!("find . | cpio -o -H crc --quiet | gzip > {}", crc.display()),
    );
    assert_eq!(
        cpio::list(std::fs::File::open(&crc).unwrap())
            .unwrap()
            .entries
            .len(),
        names_by_cpio_tool(&crc, "gzip -dc")
    );
    let bz = d.path().join("initrd.bz2");
    pipeline(
        &tree,
        &format!(
            "cat ../early.cpio > {b}; find . | cpio -o -H newc --quiet | bzip2 >> {b}",
            b = bz.display()
        ),
    );
    let l = cpio::list(std::fs::File::open(&bz).unwrap()).unwrap();
    assert!(l.incomplete.as_deref().unwrap_or("").contains("bzip2"));
    // The old binary cpio format is not what the kernel reads.
    let odc = d.path().join("initrd.odc");
    pipeline(
        &tree,
        &format!("find . | cpio -o -H odc --quiet > {}", odc.display()),
    );
    assert!(cpio::list(std::fs::File::open(&odc).unwrap()).is_err());
}

/// Plant an old VMware guest's boot configuration.
fn plant_vmware(g: &Guest, ver: &str) {
    let dg = g.read("/etc/default/grub");
    let dg = dg
        .replace("#GRUB_DISABLE_LINUX_UUID=true", "GRUB_DISABLE_LINUX_UUID=true")
        .replace("GRUB_CMDLINE_LINUX=\"\"", "GRUB_CMDLINE_LINUX=\"root=/dev/sda1 net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX \\\n  resume=/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part5\"");
    g.write("/etc/default/grub", &dg);
    g.write(
        "/boot/grub/grub.cfg",
        &format!(
            "#\n# DO NOT EDIT THIS FILE\n#\nset default=\"0\"\ninsmod part_msdos\ninsmod ext2\nset root='hd0,msdos1'\n\
             menuentry 'Debian GNU/Linux' --class debian {{\n\tload_video\n\tinsmod gzio\n\tset root='hd0,msdos1'\n\
             \tlinux\t/boot/vmlinuz-{ver} root=/dev/sda1 ro  quiet\n\tinitrd\t/boot/initrd.img-{ver}\n}}\n"
        ),
    );
    g.write(
        "/boot/grub/device.map",
        "(hd0)\t/dev/sda\n(fd0)\t/dev/fd0\n",
    );
    let cd = g.read("/var/cache/debconf/config.dat");
    let cd = cd.replace(
        "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nOwners: grub-pc\n",
        "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001\nOwners: grub-pc\nFlags: seen\n",
    );
    assert!(
        cd.contains("ata-VMware"),
        "config.dat stanza layout changed"
    );
    g.write("/var/cache/debconf/config.dat", &cd);
    let ic = g
        .read("/etc/initramfs-tools/initramfs.conf")
        .replace("MODULES=most", "MODULES=dep");
    g.write("/etc/initramfs-tools/initramfs.conf", &ic);
    // An initramfs made for VMware hardware only (MODULES=dep): no virtio.
    let tree = tempfile::tempdir_in(common::scratch()).unwrap();
    module_tree(tree.path(), ver, false);
    pipeline(
        tree.path(),
        &format!(
            "find . | cpio -o -H newc --quiet | gzip > {}",
            g.path(&format!("/boot/initrd.img-{ver}")).display()
        ),
    );
}

fn line_of(g: &Guest, path: &str, needle: &str) -> u64 {
    g.read(path)
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in {path}")) as u64
        + 1
}

#[test]
fn vmware_guest_boot_findings_and_plan() {
    let g = Guest::bookworm();
    let ver = kernel(&g);
    // The untouched root: the real MODULES=most initramfs has virtio; no GRUB blockers.
    let (_, clean) = g.audit_json(&[]);
    for id in [
        "boot.virtio-initramfs",
        "boot.root-device-names",
        "boot.grub-uuid-disabled",
        "boot.device-map",
        "boot.grub-install-devices",
    ] {
        assert!(
            findings(&clean, id).is_empty(),
            "{id} fired on the clean root: {:#}",
            clean["findings"]
        );
    }
    // A directory root: the MBR cannot be read, which is info, not a blocker.
    let gi = findings(&clean, "boot.grub-installed");
    assert!(gi.iter().all(|f| f["severity"] == "info"), "{gi:?}");
    assert!(has_evidence(
        &clean,
        "boot.serial-console",
        "/etc/default/grub",
        Some(line_of(&g, "/etc/default/grub", "GRUB_CMDLINE_LINUX=\"\""))
    ));
    // Debian's default /etc/default/grub only has `#GRUB_TERMINAL=console`: GRUB draws on gfxterm.
    assert!(has_evidence(
        &clean,
        "boot.serial-terminal",
        "/etc/default/grub",
        None
    ));

    plant_vmware(&g, &ver);
    sh(
        "grub-script-check",
        &[g.path("/boot/grub/grub.cfg").to_str().unwrap()],
    );
    sh("sh", &["-n", g.path("/etc/default/grub").to_str().unwrap()]);
    let (code, r) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let dg = "/etc/default/grub";
    let sev = |id: &str| {
        findings(&r, id)
            .first()
            .map(|f| f["severity"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(has_evidence(
        &r,
        "boot.root-device-names",
        dg,
        Some(line_of(&g, dg, "root=/dev/sda1"))
    ));
    assert!(has_evidence(
        &r,
        "boot.root-device-names",
        dg,
        Some(line_of(&g, dg, "$GRUB_CMDLINE_LINUX \\"))
    ));
    assert!(has_evidence(
        &r,
        "boot.root-device-names",
        "/boot/grub/grub.cfg",
        Some(12)
    ));
    assert_eq!(sev("boot.root-device-names"), "blocker");
    assert!(has_evidence(
        &r,
        "boot.grub-uuid-disabled",
        dg,
        Some(line_of(&g, dg, "GRUB_DISABLE_LINUX_UUID=true"))
    ));
    assert_eq!(sev("boot.grub-uuid-disabled"), "blocker");
    assert!(has_evidence(
        &r,
        "boot.device-map",
        "/boot/grub/device.map",
        Some(1)
    ));
    let cd = "/var/cache/debconf/config.dat";
    assert!(has_evidence(
        &r,
        "boot.grub-install-devices",
        cd,
        Some(line_of(&g, cd, "Value: /dev/disk/by-id/ata-VMware"))
    ));
    let initrd = format!("/boot/initrd.img-{ver}");
    assert!(has_evidence(&r, "boot.virtio-initramfs", &initrd, None));
    assert!(has_evidence(
        &r,
        "boot.virtio-initramfs",
        "/etc/initramfs-tools/initramfs.conf",
        Some(line_of(
            &g,
            "/etc/initramfs-tools/initramfs.conf",
            "MODULES=dep"
        ))
    ));
    assert_eq!(sev("boot.virtio-initramfs"), "blocker");
    // The plan: commands in order, update-grub once.
    let cmds: Vec<String> = common::argvs(&r["plan"]["commands"])
        .iter()
        .map(|a| a.join(" "))
        .collect();
    assert_eq!(
        cmds.iter().filter(|c| *c == "update-grub").count(),
        1,
        "{cmds:?}"
    );
    let ui = cmds
        .iter()
        .position(|c| c == "update-initramfs -u -k all")
        .expect("update-initramfs planned");
    assert!(ui < cmds.iter().position(|c| c == "update-grub").unwrap());

    // Apply the composed plan's edits from Rust and validate the results with the real tools.
    let root = Root::new(g.root()).unwrap();
    let config = Config::default();
    let audit = cloudprep::audit::run(&root, &config, &Selection::default());
    for pf in &audit.plan.files {
        assert!(pf.error.is_none(), "{}: {:?}", pf.path, pf.error);
        let before = root.read_text(&pf.path).unwrap();
        let after =
            apply_edits(&pf.edits, before.is_some(), before.as_deref().unwrap_or("")).unwrap();
        // Idempotent: applying the same edits again changes nothing.
        if let Some(a) = &after {
            assert_eq!(
                &apply_edits(&pf.edits, true, a).unwrap().unwrap(),
                a,
                "{} not idempotent",
                pf.path
            );
        }
        match after {
            Some(a) => g.write(&pf.path, &a),
            None => g.remove(&pf.path),
        }
    }
    let dgt = g.read(dg);
    sh("sh", &["-n", g.path(dg).to_str().unwrap()]);
    assert!(
        !dgt.contains("/dev/sda1") && !dgt.contains("by-id"),
        "{dgt}"
    );
    assert!(dgt.contains("#GRUB_DISABLE_LINUX_UUID=true"));
    assert!(
        dgt.contains("\nGRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200\"\n"),
        "{dgt}"
    );
    // The values as grub-mkconfig sees them: the file sourced by sh.
    let sourced = |expr: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}'; printf {expr}", g.path(dg).display()))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let cmdline = sourced("%s \"$GRUB_CMDLINE_LINUX\"");
    assert!(
        cmdline.contains("net.ifnames=0")
            && cmdline.contains("console=ttyS0,115200")
            && !cmdline.contains("root="),
        "{cmdline}"
    );
    // GRUB's own terminal on the serial port too.
    assert_eq!(
        sourced("'%s|%s' \"$GRUB_TERMINAL\" \"$GRUB_SERIAL_COMMAND\""),
        "console serial|serial --speed=115200"
    );
    assert!(!g.path("/boot/grub/device.map").exists());
    assert!(g
        .read(cd)
        .contains("Value: /dev/vda\nOwners: grub-pc\nFlags: seen\n"));
    let m = g.read("/etc/initramfs-tools/modules");
    for v in ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"] {
        assert!(m.lines().any(|l| l == v), "{m}");
    }
    // After the edits only what update-grub / update-initramfs must regenerate remains.
    let (_, after) = g.audit_json(&[]);
    for id in [
        "boot.grub-uuid-disabled",
        "boot.device-map",
        "boot.grub-install-devices",
        "boot.serial-console",
        "boot.serial-terminal",
    ] {
        assert!(
            findings(&after, id).is_empty(),
            "{id} still fires: {:#}",
            after["findings"]
        );
    }
    // grub.cfg is only regenerated: its evidence remains until update-grub runs.
    assert!(has_evidence(
        &after,
        "boot.root-device-names",
        "/boot/grub/grub.cfg",
        Some(12)
    ));
    assert!(!has_evidence(&after, "boot.root-device-names", dg, None));
}

#[test]
fn initramfs_with_early_microcode_and_virtio_passes() {
    let g = Guest::bookworm();
    let ver = kernel(&g);
    let d = tempfile::tempdir_in(common::scratch()).unwrap();
    let tree = d.path().join("main");
    module_tree(&tree, &ver, true);
    std::fs::create_dir_all(d.path().join("early/kernel/x86/microcode")).unwrap();
    std::fs::write(
        d.path().join("early/kernel/x86/microcode/AuthenticAMD.bin"),
        b"mc",
    )
    .unwrap();
    let img = g.path(&format!("/boot/initrd.img-{ver}"));
    pipeline(d.path(), &format!("(cd early && find . | cpio -o -H newc --quiet) > {i}; (cd main && find . | cpio -o -H newc --quiet | zstd -q) >> {i}", i = img.display()));
    let (_, r) = g.audit_json(&["--only", "boot.virtio-initramfs"]);
    assert_findings(&r, "boot.virtio-initramfs", 0);
    // Garbage in the image: the drivers cannot be verified (a warning naming the file), never a crash.
    std::fs::write(&img, b"this is not an initramfs").unwrap();
    let (_, r) = g.audit_json(&["--only", "boot.virtio-initramfs"]);
    let f = findings(&r, "boot.virtio-initramfs");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["severity"], "warning");
    assert!(f[0]["message"]
        .as_str()
        .unwrap()
        .contains("could not be inspected"));
    // No initramfs at all.
    std::fs::remove_file(&img).unwrap();
    let (code, r) = g.audit_json(&["--only", "boot.virtio-initramfs"]);
    assert_eq!(code, 2);
    assert!(findings(&r, "boot.virtio-initramfs")[0]["message"]
        .as_str()
        .unwrap()
        .contains("no initramfs"));
    // Built-in drivers count as present.
    let cfg = g.read(&format!("/boot/config-{ver}"));
    let cfg = [
        "CONFIG_VIRTIO_PCI",
        "CONFIG_VIRTIO_BLK",
        "CONFIG_SCSI_VIRTIO",
        "CONFIG_VIRTIO_NET",
    ]
    .iter()
    .fold(cfg, |c, s| c.replace(&format!("{s}=m"), &format!("{s}=y")));
    g.write(&format!("/boot/config-{ver}"), &cfg);
    let (_, r) = g.audit_json(&["--only", "boot.virtio-initramfs"]);
    assert_findings(&r, "boot.virtio-initramfs", 0);
}

/// Facts for a guest whose `/` is on `disk` (an image file standing in for the boot disk).
fn facts_on_disk(root: &Root, disk: &Path) -> Facts {
    let mut f = Facts::gather(root);
    let d = disk.display().to_string();
    f.root_device = Some(format!("{d}-part1"));
    f.disks = vec![Disk {
        name: d.clone(),
        size: 1 << 20,
        partitions: vec![format!("{d}-part1")],
        removable: false,
        kind: "disk".into(),
        ..Default::default()
    }];
    f.mounts.push(Mount {
        target: "/".into(),
        source: format!("{d}-part1"),
        fstype: "ext4".into(),
        options: "rw".into(),
        dev: "7:1".into(),
    });
    f
}

#[test]
fn grub_boot_code_in_the_mbr() {
    let g = Guest::bookworm();
    let root = Root::new(g.root()).unwrap();
    let config = Config::default();
    let sel = Selection {
        only: vec!["boot.grub-installed".into()],
        skip: vec![],
    };
    let d = tempfile::tempdir_in(common::scratch()).unwrap();
    let disk = d.path().join("disk.img");
    // An empty disk (partition table only): blocker, with grub-install planned for that disk.
    let mut mbr = vec![0u8; 1 << 20];
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    std::fs::write(&disk, &mbr).unwrap();
    let a = run_with_facts(&root, &config, &sel, facts_on_disk(&root, &disk));
    assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
    assert_eq!(a.findings[0].severity, cloudprep::checks::Severity::Blocker);
    assert_eq!(
        a.plan.commands[0].argv,
        vec!["grub-install".to_string(), disk.display().to_string()]
    );
    // GRUB's real boot.img (from the guest's grub-pc-bin) in the MBR: passes.
    let boot_img = std::fs::read(g.path("/usr/lib/grub/i386-pc/boot.img")).unwrap();
    assert_eq!(boot_img.len(), 512);
    mbr[..440].copy_from_slice(&boot_img[..440]);
    std::fs::write(&disk, &mbr).unwrap();
    let a = run_with_facts(&root, &config, &sel, facts_on_disk(&root, &disk));
    assert!(a.findings.is_empty(), "{:?}", a.findings);
    // Unreadable disk: info, not a blocker.
    std::fs::remove_file(&disk).unwrap();
    let a = run_with_facts(&root, &config, &sel, facts_on_disk(&root, &disk));
    assert_eq!(a.findings[0].severity, cloudprep::checks::Severity::Info);
    assert_eq!(a.findings[0].status, Status::Open);
    // UEFI guest, ESP not mounted and nowhere to be found (the disk has no EFI system partition): a
    // blocker that says how to make it verifiable, never READY.
    std::fs::write(&disk, &mbr).unwrap();
    let mut f = facts_on_disk(&root, &disk);
    f.boot_mode = Some(cloudprep::guest::facts::BootMode::Uefi);
    std::fs::create_dir_all(g.path("/boot/efi/EFI/debian")).unwrap();
    std::fs::write(g.path("/boot/efi/EFI/debian/grubx64.efi"), b"MZ").unwrap();
    let a = run_with_facts(&root, &config, &sel, f.clone());
    assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
    assert_eq!(a.findings[0].severity, cloudprep::checks::Severity::Blocker);
    assert!(
        a.findings[0].message.contains("could not be verified"),
        "{}",
        a.findings[0].message
    );
    assert!(
        a.findings[0].message.contains("no EFI system partition"),
        "{}",
        a.findings[0].message
    );
    assert!(a.findings[0].remediation.contains("/boot/efi"));
    assert!(a.plan.commands.is_empty());
    // ESP mounted at /boot/efi without the removable fallback loader: the guest's GRUB is copied there.
    f.mounts.push(Mount {
        target: "/boot/efi".into(),
        source: format!("{}-part2", disk.display()),
        fstype: "vfat".into(),
        options: "rw".into(),
        dev: "7:2".into(),
    });
    let a = run_with_facts(&root, &config, &sel, f.clone());
    assert_eq!(a.findings[0].severity, cloudprep::checks::Severity::Blocker);
    assert_eq!(
        a.plan.commands[0].argv,
        [
            "cloudprep",
            "esp-install",
            "--dir",
            "/boot/efi",
            "EFI/debian/grubx64.efi=EFI/BOOT/BOOTX64.EFI"
        ]
    );
    // A fallback loader that is not an EFI executable is no fallback loader.
    std::fs::create_dir_all(g.path("/boot/efi/EFI/boot")).unwrap();
    std::fs::write(g.path("/boot/efi/EFI/boot/bootx64.efi"), b"").unwrap();
    let a = run_with_facts(&root, &config, &sel, f.clone());
    assert!(
        a.findings[0].message.contains("not an EFI executable"),
        "{:?}",
        a.findings
    );
    assert_eq!(
        a.plan.commands[0].argv[4],
        "EFI/debian/grubx64.efi=EFI/boot/BOOTX64.EFI"
    );
    std::fs::write(g.path("/boot/efi/EFI/boot/bootx64.efi"), b"MZ").unwrap();
    let a = run_with_facts(&root, &config, &sel, f);
    assert!(a.findings.is_empty(), "{:?}", a.findings);
}

#[test]
fn root_device_resolved_to_uuid_from_facts_and_config() {
    let d = tempfile::tempdir().unwrap();
    let root = Root::new(d.path()).unwrap();
    std::fs::create_dir_all(d.path().join("etc/default")).unwrap();
    std::fs::write(
        d.path().join("etc/default/grub"),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet resume=/dev/sdb1\"\nGRUB_CMDLINE_LINUX='root=/dev/sda1 console=ttyS0,115200n8'\nGRUB_TERMINAL=serial\n",
    )
    .unwrap();
    let mut facts = Facts::default();
    facts.filesystems.push(cloudprep::guest::facts::Filesystem {
        device: "/dev/sda1".into(),
        fstype: "ext4".into(),
        uuid: Some("0a1b2c3d-1111-2222-3333-444455556666".into()),
        ..Default::default()
    });
    let config = Config::parse("[devices]\n\"/dev/sdb1\" = \"UUID=77-88\"\n").unwrap();
    let sel = Selection {
        only: vec!["boot.".into()],
        skip: vec![],
    };
    let a = run_with_facts(&root, &config, &sel, facts);
    let ids: Vec<&str> = a
        .findings
        .iter()
        .filter(|f| f.severity != cloudprep::checks::Severity::Info)
        .map(|f| f.id.as_str())
        .collect();
    // console=ttyS0,115200n8 counts as a serial console, GRUB_TERMINAL=serial as a serial terminal.
    assert_eq!(ids, vec!["boot.root-device-names"], "{:?}", a.findings);
    let pf = a
        .plan
        .files
        .iter()
        .find(|f| f.path == "/etc/default/grub")
        .unwrap();
    let after = apply_edits(
        &pf.edits,
        true,
        &std::fs::read_to_string(d.path().join("etc/default/grub")).unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        after,
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet resume=UUID=77-88\"\nGRUB_CMDLINE_LINUX='root=UUID=0a1b2c3d-1111-2222-3333-444455556666 console=ttyS0,115200n8'\nGRUB_TERMINAL=serial\n"
    );
    std::fs::write(d.path().join("etc/default/grub"), &after).unwrap();
    sh(
        "sh",
        &["-n", d.path().join("etc/default/grub").to_str().unwrap()],
    );
    assert_eq!(
        a.plan
            .commands
            .iter()
            .map(|c| c.argv.join(" "))
            .collect::<Vec<_>>(),
        vec!["update-grub"]
    );
}

#[test]
fn mbr_of_a_real_loop_disk() {
    common::require_root();
    let g = Guest::bookworm();
    let root = Root::new(g.root()).unwrap();
    let disk = common::loopdev::LoopDisk::new(16, "label: dos\n,,L,*\n");
    let part = disk.part(1);
    assert!(Path::new(&part).exists(), "{part} missing");
    // Facts as the probe reports them for a root on the loop disk's first partition: the disk is found
    // through sysfs.
    let mut f = Facts::gather(&root);
    f.root_device = Some(part.clone());
    f.disks.clear();
    f.mounts.push(Mount {
        target: "/".into(),
        source: part.clone(),
        fstype: "ext4".into(),
        options: "rw".into(),
        dev: "7:1".into(),
    });
    let sel = Selection {
        only: vec!["boot.grub-installed".into()],
        skip: vec![],
    };
    let config = Config::default();
    let a = run_with_facts(&root, &config, &sel, f.clone());
    assert_eq!(a.findings.len(), 1);
    assert_eq!(
        a.findings[0].severity,
        cloudprep::checks::Severity::Blocker,
        "{:?}",
        a.findings
    );
    assert_eq!(
        a.plan.commands[0].argv,
        vec!["grub-install".to_string(), disk.dev.clone()]
    );
    // Put GRUB's boot.img into the MBR (keeping the partition table), as grub-install does.
    let boot_img = std::fs::read(g.path("/usr/lib/grub/i386-pc/boot.img")).unwrap();
    sh(
        "dd",
        &[
            &format!("if={}", g.path("/usr/lib/grub/i386-pc/boot.img").display()),
            &format!("of={}", disk.dev),
            "bs=440",
            "count=1",
            "conv=notrunc,fsync",
        ],
    );
    assert_eq!(boot_img.len(), 512);
    let a = run_with_facts(&root, &config, &sel, f);
    assert!(a.findings.is_empty(), "{:?}", a.findings);
}

#[test]
fn free_space_in_a_small_boot_filesystem() {
    common::require_root();
    let d = tempfile::tempdir_in(common::scratch()).unwrap();
    let mut disk = common::loopdev::LoopDisk::new(48, "");
    sh("mkfs.ext4", &["-q", "-F", "-m", "0", &disk.dev.clone()]);
    let dev = disk.dev.clone();
    disk.mount(&dev, &d.path().join("boot"), &[]);
    let root = Root::new(d.path()).unwrap();
    let config = Config::default();
    let sel = Selection {
        only: vec!["boot.free-space".into()],
        skip: vec![],
    };
    // A 20 MiB initramfs on a ~45 MiB /boot: rebuilding it needs about 72 MiB.
    std::fs::write(
        d.path().join("boot/initrd.img-6.1.0-50-amd64"),
        vec![0x5au8; 20 << 20],
    )
    .unwrap();
    let a = run_with_facts(&root, &config, &sel, Facts::default());
    assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
    assert_eq!(a.findings[0].severity, cloudprep::checks::Severity::Warning);
    assert!(a.findings[0]
        .evidence
        .iter()
        .any(|e| e.path == "/boot/initrd.img-6.1.0-50-amd64"));
    assert!(a.findings[0].fix.is_none());
    std::fs::write(
        d.path().join("boot/initrd.img-6.1.0-50-amd64"),
        vec![0x5au8; 1 << 20],
    )
    .unwrap();
    let a = run_with_facts(&root, &config, &sel, Facts::default());
    assert!(a.findings.is_empty(), "{:?}", a.findings);
}
