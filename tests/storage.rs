//! Storage checks on real guests: a debootstrap bookworm root with an old VMware guest's fstab, and a real
//! partitioned disk on a loop device whose fstab names partitions by kernel name.
mod common;

use common::{findings, has_evidence};
use std::process::Command;

const MY_IDS: &[&str] = &[
    "fstab.device-names",
    "fstab.crypttab-device-names",
    "fstab.resume-device",
    "fstab.syntax",
    "storage.absent-devices",
    "storage.root-boot-split",
    "storage.lvm-multi-disk",
    "storage.multiple-disks",
    "storage.offline-mounts",
];

const VMWARE_FSTAB: &str = "# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
proc            /proc           proc    defaults        0       0
/dev/sda1       /               ext3    errors=remount-ro 0       1
/dev/sdb1\t/data\text4\tdefaults\t0\t2
/dev/sda5       none            swap    sw              0       0
fileserver:/export /srv/share   nfs     rw,hard         0       0
/dev/scd0       /media/cdrom0   udf,iso9660 user,noauto     0       0
this-is-garbage
/dev/hdc        /media/cdrom1   iso9660 ro,user,noauto  0       0
/dev/sdc1       /backup         ext4    defaults,nofail 0       2
";

fn lines_of(report: &serde_json::Value, id: &str) -> Vec<u64> {
    let mut v: Vec<u64> = findings(report, id)
        .iter()
        .flat_map(|f| f["evidence"].as_array().unwrap().iter())
        .filter(|e| e["path"] == "/etc/fstab")
        .filter_map(|e| e["line"].as_u64())
        .collect();
    v.sort();
    v
}

#[test]
fn vmware_fstab_on_bookworm() {
    common::require_root();
    let g = common::Guest::bookworm();

    // The unmodified root: none of the storage findings.
    let (_, clean) = g.audit_json(&[]);
    for id in MY_IDS {
        assert!(
            findings(&clean, id).is_empty(),
            "{id} fired on a clean root"
        );
    }
    // A correct fstab by UUID, with a nofail data disk: still none.
    g.write(
        "/etc/fstab",
        "UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d / ext4 errors=remount-ro 0 1\n\
         UUID=1a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d none swap sw 0 0\n\
         tmpfs /tmp tmpfs defaults 0 0\n",
    );
    let (_, good) = g.audit_json(&[]);
    for id in MY_IDS {
        assert!(findings(&good, id).is_empty(), "{id} fired on a UUID fstab");
    }

    g.write("/etc/fstab", VMWARE_FSTAB);
    g.write("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/sda5\n");
    g.write(
        "/etc/crypttab",
        "# <target name> <source device> <key file> <options>\ncswap /dev/sda6 /dev/urandom swap,cipher=aes-xts-plain64\n",
    );
    let (code, r) = g.audit_json(&[]);
    assert_eq!(code, 2, "{r:#}");
    // The IDE CD-ROM (line 11) is not a disk name problem; the nofail disk (line 12) is only a warning.
    assert_eq!(lines_of(&r, "fstab.device-names"), vec![5, 6, 7, 12]);
    for f in findings(&r, "fstab.device-names") {
        let line = f["evidence"][0]["line"].as_u64().unwrap();
        assert_eq!(
            f["severity"],
            if line == 12 { "warning" } else { "blocker" }
        );
    }
    assert_eq!(lines_of(&r, "storage.absent-devices"), vec![6, 8]);
    assert_eq!(lines_of(&r, "fstab.syntax"), vec![10]);
    assert!(findings(&r, "storage.root-boot-split").is_empty());
    let multi = findings(&r, "storage.multiple-disks");
    assert_eq!(multi.len(), 1);
    assert!(multi[0]["message"].as_str().unwrap().contains("sdb"));
    assert!(has_evidence(
        &r,
        "fstab.resume-device",
        "/etc/initramfs-tools/conf.d/resume",
        Some(1)
    ));
    assert!(has_evidence(
        &r,
        "fstab.crypttab-device-names",
        "/etc/crypttab",
        Some(2)
    ));
    for f in findings(&r, "fstab.device-names") {
        // Offline, on a directory that is no mount: nothing to resolve the names with, so no fix, and the
        // remediation says how to provide the mapping.
        assert!(
            f["remediation"].as_str().unwrap().contains("[devices]"),
            "{f:#}"
        );
    }

    // The planned nofail fix (absent-devices) composes with the others; /etc/fstab rewritten once.
    let plan = r["plan"]["files"].as_array().unwrap();
    let fst = plan.iter().find(|f| f["path"] == "/etc/fstab").unwrap();
    let diff = fst["diff"].as_str().unwrap();
    assert!(
        diff.contains("+/dev/sdb1\t/data\text4\tdefaults,nofail\t0\t2"),
        "{diff}"
    );
    assert!(
        diff.contains("+fileserver:/export /srv/share   nfs     rw,hard,nofail"),
        "{diff}"
    );
    assert!(!diff.contains("+/dev/scd0"), "{diff}");

    // With a [devices] map, the kernel names get their UUIDs.
    g.write(
        "/etc/cloudprep/cloudprep.toml",
        "[devices]\n\"/dev/sda1\" = \"UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\n\
         \"/dev/sdb1\" = \"UUID=2b2b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"\n",
    );
    let (_, r) = g.audit_json(&[]);
    let plan = r["plan"]["files"].as_array().unwrap();
    let diff = plan.iter().find(|f| f["path"] == "/etc/fstab").unwrap()["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        diff.contains("+UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d       /               ext3"),
        "{diff}"
    );
    assert!(
        diff.contains(
            "+UUID=2b2b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\t/data\text4\tdefaults,nofail\t0\t2"
        ),
        "{diff}"
    );
}

