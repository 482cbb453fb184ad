#!/usr/bin/env bash
# End-to-end proof under qemu (TCG), in-guest path: an old VMware-era Debian guest boots on its old
# "hypervisor" (IDE disk, e1000 NIC), gets the cloudprep .deb, is armed and powered off; the pre-migration
# unit audits, fixes and exports the disk to a second disk; the exported image then boots the way an OpenStack
# cloud runs it (virtio-blk, virtio-net with a new MAC, DHCP, an EC2-style metadata service at
# 169.254.169.254), and the unprepared image is shown to fail on that same machine.
#   tests/e2e/run.sh [legacy|lvm]   (root; run by `cargo test --test e2e`, i.e. by ./x.sh test)
# legacy (default): one ext4 partition, /dev/sda1 everywhere (tests/e2e/mkdisk-legacy.sh).
# lvm: the Debian installer's guided LVM layout (/boot ext2 on sda1, / and swap_1 on LVs of a VG on sda5),
#      with the guest cut off from its mirror (no default route, apt lists that know the offline .debs'
#      versions): `cloudprep fix --yes` runs over SSH first, then the pre-migration unit exports (issue 18).
# E2E_KEEP=1 keeps the work directory (disk images, console logs) for a post-mortem.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
variant=${1:-legacy}
case "$variant" in
    legacy) mk=(--size 3G) ;;
    lvm) mk=(--layout lvm --size 2G --stale-apt-lists) ;;
    *) echo "run.sh: unknown variant $variant (legacy|lvm)" >&2; exit 64 ;;
esac
e2e_init "$variant"
DM_ROOT=/dev/mapper/legacy--vm--vg-root

# ---------------------------------------------------------------------------------------------------
stage_begin "build the .deb and the $variant disk"
deb=$("$repo/packaging/build-deb.sh")
[ -f "$deb" ] || fail "build-deb.sh did not produce a .deb ($deb)"
ssh-keygen -q -t ed25519 -N '' -C e2e-operator -f "$W/operator_key"
ssh-keygen -q -t ed25519 -N '' -C e2e-cloud -f "$W/cloud_key"
"$repo/tests/e2e/mkdisk-legacy.sh" "$W/legacy.img" "$OLD_MAC" "${mk[@]}" --root-key "$W/operator_key.pub" \
    --offline-cloud-init "$deb" >&2
ls -s --block-size=M "$W/legacy.img" >&2
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "the unprepared image on the cloud's virtio hardware (must fail)"
negative_case "$W/legacy.img" bios
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "boot on the old hypervisor (IDE disk, e1000 NIC)"
truncate -s 4G "$W/export.img"
mkfs.ext4 -q -F -L e2e-export "$W/export.img"
P1=$(free_port)
# Only the system disk at boot: with two IDE disks the kernel's asynchronous probing names either one
# sda, which is exactly the hazard cloudprep removes, but the legacy guest must first boot as it always did.
start_qemu old -uuid "$OLD_UUID" -monitor "unix:$W/old.mon,server=on,wait=off" \
    -drive "file=$W/legacy.img,format=raw,if=ide,index=0" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$P1-10.0.2.15:22" \
    -device "e1000,netdev=n0,mac=$OLD_MAC"
OLD_PID=$QEMU_PID
r=0; wait_ssh "$W/operator_key" root "$P1" 900 || r=$?
[ "$r" = 0 ] || fail "no SSH to the legacy guest on its old hypervisor (status $r)"
old() { gssh "$W/operator_key" root "$P1" "$@"; }
if [ "$variant" = lvm ]; then
    [ "$(old findmnt -n -o SOURCE /)" = "$DM_ROOT" ] || fail "LVM guest: / is on $(old findmnt -n -o SOURCE /), not $DM_ROOT"
    [ "$(old findmnt -n -o SOURCE /boot)" = /dev/sda1 ] || fail "LVM guest: /boot is not on /dev/sda1"
    old swapon --show >&2
    old lvs >&2
else
    [ "$(old findmnt -n -o SOURCE /)" = /dev/sda1 ] || fail "legacy guest: / is not on /dev/sda1"
fi
old ip -4 -o addr show dev eth0 | grep 'inet 10.0.2.15/24' >/dev/null || fail "legacy guest: eth0 lacks its static 10.0.2.15"
[ "$(old cat /sys/class/net/eth0/address)" = "$OLD_MAC" ] || fail "legacy guest: eth0 is not the old NIC"
stage_end

# ---------------------------------------------------------------------------------------------------
fixstep=""; [ "$variant" = lvm ] && fixstep=", fix --yes"
stage_begin "install cloudprep, audit$fixstep, arm with an export to the second disk, power off"
# The operator attaches a scratch disk for the export (PCI hot-plug; the running kernel has virtio_blk).
monitor old "drive_add 0 if=none,id=exp,file=$W/export.img,format=raw" || fail "drive_add refused"
monitor old "device_add virtio-blk-pci,drive=exp,id=expdisk" || fail "device_add refused"
old 'for i in $(seq 60); do [ -b /dev/vda ] && break; sleep 1; done; [ -b /dev/vda ]' \
    || fail "the hot-added export disk did not appear as /dev/vda in the legacy guest"
old "mkdir -p /mnt/export && mount /dev/vda /mnt/export"
if [ "$variant" = lvm ]; then
    # Cut off from every mirror, as an air-gapped VM is: no default route (the lists still name the mirror).
    old "ip route del default" || fail "could not remove the default route"
    old "ip route" >&2
