//! End-to-end under qemu (TCG): `tests/e2e/run.sh` builds a legacy VMware-era guest disk with debootstrap,
//! boots it on IDE + e1000, installs the .deb, arms the pre-migration unit with an export to a second disk
//! and powers off; then boots the exported image on virtio-blk + virtio-net with DHCP and an EC2-style
//! metadata service, and asserts over SSH and the serial console that it migrated (root on /dev/vda1 by
//! UUID, DHCP, cloud-init's Ec2 datasource with hostname and key from the metadata, a clean first-boot
//! audit); the unprepared image must fail to boot on the same virtio machine. The script prints each
//! stage's time, cleans up qemu, mounts and loop devices on every exit path, and sends nothing beyond
//! 127.0.0.1 (qemu user networking with restrict=on).

use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn legacy_vm_migrates_into_a_virtio_cloud() {
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/run.sh"));
    // If this test process dies (a CI timeout kills it), the script gets SIGTERM and cleans up its qemu
    // processes, mounts and loop devices instead of running on.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let status = cmd.status().expect("running tests/e2e/run.sh");
    assert!(
        status.success(),
        "the end-to-end migration failed ({status}); its log is above"
    );
}
