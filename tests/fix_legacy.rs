//! `cloudprep fix` on a real debootstrap guest on a loop-mounted ext4 disk, configured like an old VMware
//! guest: after fix the audit is clean (only non-fixable warnings), the distro validators accept every
//! rewritten file, update-grub and update-initramfs really ran in the chroot, a second fix plans nothing,
//! and rollback restores the tree byte for byte.
mod common;

use common::legacy::{kernel_version, make_vmware_guest};
use common::{findings, sh, tree_state, DiskGuest};

const STATE_DIRS: &[&str] = &[
    "/etc",
    "/boot",
    "/var/cache/debconf",
    "/var/lib/dpkg",
    "/var/lib/cloud",
    "/usr/lib/modules",
];
// apt's own caches and logs change on any apt-get run and are not cloudprep's to restore.
const STATE_SKIP: &[&str] = &[
    "/etc/ld.so.cache",
    "/var/lib/dpkg/lock",
    "/var/cache/debconf/templates.dat-old",
    "/var/cache/debconf/config.dat-old",
];

#[test]
fn fix_then_rollback_on_a_vmware_guest() {
    common::require_root();
    // cloud-init is preinstalled (an `apt-get install` is the one step rollback cannot undo byte for byte;
    // it has its own test) but disabled, as VMware templates often have it.
    let dg = DiskGuest::new("bookworm", "cloud");
    let g = &dg.guest;
    make_vmware_guest(g);
    g.write("/etc/cloud/cloud-init.disabled", "");
    let k = kernel_version(g);
    // The offline root cannot see which device the guest calls /dev/sda5: the operator maps it.
    g.write(
        "/etc/cloudprep/cloudprep.toml",
        &format!("[devices]\n\"/dev/sda5\" = \"UUID={}\"\n", dg.swap_uuid),
    );
    let before = tree_state(g.root(), STATE_DIRS, STATE_SKIP);

    // The dry run shows the plan and changes nothing.
    let out = g.cloudprep(&["fix", "--dry-run"]);
    let dry = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dry.contains("/etc/fstab"),
        "dry run must show the fstab diff:\n{dry}"
    );
    assert!(dry.contains(&format!("UUID={}", dg.root_uuid)), "{dry}");
    assert_eq!(
        before,
        tree_state(g.root(), STATE_DIRS, STATE_SKIP),
        "--dry-run changed files"
    );

    let out = g.cloudprep(&["fix", "--yes", "-v"]);
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.code().unwrap_or(9) <= 1,
        "fix did not reach a clean audit:\n{log}"
    );

    // The re-audit: no blockers, nothing fixable left.
    let (code, r) = g.audit_json(&[]);
    assert!(code <= 1, "audit after fix: {:#}", r["findings"]);
    assert!(
        findings(&r, "platform.hypervisor-tools").len() == 1,
        "non-fixable warning stays reported"
    );
    assert!(
        r["plan"]["files"].as_array().unwrap().is_empty(),
        "second fix must plan nothing: {:#}",
        r["plan"]
    );

    // Validators accept what was written.
    sh(
        "findmnt",
        &[
            "--verify",
            "--tab-file",
            g.path("/etc/fstab").to_str().unwrap(),
        ],
    );
    let fstab = g.read("/etc/fstab");
    assert!(fstab.contains(&format!("UUID={}", dg.root_uuid)), "{fstab}");
    assert!(
        fstab.starts_with("# /etc/fstab: static file system information.\n"),
        "comments kept: {fstab}"
    );
    sh(
        "grub-script-check",
        &[g.path("/boot/grub/grub.cfg").to_str().unwrap()],
    );
    let grubcfg = g.read("/boot/grub/grub.cfg");
    assert!(
        grubcfg.contains(&format!("root=UUID={}", dg.root_uuid)),
        "update-grub must name the root by UUID:\n{grubcfg}"
    );
    assert!(grubcfg.contains("console=ttyS0"), "{grubcfg}");
    // update-grub put GRUB's own menu on the serial port (boot.serial-terminal).
    assert!(
        grubcfg.contains("serial --speed=115200")
            && grubcfg.contains("terminal_output console serial"),
        "{grubcfg}"
    );
    assert!(!grubcfg.contains("root=/dev/loop"), "{grubcfg}");
    let listed = sh(
        "chroot",
        &[
            g.root().to_str().unwrap(),
            "ifquery",
            "-i",
            "/etc/network/interfaces",
            "--list",
        ],
    );
    // eth0 is left to cloud-init (its interfaces.d/50-cloud-init in the cloud): one configuration only.
    assert!(!listed.lines().any(|l| l.trim() == "eth0"), "{listed}");
    let ifaces = g.read("/etc/network/interfaces");
    assert!(
        ifaces.contains("source /etc/network/interfaces.d/*"),
        "{ifaces}"
    );
    assert!(ifaces.contains("# iface eth0 inet static"), "{ifaces}");
    assert!(ifaces.contains("iface lo inet loopback"), "{ifaces}");
    assert!(!g.path("/etc/udev/rules.d/70-persistent-net.rules").exists());
    assert!(!g.path("/etc/cloud/cloud-init.disabled").exists());
    // The rebuilt initramfs contains the virtio drivers.
    let listing = sh(
        "chroot",
        &[
            g.root().to_str().unwrap(),
            "lsinitramfs",
            &format!("/boot/initrd.img-{k}"),
        ],
    );
    assert!(
        listing.contains("virtio_blk.ko"),
        "virtio_blk missing from the rebuilt initramfs"
    );

    // A second fix changes nothing.
    let mid = tree_state(g.root(), STATE_DIRS, STATE_SKIP);
    let out = g.cloudprep(&["fix", "--yes"]);
    assert!(out.status.code().unwrap_or(9) <= 1);
    assert_eq!(
        mid,
        tree_state(g.root(), STATE_DIRS, STATE_SKIP),
        "second fix changed files"
    );

    // Rollback restores every file byte for byte, with modes and owners.
    let out = g.cloudprep(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rollback_log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = tree_state(g.root(), STATE_DIRS, STATE_SKIP);
    let diff: Vec<String> = before
        .iter()
        .filter(|(p, v)| after.get(*p) != Some(v))
        .map(|(p, v)| format!("{p}: {v} -> {:?}", after.get(p)))
        .chain(
            after
                .iter()
                .filter(|(p, _)| !before.contains_key(*p))
                .map(|(p, v)| format!("{p}: new {v}")),
        )
        .collect();
    assert!(
        diff.is_empty(),
        "rollback is not byte-identical:\n{}\nrollback said:\n{rollback_log}\nfix said:\n{log}",
        diff.join("\n")
    );
}
