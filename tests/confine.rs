//! Guest programs run by cloudprep under `--root` are confined (issue 13, point 2; review C2): a hostile
//! image ships its own `ifquery` (run as a validator), `update-grub` (a planned command) and `grub-install`
//! (run by `lifecycle::run_in_guest`), each of which tries to escape — `/proc/1/root`, `/proc/1/environ`,
//! a classic double-chroot, `mknod` of a host disk, writing a host disk it can see, `/proc/sys`, `/sys`,
//! mounting — and writes down what it could do. The test asserts each attempt failed, from that record and
//! from the host itself (the host disk, a host marker file, the hostname, the host's `/dev` and mounts).
//! Needs root (scripts/test.sh refuses to run without it).

mod common;

use cloudprep::audit::compose_plan;
use cloudprep::checks::{FileEdit, Fix, Phase, PlannedCommand, Validator};
use cloudprep::config::Config;
use cloudprep::fix::{self, ExecOptions};
use cloudprep::guest::root::Root;
use common::{finding, mounts_under};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const CANARY: &str = "CLOUDPREP_TEST_CANARY";
const CANARY_VALUE: &str = "host-secret-8f3a1c";

/// The probe a hostile image plants in place of a program cloudprep runs. `@MARK@` is a host file the
/// guest must never see, `@HOSTDISK@` a host block device (`major minor name`) it must never write.
const PROBE: &str = r#"#!/bin/sh
# Planted by tests/confine.rs: try to escape, record what worked.
out=/var/tmp/confine-$(basename "$0").txt
exec >"$out" 2>&1
set -- @HOSTDISK@
hmaj=$1; hmin=$2; hname=$3
echo "pid=$$"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
if cat /proc/1/environ >/dev/null 2>&1; then
    echo "environ=readable"; tr '\0' '\n' </proc/1/environ | sed 's/^/env: /'
else
    echo "environ=denied"
fi
echo "proc1root=$(readlink /proc/1/root 2>/dev/null || echo denied)"
if [ -e /proc/1/root/@MARK@ ] || [ -e /proc/1/cwd/@MARK@ ] || [ -e @MARK@ ]; then
    echo "mark=visible"
else
    echo "mark=hidden"
fi
perl -e '
    mkdir "/tmp/esc"; chroot "/tmp/esc" or print "chroot: $!\n";
    chdir ".." for 1..64; chroot ".";
    print((-e "@MARK@") ? "double-chroot=escaped\n" : "double-chroot=contained\n");
'
echo "dev=$(ls /dev | tr '\n' ' ')"
if [ -b "/dev/$hname" ]; then echo "hostdisk-node=present"; else echo "hostdisk-node=absent"; fi
if mknod /tmp/hd b "$hmaj" "$hmin" 2>/dev/null; then echo "mknod=ok"; else echo "mknod=denied"; fi
for n in "/dev/$hname" /tmp/hd; do
    perl -e 'use Fcntl; my $n = shift;
        if (sysopen(my $f, $n, O_WRONLY)) { syswrite($f, "PWNED-BY-GUEST") > 0 ? print "write $n=ok\n" : print "write $n=failed\n" }
        else { print "write $n=denied\n" }' "$n"
done
h=$(cat /proc/sys/kernel/hostname)
if printf '%s' "$h" 2>/dev/null >/proc/sys/kernel/hostname; then echo "proc-sys=writable"; else echo "proc-sys=read-only"; fi
if printf 0 2>/dev/null >"/sys/block/$hname/queue/read_ahead_kb"; then echo "sys=writable"; else echo "sys=read-only"; fi
mkdir -p /tmp/m
if mount -t tmpfs none /tmp/m 2>/dev/null; then echo "mount=ok"; else echo "mount=denied"; fi
if grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status; then echo "nnp=1"; else echo "nnp=0"; fi
echo "capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)"
echo "capbnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"
echo "end"
exit 0
"#;

/// `key=value` lines of a probe's record.
fn record(g: &common::Guest, prog: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(g.path(&format!("/var/tmp/confine-{prog}.txt")))
        .unwrap_or_else(|e| panic!("the planted {prog} did not run (no record): {e}"));
    assert!(
        text.lines().any(|l| l == "end"),
        "{prog} stopped early:\n{text}"
    );
    let mut m = BTreeMap::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m.insert("_text".into(), text);
    m
}

/// The host's /dev, loop devices left out (other tests on this machine attach and detach them).
fn host_dev() -> BTreeSet<String> {
    std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop"))
        .collect()
}