fi
old "apt-get install -y -q /root/$(basename "$deb")" >&2 || fail "apt install of the .deb failed in the guest"
set +e
old cloudprep audit --format json > "$W/old-audit.json"
rc=$?
set -e
[ "$rc" = 2 ] || fail "the audit on the legacy guest exited $rc, expected 2 (blockers)"
for id in fstab.device-names boot.virtio-initramfs boot.grub-uuid-disabled network.static-addressing \
          network.udev-persistent-net cloud-init.installed cloud-init.datasource; do
    grep -q "\"$id\"" "$W/old-audit.json" || fail "the legacy audit does not report $id"
done
old "sed -i 's|^cloud_init_deb = .*|cloud_init_deb = \"/root/offline-debs\"|' /etc/cloudprep/cloudprep.toml"
old "grep -q '^cloud_init_deb = \"/root/offline-debs\"' /etc/cloudprep/cloudprep.toml" || fail "config not set"
if [ "$variant" = lvm ]; then
    # A hang on the unreachable mirror ends after 5 minutes instead of the default 30.
    old "sed -i 's|^command_timeout = .*|command_timeout = 300|' /etc/cloudprep/cloudprep.toml"
    old "grep -q '^command_timeout = 300' /etc/cloudprep/cloudprep.toml" || fail "config not set"
    old "cloudprep fix --dry-run" > "$W/fix-plan.txt" 2>&1 || true
    grep -E 'grub-install' "$W/fix-plan.txt" >&2 || true
    t=$(date +%s)
    set +e
    old "cloudprep fix --yes" > "$W/fix.txt" 2>&1
    rc=$?
    set -e
    log "cloudprep fix --yes in the LVM guest: exit $rc after $(( $(date +%s) - t )) s"
    if [ "$rc" -ge 2 ]; then
        tail -n 20 "$W/fix.txt" >&2
        old 'cat "$(ls -d /var/lib/cloudprep/runs/*/ | tail -n 1)journal.jsonl"' > "$W/journal.jsonl" || true
        journal_failures "$W/journal.jsonl"
        fail "cloudprep fix --yes in the LVM guest exited $rc (plan: $(grep -E 'grub-install' "$W/fix-plan.txt" | head -n 3 | tr '\n' ' '))"
    fi
    old "findmnt -n -o SOURCE /boot; debconf-show grub-pc | grep install_devices" >&2 || true
fi
old cloudprep arm --export /mnt/export/migrated.qcow2 --format qcow2 >&2
old systemctl is-active cloudprep-premigrate.service >/dev/null || fail "the premigrate unit is not active after arm"
old systemctl poweroff || true
log "waiting for the pre-migration run and the power-off"
wait_exit "$OLD_PID" 2400 || fail "the legacy guest did not power itself off within 40 minutes"
console old | grep -E 'cloudprep premigrate' >&2 || true
console old | grep -E 'cloudprep premigrate: export finished \(exit [01]\)' >/dev/null \
    || fail "the pre-migration unit did not report a finished export"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "collect the exported image"
mkdir -p "$W/exp"
mount -o ro,loop "$W/export.img" "$W/exp"
MOUNTS+=("$W/exp")
[ -f "$W/exp/migrated.qcow2" ] || fail "no migrated.qcow2 on the export disk: $(ls -la "$W/exp")"
ls -la "$W/exp" >&2
cp --sparse=always "$W/exp/migrated.qcow2" "$W/migrated.qcow2"
umount "$W/exp"; unset 'MOUNTS[-1]'
qemu-img check "$W/migrated.qcow2" >&2 || fail "qemu-img check found problems in the exported image"
qemu-img info "$W/migrated.qcow2" >&2
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "boot the export in the cloud (virtio-blk, virtio-net, DHCP, metadata service)"
cloud_boot "$W/migrated.qcow2" bios
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "assert the migrated instance"
assert_cloud
if [ "$variant" = lvm ]; then
    src=$(c findmnt -n -o SOURCE /)
    [ "$src" = "$DM_ROOT" ] || fail "/ is on $src, not $DM_ROOT"
    [ "$(c findmnt -n -o SOURCE /boot)" = /dev/vda1 ] || fail "/boot is on $(c findmnt -n -o SOURCE /boot), not /dev/vda1"
    buuid=$(c findmnt -n -o UUID /boot)
    c cat /etc/fstab | grep -E "^UUID=$buuid[[:space:]]+/boot[[:space:]]" >/dev/null || fail "/etc/fstab does not mount /boot by UUID=$buuid"
    c cat /etc/fstab | grep -E "^($DM_ROOT|UUID=$(c findmnt -n -o UUID /))[[:space:]]+/[[:space:]]" >/dev/null \
        || fail "/etc/fstab does not name / by its device-mapper name or UUID"
else
    src=$(c findmnt -n -o SOURCE /)
    [ "$src" = /dev/vda1 ] || fail "/ is on $src, not /dev/vda1"
    uuid=$(c findmnt -n -o UUID /)
    c cat /etc/fstab | grep -E "^UUID=$uuid[[:space:]]+/[[:space:]]" >/dev/null || fail "/etc/fstab does not mount / by UUID=$uuid"
    c cat /proc/cmdline | grep "root=UUID=$uuid" >/dev/null || fail "the kernel did not get root=UUID=$uuid: $(c cat /proc/cmdline)"
fi
[ "$(c cat /sys/class/net/eth0/address)" = "$NEW_MAC" ] || fail "eth0 is not the new virtio NIC"
grep -q '"installed on /dev/vda"' "$W/firstboot-steps.json" || fail "firstboot did not install GRUB on /dev/vda: $(cat "$W/firstboot-steps.json")"
stage_end

e2e_finish