const LVM_BACKUP: &str = r#"# Generated by LVM2 version 2.02.95(2) (2012-03-06): Mon Jan  7 10:00:00 2013

contents = "Text Format Volume Group"
version = 1

description = "Created *after* executing 'vgextend vg0 /dev/sdb1'"

vg0 {
	id = "Qw3rTy-1234-abcd-EFGH-5678-ijkl-MNOP90"
	seqno = 5
	extent_size = 8192		# 4 Megabytes

	physical_volumes {

		pv0 {
			id = "aBcDeF-gHiJ-kLmN-oPqR-sTuV-wXyZ-012345"
			device = "/dev/sda2"	# Hint only
			status = ["ALLOCATABLE"]
		}

		pv1 {
			id = "zYxWvU-tSrQ-pOnM-lKjI-hGfE-dCbA-543210"
			device = "/dev/sdb1"	# Hint only
			status = ["ALLOCATABLE"]
		}
	}

	logical_volumes {

		root {
			id = "r00t00-0000-0000-0000-0000-0000-000000"
			status = ["READ", "WRITE", "VISIBLE"]
		}
	}
}
"#;

#[test]
fn split_disks_on_bookworm() {
    common::require_root();
    let g = common::Guest::bookworm();
    // /boot on a second disk.
    g.write(
        "/etc/fstab",
        "/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /boot ext2 defaults 0 2\n",
    );
    let (code, r) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let split = findings(&r, "storage.root-boot-split");
    assert_eq!(split.len(), 1, "{r:#}");
    assert_eq!(split[0]["severity"], "blocker");
    assert_eq!(lines_of(&r, "storage.root-boot-split"), vec![1, 2]);
    // /boot is never made nofail.
    assert!(findings(&r, "storage.absent-devices").is_empty());

    // The root LV's volume group spans sda and sdb.
    g.write(
        "/etc/fstab",
        "/dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\nUUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d /boot ext2 defaults 0 2\n",
    );
    g.write("/etc/lvm/backup/vg0", LVM_BACKUP);
    let (code, r) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let lvm = findings(&r, "storage.lvm-multi-disk");
    assert_eq!(lvm.len(), 1, "{r:#}");
    assert_eq!(lvm[0]["severity"], "blocker");
    let m = lvm[0]["message"].as_str().unwrap();
    assert!(
        m.contains("vg0") && m.contains("sda") && m.contains("sdb"),
        "{m}"
    );
    assert!(has_evidence(
        &r,
        "storage.lvm-multi-disk",
        "/etc/lvm/backup/vg0",
        None
    ));
    assert_eq!(lines_of(&r, "storage.lvm-multi-disk"), vec![1]);
    assert!(findings(&r, "fstab.device-names").is_empty());

    // Single-disk volume group: nothing.
    g.write(
        "/etc/lvm/backup/vg0",
        &LVM_BACKUP.replace("/dev/sdb1", "/dev/sda3"),
    );
    let (_, r) = g.audit_json(&[]);
    assert!(findings(&r, "storage.lvm-multi-disk").is_empty());
}

#[test]
fn binary_fstab_is_an_error_naming_the_path() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/fstab"),
        b"/dev/sda1 / ext4 defaults 0 1\n\0\0\x01",
    )
    .unwrap();
    let (_, r) = common::audit_json(d.path(), &[]);
    let f = findings(&r, "fstab.device-names");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["status"], "error");
    let m = f[0]["message"].as_str().unwrap();
    assert!(m.contains("/etc/fstab") && m.contains("line 2"), "{m}");
}

