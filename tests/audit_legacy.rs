//! The audit on a real debootstrap root configured like an old VMware guest: every planted problem is
//! reported with the right id and file:line, and the exit code is 2. A cloud-ready root exits 0.
mod common;

use common::legacy::{kernel_version, make_vmware_guest};
use common::{findings, has_evidence, Guest};

#[test]
fn vmware_guest_reports_every_planted_problem() {
    common::require_root();
    let g = Guest::bookworm();
    make_vmware_guest(&g);
    common::legacy::plant_old_firewall(&g);
    let k = kernel_version(&g);
    let (code, r) = g.audit_json(&[]);
    let ids: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(code, 2, "findings: {ids:?}");
    assert_eq!(r["summary"]["exit_code"], 2);

    let expect: &[(&str, &str, Option<u64>)] = &[
        ("fstab.device-names", "/etc/fstab", Some(5)),
        ("fstab.device-names", "/etc/fstab", Some(6)),
        ("boot.grub-uuid-disabled", "/etc/default/grub", None),
        ("boot.root-device-names", "/boot/grub/grub.cfg", Some(5)),
        ("boot.device-map", "/boot/grub/device.map", Some(1)),
        (
            "boot.grub-install-devices",
            "/var/cache/debconf/config.dat",
            None,
        ),
        (
            "boot.virtio-initramfs",
            &format!("/boot/initrd.img-{k}"),
            None,
        ),
        (
            "network.static-addressing",
            "/etc/network/interfaces",
            Some(7),
        ),
        (
            "network.udev-persistent-net",
            "/etc/udev/rules.d/70-persistent-net.rules",
            Some(5),
        ),
        ("cloud-init.installed", "/var/lib/dpkg/status", None),
        ("platform.hypervisor-tools", "/var/lib/dpkg/status", None),
        ("network.firewall-ssh", "/etc/iptables/rules.v4", None),
    ];
    let mut missing = Vec::new();
    for (id, path, line) in expect {
        if !has_evidence(&r, id, path, *line) {
            missing.push(format!("{id} at {path}:{line:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing findings: {missing:#?}\nreport findings: {:#}",
        r["findings"]
    );

    // Blockers are blockers.
    for id in [
        "fstab.device-names",
        "boot.virtio-initramfs",
        "network.udev-persistent-net",
        "cloud-init.installed",
    ] {
        assert!(
            findings(&r, id).iter().any(|f| f["severity"] == "blocker"),
            "{id} should be a blocker"
        );
    }
    // The dry run shows the fix: fstab's root line becomes a UUID or stays unresolved with a clear remediation.
    let fstab = &findings(&r, "fstab.device-names")[0];
    assert!(!fstab["remediation"].as_str().unwrap().is_empty());

    // The text report names the same evidence.
    let out = g.cloudprep(&["audit"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/etc/fstab:5:"), "{text}");
    assert!(text.contains("NOT READY"), "{text}");
    assert!(!text.contains("\x1b["), "no colour when not on a TTY");
}

/// A cloud-ready bookworm guest: cloud-init installed, fstab by UUID, DHCP, serial console, predictable
/// naming disabled, grub.cfg naming the root by UUID.
pub fn make_cloud_ready(g: &Guest) {
    let k = kernel_version(g);
    let uuid = "2f0e4b7c-3a51-4c1e-9d7a-5b8e2f6c1a90";
    g.write(
        "/etc/fstab",
        &format!("# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={uuid} / ext4 errors=remount-ro 0 1\n"),
    );
    // As Debian's cloud images have it: kernel and GRUB on the serial port.
    let grub = g.read("/etc/default/grub").replace(
        "GRUB_CMDLINE_LINUX=\"\"",
        "GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0\"\n\
         GRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --speed=115200\"",
    );
    g.write("/etc/default/grub", &grub);
    g.write(
        "/boot/grub/grub.cfg",
        &format!(
            "menuentry 'Debian GNU/Linux' {{\n\tsearch --no-floppy --fs-uuid --set=root {uuid}\n\tlinux\t/boot/vmlinuz-{k} root=UUID={uuid} ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0\n\tinitrd\t/boot/initrd.img-{k}\n}}\n"
        ),
    );
    // As Debian's cloud images have it: eth0 is cloud-init's (interfaces.d/50-cloud-init), the file only
    // reads that directory.
    g.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n",
    );
    g.write(
        "/etc/network/interfaces.d/50-cloud-init",
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n",
    );
    // What the guide's `dpkg-reconfigure cloud-init` writes.
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/91_ec2.cfg",
        "datasource:\n  Ec2:\n    strict_id: false\n",
    );
    // A generated locale, as any installed system has.
    g.write("/etc/locale.gen", "en_US.UTF-8 UTF-8\n");
    g.write("/etc/default/locale", "LANG=en_US.UTF-8\n");
    common::sh("chroot", &[g.root().to_str().unwrap(), "locale-gen"]);
}

#[test]
fn cloud_ready_guest_exits_0() {
    common::require_root();
    let g = Guest::release("bookworm", "cloud");
    make_cloud_ready(&g);
    let (code, r) = g.audit_json(&[]);
    let open: Vec<String> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| {
            format!(
                "{} {}: {} {}",
                f["severity"], f["id"], f["message"], f["evidence"]
            )
        })
        .collect();
    assert_eq!(
        code,
        0,
        "a cloud-ready root must exit 0; got findings:\n{}",
        open.join("\n")
    );
    assert_eq!(
        r["plan"]["files"].as_array().unwrap().len(),
        0,
        "nothing to fix: {:#}",
        r["plan"]
    );
}
