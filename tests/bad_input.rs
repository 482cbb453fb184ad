//! Bad input never crashes the audit: a directory, binary data, a symlink loop or a symlink pointing out of
//! the root where a config file belongs gives a finding or error naming the path, and the other checks run.
mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

const CONFIG_FILES: &[&str] = &[
    "/etc/fstab",
    "/etc/crypttab",
    "/etc/default/grub",
    "/boot/grub/grub.cfg",
    "/boot/grub/device.map",
    "/etc/initramfs-tools/initramfs.conf",
    "/etc/initramfs-tools/modules",
    "/etc/network/interfaces",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/netplan/01-netcfg.yaml",
    "/etc/cloud/cloud.cfg",
    "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
    "/etc/iptables/rules.v4",
    "/etc/nftables.conf",
    "/etc/ssh/sshd_config",
    "/var/cache/debconf/config.dat",
];

#[derive(Clone, Copy, Debug)]
enum Garbage {
    Directory,
    Binary,
    SymlinkLoop,
    SymlinkOutside,
}

/// A host file the symlinks of `Garbage::SymlinkOutside` point at: if any check read it (host semantics),
/// its text would show up in the report (the fstab check names the kernel device, the others quote it).
const HOST_FILE: &str = "/dev/sdq7 /cloudprep-host-secret ext4 defaults 0 1\n\
GRUB_CMDLINE_LINUX=\"cloudprep-host-secret\"\nauto cloudprep-host-secret\n";

fn plant(root: &Path, guest: &str, kind: Garbage, outside: &Path) {
    let p = root.join(guest.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match kind {
        Garbage::Directory => std::fs::create_dir_all(&p).unwrap(),
        Garbage::Binary => {
            std::fs::write(&p, b"\x7fELF\x02\x01\x01\0\0\0garbage\n\xff\xfe\0\0").unwrap()
        }
        Garbage::SymlinkLoop => {
            let other = format!("{}.loop", p.file_name().unwrap().to_string_lossy());
            symlink(&other, &p).unwrap();
            symlink(p.file_name().unwrap(), p.with_file_name(other)).unwrap();
        }
        Garbage::SymlinkOutside => symlink(
            format!("../../../../../../../../..{}", outside.display()),
            &p,
        )
        .unwrap(),
    }
}

fn audit_garbage(kind: Garbage) {
    let d = tempfile::tempdir().unwrap();
    // A real host file outside the root, for the symlinks that point out of it.
    let host = tempfile::tempdir().unwrap();
    let outside = host.path().join("host-only.conf");
    std::fs::write(&outside, HOST_FILE).unwrap();
    // A minimal but plausible guest: os-release and dpkg status exist.
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(
        d.path().join("var/lib/dpkg/status"),
        "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n",
    )
    .unwrap();
    for f in CONFIG_FILES {
        plant(d.path(), f, kind, &outside);
    }
    let out = common::run_cloudprep(d.path(), &["audit", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{kind:?}: cloudprep panicked: {stderr}"
    );
    let code = out.status.code().unwrap_or(-1);
    assert!(
        (0..=2).contains(&code),
        "{kind:?}: exit {code}, stderr {stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    common::validate_report(&r);
    let all = serde_json::to_string(&r["findings"]).unwrap();
    assert!(!all.contains("panic"), "{kind:?}: a check panicked: {all}");
    // Unreadable files are named, never silently skipped (the outside symlink resolves inside the root,
    // where nothing exists: reading it is then simply "absent", which is the safe answer).
    if !matches!(kind, Garbage::SymlinkOutside) {
        for f in ["/etc/fstab", "/etc/default/grub", "/etc/network/interfaces"] {
            assert!(all.contains(f), "{kind:?}: no finding names {f}: {all}");
        }
        assert!(
            code >= 1,
            "{kind:?}: unreadable config must not be reported as ready"
        );
    }
    // Nothing outside the root was read: the host file's text is nowhere in the report.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !report.contains("sdq7") && !report.contains("cloudprep-host-secret"),
        "{kind:?}: the host file {} was read: {report}",
        outside.display()
    );
    if matches!(kind, Garbage::SymlinkOutside) {
        // Control: the same file where the symlinks lead inside the root is read, and shows.
        let inside = d.path().join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, HOST_FILE).unwrap();
        let out = common::run_cloudprep(d.path(), &["audit", "--format", "json"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("sdq7") && report.contains("cloudprep-host-secret"),
            "the control read shows nothing: the check above proves nothing\n{report}"
        );
    }
}

#[test]
fn directories_where_files_belong() {
    audit_garbage(Garbage::Directory);
}

#[test]
fn binary_files() {
    audit_garbage(Garbage::Binary);
}

#[test]
fn symlink_loops() {
    audit_garbage(Garbage::SymlinkLoop);
}

#[test]
fn symlinks_pointing_outside_the_root() {
    audit_garbage(Garbage::SymlinkOutside);
}

#[test]
fn symlink_outside_is_read_inside_the_root() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::create_dir_all(d.path().join("srv")).unwrap();
    // The guest's /etc/fstab is an absolute symlink: it must be read from the guest's /srv, not the host's.
    std::fs::write(
        d.path().join("srv/fstab"),
        "/dev/sda1 / ext4 defaults 0 1\n",
    )
    .unwrap();
    symlink("/srv/fstab", d.path().join("etc/fstab")).unwrap();
    let (_code, r) = common::audit_json(d.path(), &["--only", "fstab."]);
    assert!(
        common::has_evidence(&r, "fstab.device-names", "/etc/fstab", Some(1))
            || common::has_evidence(&r, "fstab.device-names", "/srv/fstab", Some(1)),
        "{:#}",
        r["findings"]
    );
}