const ROOT_UUID: &str = "5e1f0c2a-7b3d-4c8e-9f10-2a3b4c5d6e7f";
const SWAP_UUID: &str = "0d9c8b7a-6f5e-4d3c-8b2a-190817263544";
const LUKS_UUID: &str = "c0ffee00-1234-4abc-9def-0123456789ab";

fn findmnt_verify(content: &str) -> (bool, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fstab");
    std::fs::write(&p, content).unwrap();
    let out = Command::new("findmnt")
        .args(["--verify", "--verbose", "--tab-file", p.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn real_disk_kernel_names_get_uuids() {
    common::require_root();
    // Declared before the disk so that it is dropped after it: the disk unmounts first, then the
    // mount point is removed (the other order left an empty directory behind in /var/tmp).
    let mnt = tempfile::Builder::new()
        .prefix("cloudprep-mnt.")
        .tempdir_in(common::scratch())
        .unwrap();
    let mut disk = common::loopdev::LoopDisk::new(
        600,
        "label: dos\nlabel-id: 0x4d3c2b1a\nsize=450MiB,type=83\ntype=5\nsize=64MiB,type=82\ntype=83\n",
    );
    let (p1, p5) = (disk.part(1), disk.part(5));
    common::sh(
        "mkfs.ext4",
        &["-q", "-F", "-U", ROOT_UUID, "-L", "root", &p1],
    );
    common::sh("mkswap", &["-U", SWAP_UUID, &p5]);
    let keyfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keyfile.path(), "secret").unwrap();
    let p6 = disk.part(6);
    common::sh(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--uuid",
            LUKS_UUID,
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            keyfile.path().to_str().unwrap(),
            &p6,
        ],
    );
    disk.mount(&p1, mnt.path(), &[]);
    let st = Command::new(common::repo().join("scripts/mkroot.sh"))
        .args(["bookworm", mnt.path().to_str().unwrap(), "min"])
        .status()
        .unwrap();
    assert!(st.success());
    let fstab = "# as the VMware guest had it\r\n/dev/sda1\t/\text4\terrors=remount-ro\t0\t1\r\n/dev/sda5 none swap sw 0 0";
    std::fs::write(mnt.path().join("etc/fstab"), fstab).unwrap();
    std::fs::create_dir_all(mnt.path().join("etc/initramfs-tools/conf.d")).unwrap();
    std::fs::write(
        mnt.path().join("etc/initramfs-tools/conf.d/resume"),
        "RESUME=\"/dev/sda5\"\n",
    )
    .unwrap();

    std::fs::write(
        mnt.path().join("etc/crypttab"),
        "# <target name>\t<source device>\t<key file>\t<options>\ncdata\t/dev/sda6\tnone\tluks\n",
    )
    .unwrap();

    let (code, r) = common::audit_json(mnt.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(lines_of(&r, "fstab.device-names"), vec![2, 3]);
    // Everything is on the one disk: nothing absent, no split, a single disk.
    for id in [
        "storage.absent-devices",
        "storage.root-boot-split",
        "storage.multiple-disks",
    ] {
        assert!(findings(&r, id).is_empty(), "{id}: {r:#}");
    }
    // Facts: the root device and the probed superblocks.
    let fss = r["facts"]["filesystems"].as_array().unwrap();
    assert!(fss
        .iter()
        .any(|f| f["uuid"] == ROOT_UUID && f["fstype"] == "ext4"));
    assert!(fss
        .iter()
        .any(|f| f["uuid"] == SWAP_UUID && f["partuuid"] == "4d3c2b1a-05"));
    assert_eq!(r["facts"]["root_device"], p1.as_str());
    // Offline, only the guest's own disk is probed (not the host's other block devices).
    let dname = disk.dev.trim_start_matches("/dev/");
    for f in fss {
        assert_eq!(f["disks"], serde_json::json!([dname]), "{f}");
    }
    let plan = r["plan"]["files"].as_array().unwrap();
    let diff = plan.iter().find(|f| f["path"] == "/etc/fstab").unwrap()["diff"]
        .as_str()
        .unwrap();
    assert!(
        diff.contains(&format!(
            "+UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1\r\n"
        )),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("+UUID={SWAP_UUID} none swap sw 0 0")),
        "{diff}"
    );
    let crypttab = plan.iter().find(|f| f["path"] == "/etc/crypttab").unwrap();
    assert!(
        crypttab["diff"]
            .as_str()
            .unwrap()
            .contains(&format!("+cdata\tUUID={LUKS_UUID}\tnone\tluks\n")),
        "{crypttab}"
    );
    assert!(r["plan"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["argv"][0] == "update-initramfs"));
    let resume = plan
        .iter()
        .find(|f| f["path"] == "/etc/initramfs-tools/conf.d/resume")
        .unwrap();
    assert!(resume["diff"]
        .as_str()
        .unwrap()
        .contains(&format!("+RESUME=\"UUID={SWAP_UUID}\"")));

    // The live probe (this machine's /) sees the loop disk's partitions with their superblocks.
    let live = cloudprep::guest::root::Root::new("/").unwrap();
    let (disks, fss, _) = cloudprep::guest::probe::gather(&live, &[]);
    let dname = disk.dev.trim_start_matches("/dev/").to_string();
    let d = disks
        .iter()
        .find(|d| d.name == dname)
        .expect("loop disk listed");
    assert_eq!(d.size, 600 << 20);
    assert!(d.partitions.contains(&format!("{dname}p5")), "{d:?}");
    let root_fs = fss.iter().find(|f| f.device == p1).expect("p1 probed");
    assert_eq!(
        (
            root_fs.fstype.as_str(),
            root_fs.uuid.as_deref(),
            root_fs.label.as_deref()
        ),
        ("ext4", Some(ROOT_UUID), Some("root"))
    );
    assert_eq!(root_fs.partuuid.as_deref(), Some("4d3c2b1a-01"));
    assert_eq!(root_fs.disks, vec![dname.clone()]);
    let swap_fs = fss.iter().find(|f| f.device == p5).expect("p5 probed");
    assert_eq!(swap_fs.fstype, "swap");
    assert_eq!(swap_fs.partition, Some(5));

    // The library view: apply the composed plan to the file and let findmnt verify it.
    let root = cloudprep::guest::root::Root::new(mnt.path()).unwrap();
    let config = cloudprep::config::Config::default();
    let audit = cloudprep::audit::run(&root, &config, &cloudprep::audit::Selection::default());
    assert_eq!(
        audit.facts.root_device.as_deref(),
        Some(p1.as_str()),
        "root device"
    );
    let pf = audit
        .plan
        .files
        .iter()
        .find(|f| f.path == "/etc/fstab")
        .unwrap();
    let after = cloudprep::audit::apply_edits(&pf.edits, true, fstab)
        .unwrap()
        .unwrap();
    assert_eq!(
        after,
        format!("# as the VMware guest had it\r\nUUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1\r\nUUID={SWAP_UUID} none swap sw 0 0")
    );
    // Idempotent.
    assert_eq!(
        cloudprep::audit::apply_edits(&pf.edits, true, &after)
            .unwrap()
            .unwrap(),
        after
    );
    // findmnt resolves the UUIDs against the real loop partitions (libblkid scans without udev links).
    let (ok, text) = findmnt_verify(&after.replace("\r\n", "\n"));
    assert!(ok, "findmnt --verify failed:\n{text}");
    assert!(
        text.contains(&format!("UUID={ROOT_UUID} translated to {p1}"))
            && text.contains(&format!("UUID={SWAP_UUID} translated to {p5}")),
        "{text}"
    );

    // A second disk the guest called sdb, with / by UUID: the root disk's guest name (sda) is learned from
    // the swap line, so /data is known to be elsewhere.
    std::fs::write(
        mnt.path().join("etc/fstab"),
        format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n/dev/sda5 none swap sw 0 0\n/dev/sdb1 /data ext4 defaults 0 2\n"),
    )
    .unwrap();
    let (code, r) = common::audit_json(mnt.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(lines_of(&r, "fstab.device-names"), vec![2, 3]);
    assert_eq!(lines_of(&r, "storage.absent-devices"), vec![3]);
    let multi = findings(&r, "storage.multiple-disks");
    assert_eq!(multi.len(), 1, "{r:#}");
    assert!(multi[0]["message"].as_str().unwrap().contains("sdb"));
}

#[test]
fn live_probe_reads_a_real_lvm_pv_label() {
    common::require_root();
    const PV_UUID: &str = "aBcDeF-gHiJ-kLmN-oPqR-sTuV-wXyZ-012345";
    let disk = common::loopdev::LoopDisk::new(64, "");
    common::sh(
        "pvcreate",
        &["-ff", "-y", "--uuid", PV_UUID, "--norestorefile", &disk.dev],
    );
    let live = cloudprep::guest::root::Root::new("/").unwrap();
    let (_, fss, _) = cloudprep::guest::probe::gather(&live, &[]);
    let pv = fss
        .iter()
        .find(|f| f.device == disk.dev)
        .expect("PV probed");
    assert_eq!(pv.fstype, "LVM2_member");
    assert_eq!(pv.uuid.as_deref(), Some(PV_UUID));
}