/// Each escape the probe tried failed.
fn assert_confined(prog: &str, r: &BTreeMap<String, String>, guest_disk: &str, host_disk: &str) {
    let text = &r["_text"];
    let get = |k: &str| {
        r.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{prog}: no {k} in\n{text}"))
    };
    assert_eq!(
        get("pid"),
        "2",
        "{prog} runs as PID 2 of its own namespace\n{text}"
    );
    let procs: u32 = get("procs").parse().unwrap();
    assert!(procs < 10, "{prog} sees {procs} processes\n{text}");
    assert_eq!(get("environ"), "denied", "{text}");
    assert!(
        !text.contains(CANARY_VALUE),
        "{prog} read the host's environment\n{text}"
    );
    assert_eq!(get("proc1root"), "denied", "{text}");
    assert_eq!(get("mark"), "hidden", "{text}");
    assert_eq!(get("double-chroot"), "contained", "{text}");
    assert_eq!(get("hostdisk-node"), "absent", "{text}");
    assert_eq!(get("mknod"), "denied", "{text}");
    assert_eq!(get(&format!("write /dev/{host_disk}")), "denied", "{text}");
    assert_eq!(get("write /tmp/hd"), "denied", "{text}");
    assert_eq!(get("proc-sys"), "read-only", "{text}");
    assert_eq!(get("sys"), "read-only", "{text}");
    assert_eq!(get("mount"), "denied", "{text}");
    assert_eq!(get("nnp"), "1", "{text}");
    // /dev: the standard nodes and the guest's own disk with its partitions, nothing else.
    let dev: BTreeSet<&str> = get("dev").split_whitespace().collect();
    let g = guest_disk.trim_start_matches("/dev/");
    for need in ["null", "zero", "random", "urandom", "tty", g] {
        assert!(dev.contains(need), "{prog}: no /dev/{need} in {dev:?}");
    }
    let allowed = [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr",
        "pts", "ptmx", "shm", "disk",
    ];
    for d in &dev {
        assert!(
            allowed.contains(d) || d.starts_with(g),
            "{prog}: /dev/{d} is not the guest's (guest disk {g})"
        );
    }
    // Capabilities: no mount/admin (21), mknod (27), open_by_handle_at (2), modules (16), raw I/O (17).
    for key in ["capeff", "capbnd"] {
        let caps = u64::from_str_radix(get(key), 16).unwrap();
        for bit in [2, 16, 17, 21, 27] {
            assert_eq!(caps & (1 << bit), 0, "{prog}: {key} {caps:x} has bit {bit}");
        }
    }
}

#[test]
fn planted_guest_programs_cannot_reach_the_host() {
    common::require_root();
    // A host disk that belongs to no guest, with a known pattern.
    let host_disk = common::loopdev::LoopDisk::new(4, "");
    let pattern: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&host_disk.dev, &pattern).unwrap();
    let hname = host_disk.dev.trim_start_matches("/dev/").to_string();
    let hnum = std::fs::read_to_string(format!("/sys/class/block/{hname}/dev")).unwrap();
    let (hmaj, hmin) = hnum.trim().split_once(':').unwrap();
    // A host file the guest must never see.
    let mark_dir = tempfile::tempdir_in(common::scratch()).unwrap();
    let mark = mark_dir.path().join("cloudprep-confine-mark");
    std::fs::write(&mark, "host only\n").unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // The caller's environment holds a secret: PID 1 of the namespace is a copy of this process.
    std::env::set_var(CANARY, CANARY_VALUE);

    let dg = common::DiskGuest::new("bookworm", "vm");
    let g = &dg.guest;
    let probe = PROBE
        .replace("@MARK@", mark.to_str().unwrap())
        .replace("@HOSTDISK@", &format!("{hmaj} {hmin} {hname}"));
    for prog in ["ifquery", "update-grub", "grub-install"] {
        let p = g.path(&format!("/usr/sbin/{prog}"));
        std::fs::write(&p, &probe).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let host_dev_before = host_dev();

    // A validator (ifquery, for a rewritten /etc/network/interfaces) and a planned command (update-grub),
    // through the fix engine.
    let root = Root::new(g.root()).unwrap();
    let findings = vec![
        finding(
            "test.ifupdown",
            Fix::default().edit(FileEdit::rewrite(
                "/etc/network/interfaces",
                Validator::Ifupdown,
                |s| Ok(format!("{s}\nallow-hotplug eth0\niface eth0 inet dhcp\n")),
            )),
        ),
        finding(
            "test.update-grub",
            Fix::default().command(PlannedCommand::new(
                Phase::Post,
                50,
                &["update-grub"],
                "test",
            )),
        ),
    ];
    let plan = compose_plan(&root, &findings);
    let rep = fix::execute(&root, &Config::default(), &plan, &ExecOptions::default()).unwrap();
    assert_eq!(rep.state, "applied", "{rep:#?}");
    assert!(
        rep.files
            .iter()
            .any(|f| f.message.contains("validated: ifquery")),
        "{rep:#?}"
    );
    // The offline lifecycle commands (firstboot's grub-install) run the same way.
    cloudprep::lifecycle::run_in_guest(
        &root,
        &["grub-install", &dg.disk.dev],
        None,
        std::time::Duration::from_secs(120),
    )
    .unwrap();
    std::env::remove_var(CANARY);

    for prog in ["ifquery", "update-grub", "grub-install"] {
        assert_confined(prog, &record(g, prog), &dg.disk.dev, &hname);
    }
    // The host is untouched.
    assert!(
        std::fs::read(&host_disk.dev).unwrap() == pattern,
        "the host disk {} was written",
        host_disk.dev
    );
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "host only\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    assert_eq!(host_dev(), host_dev_before, "the host's /dev changed");
    assert!(!Path::new(&format!("/dev/disk/by-uuid/{}", dg.root_uuid)).exists());
    assert!(
        mounts_under(g.root()).is_empty(),
        "{:?}",
        mounts_under(g.root())
    );
}
