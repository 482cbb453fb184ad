#!/usr/bin/env bash
# End-to-end proof under qemu (TCG), offline path, for the guest layouts of issue 14: the disk is built as the
# old platform left it, shown to boot on its old hypervisor and to fail on the cloud's hardware; then prepared
# the way an operator does with an offline image (loop-mounted read-write on this host, the .deb installed in
# it, `cloudprep --root MNT fix --yes` with the offline cloud-init .debs inside the image, then
# `cloudprep --root MNT premigrate` to audit again and arm the first boot, unmounted, and
# `cloudprep export --source IMAGE --format qcow2`), and booted as the cloud runs it.
#   tests/e2e/variant.sh VARIANT      (root; run by `cargo test --test e2e`)
# VARIANT:
#   uefi      GPT + ESP (vfat, /boot/efi) + grub-efi-amd64 with GRUB only in \EFI\debian\, booted on the old
#             hypervisor under OVMF with its NVRAM boot entry; in the cloud under OVMF with a fresh VARS file
#   trixie    Debian 13 legacy guest with its own defaults
#   netplan   netplan + systemd-networkd, static address on a MAC-matched NIC renamed to ens192 (set-name)
#   vmware-ci cloud-init installed but shaped by VMware and Ubuntu's installer (datasources, leftovers,
#             /var/lib/cloud of the old instance)
# The LVM variant runs the in-guest path: tests/e2e/run.sh lvm. E2E_KEEP=1 keeps the work directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
variant=${1:?usage: variant.sh uefi|trixie|netplan|vmware-ci}
fw=bios rootpart=1 nic=eth0
case "$variant" in
    uefi) mk=(--layout uefi); fw=uefi rootpart=2 ;;
    trixie) mk=(--release trixie) ;;
    netplan) mk=(--net netplan); nic=ens192 ;;
    vmware-ci) mk=(--cloud-init vmware) ;;
    *) echo "variant.sh: unknown variant $variant" >&2; exit 64 ;;
esac
e2e_init "$variant"
cloudprep=$repo/target/x86_64-unknown-linux-musl/release/cloudprep

# ---------------------------------------------------------------------------------------------------
stage_begin "build the .deb and the $variant disk"
deb=$("$repo/packaging/build-deb.sh")
[ -f "$deb" ] || fail "build-deb.sh did not produce a .deb ($deb)"
[ -x "$cloudprep" ] || fail "no $cloudprep after build-deb.sh"
ssh-keygen -q -t ed25519 -N '' -C e2e-operator -f "$W/operator_key"
ssh-keygen -q -t ed25519 -N '' -C e2e-cloud -f "$W/cloud_key"
"$repo/tests/e2e/mkdisk-legacy.sh" "$W/disk.img" "$OLD_MAC" --size 2G "${mk[@]}" --root-key "$W/operator_key.pub" \
    --offline-cloud-init "$deb" >&2 || fail "mkdisk-legacy.sh failed"
stage_end

# ---------------------------------------------------------------------------------------------------
if [ "$fw" = uefi ]; then oldhw="OVMF with its NVRAM, SATA disk, e1000 NIC"; else oldhw="IDE disk, e1000 NIC"; fi
stage_begin "boot on the old hypervisor ($oldhw)"
fwargs=()
if [ "$fw" = uefi ]; then
    cp "$W/disk.img.vars" "$W/old.vars"
    # shellcheck disable=SC2207
    fwargs=($(ovmf_args "$W/old.vars"))
fi
P1=$(free_port)
# shellcheck disable=SC2046
start_qemu old -snapshot -uuid "$OLD_UUID" "${fwargs[@]}" $(old_disk_args "$W/disk.img" "$fw") \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$P1-10.0.2.15:22" \
    -device "e1000,netdev=n0,mac=$OLD_MAC"
r=0; wait_ssh "$W/operator_key" root "$P1" 900 || r=$?
[ "$r" = 0 ] || fail "no SSH to the guest on its old hypervisor (status $r)"
old() { gssh "$W/operator_key" root "$P1" "$@"; }
old ip -4 -o addr show dev "$nic" | grep 'inet 10.0.2.15/24' >/dev/null \
    || fail "old guest: $nic lacks its static 10.0.2.15: $(old ip -o addr)"
[ "$(old cat /sys/class/net/$nic/address)" = "$OLD_MAC" ] || fail "old guest: $nic is not the old NIC"
[ "$(old findmnt -n -o SOURCE /)" = "/dev/sda$rootpart" ] || fail "old guest: / is not on /dev/sda$rootpart"
case "$variant" in
    uefi)
        old "efibootmgr -v" >&2
        old "efibootmgr -v" | grep -E '^BootCurrent' >/dev/null || fail "old guest: not booted by the firmware's boot manager"
        cur=$(old "efibootmgr" | sed -n 's/^BootCurrent: //p')
        old "efibootmgr -v" | grep -E "^Boot$cur\\* debian.*\\\\EFI\\\\debian\\\\grubx64.efi" >/dev/null \
            || fail "old guest: not booted from the NVRAM entry debian -> \\EFI\\debian\\grubx64.efi"
        [ "$(old findmnt -n -o FSTYPE /boot/efi)" = vfat ] || fail "old guest: no ESP at /boot/efi"
        ;;
    trixie) old "grep -E '^VERSION_ID=\"13\"' /etc/os-release" >/dev/null || fail "old guest: not Debian 13" ;;
    netplan)
        old "networkctl list --no-legend --no-pager" >&2
        old "networkctl list --no-legend --no-pager" | grep -E "ens192 +ether +routable +configured" >/dev/null \
            || fail "old guest: systemd-networkd does not manage ens192"
        ;;
    vmware-ci) old "cloud-init status --long" >&2 || true ;;
esac
old "systemctl --failed --no-legend --plain --no-pager" >&2 || true
stop_qemu "$QEMU_PID"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "the unprepared image on the cloud's virtio hardware (must fail)"
negative_case "$W/disk.img" "$fw"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "prepare the image offline (fix --root, premigrate --root)"
loop=$(losetup -f --show -P "$W/disk.img")
LOOPS+=("$loop")
mkdir -p "$W/root"
rootdev=$(part_node "$loop" "$rootpart")
mount "$rootdev" "$W/root"
MOUNTS+=("$W/root")
# The operator installs the package into the image (the first-boot unit runs the guest's own binary) and
# points the offline cloud-init install at the .debs inside the image.
chroot "$W/root" env DEBIAN_FRONTEND=noninteractive dpkg -i "/root/$(basename "$deb")" >&2 || fail "dpkg -i of the .deb in the image failed"
sed -i 's|^cloud_init_deb = .*|cloud_init_deb = "/root/offline-debs"|' "$W/root/etc/cloudprep/cloudprep.toml"
grep -q '^cloud_init_deb = "/root/offline-debs"' "$W/root/etc/cloudprep/cloudprep.toml" || fail "config not set"
set +e
"$cloudprep" --root "$W/root" audit --format json > "$W/audit-before.json"
rc=$?
set -e
log "audit of the unprepared image: exit $rc"
[ "$rc" = 2 ] || fail "the audit of the unprepared image exited $rc, expected 2 (blockers)"
/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(f["id"] + ":" + f["severity"] for f in r["findings"]))' "$W/audit-before.json" >&2
t=$(date +%s)
set +e
"$cloudprep" --root "$W/root" fix --yes > "$W/fix.txt" 2>&1
rc=$?
set -e
log "cloudprep fix --yes: exit $rc after $(( $(date +%s) - t )) s"
tail -n 25 "$W/fix.txt" >&2
if [ "$rc" -ge 2 ]; then
    journal_failures "$(ls -d "$W"/root/var/lib/cloudprep/runs/*/ | tail -n 1)journal.jsonl"
    fail "cloudprep --root fix --yes exited $rc"
fi
set +e
"$cloudprep" --root "$W/root" premigrate > "$W/premigrate.txt" 2>&1
rc=$?
set -e
grep -E '^cloudprep premigrate' "$W/premigrate.txt" >&2 || true
/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("after the fix:", r["summary"]["exit_code"], " ".join(f["id"] + ":" + f["severity"] for f in r["findings"]))' \
    "$W/root/var/lib/cloudprep/premigrate-report.json" >&2 || true
[ "$rc" -lt 2 ] || fail "the image still has blockers after the fix (premigrate exit $rc): $(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(f["id"] for f in r["findings"] if f["severity"] == "blocker"))' "$W/root/var/lib/cloudprep/premigrate-report.json" 2>&1)"
[ -e "$W/root/var/lib/cloudprep/firstboot-armed" ] || fail "premigrate did not arm the first boot"
umount "$W/root"; unset 'MOUNTS[-1]'
# GRUB reads the filesystem without replaying its journal: the image must be clean now. A journal that still
# needs recovery means the filesystem is still mounted somewhere (a process left in another mount namespace).
if dumpe2fs -h "$rootdev" 2>/dev/null | grep -E '^Filesystem features:.*needs_recovery' >/dev/null; then
    devno=$(cat "/sys/class/block/$(basename "$rootdev")/dev")
    holders=$(grep -l " $devno " /proc/[0-9]*/mountinfo 2>/dev/null | cut -d/ -f3 \
        | while read -r p; do echo "$p: $(tr '\0' ' ' < "/proc/$p/cmdline" | cut -c1-120)"; done)
    fail "the image's root filesystem still needs journal recovery after umount; mounted in other namespaces by: ${holders:-no process found}"
fi
partx -d "$loop" 2>/dev/null || true
losetup -d "$loop"; unset 'LOOPS[-1]'
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "export (--source IMAGE --format qcow2)"
"$cloudprep" export --source "$W/disk.img" --format qcow2 --output "$W/migrated.qcow2" >&2 || fail "cloudprep export failed"
qemu-img check "$W/migrated.qcow2" >&2 || fail "qemu-img check found problems in the exported image"
qemu-img info "$W/migrated.qcow2" | grep -E 'virtual size|disk size' >&2
stage_end

# ---------------------------------------------------------------------------------------------------
cloudhw="virtio-blk, virtio-net, DHCP, metadata service"; [ "$fw" = uefi ] && cloudhw="$cloudhw, OVMF with empty NVRAM"
stage_begin "boot the export in the cloud ($cloudhw)"
cloud_boot "$W/migrated.qcow2" "$fw"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "assert the migrated instance"
assert_cloud
src=$(c findmnt -n -o SOURCE /)
[ "$src" = "/dev/vda$rootpart" ] || fail "/ is on $src, not /dev/vda$rootpart"
uuid=$(c findmnt -n -o UUID /)
c cat /etc/fstab | grep -E "^UUID=$uuid[[:space:]]+/[[:space:]]" >/dev/null || fail "/etc/fstab does not mount / by UUID=$uuid"
case "$variant" in
    uefi)
        c "test -d /sys/firmware/efi" || fail "the instance did not boot by UEFI"
        [ "$(c findmnt -n -o FSTYPE /boot/efi)" = vfat ] || fail "the ESP is not mounted at /boot/efi"
        c "sudo test -f /boot/efi/EFI/BOOT/BOOTX64.EFI" || fail "no \\EFI\\BOOT\\BOOTX64.EFI on the ESP"
        c "sudo debconf-show grub-efi-amd64 | grep -E 'force_efi_extra_removable: true'" >/dev/null \
            || fail "debconf grub2/force_efi_extra_removable is not true (a GRUB upgrade drops the fallback loader)"
        ;;
    trixie) c "grep -E '^VERSION_ID=\"13\"' /etc/os-release" >/dev/null || fail "not Debian 13" ;;
    netplan)
        c "networkctl list --no-legend --no-pager" >&2
        c "ls /etc/netplan; sudo cat /etc/netplan/*.yaml" >&2
        ;;
    vmware-ci)
        for f in 99-installer.cfg subiquity-disable-cloudinit-networking.cfg; do
            c "test ! -e /etc/cloud/cloud.cfg.d/$f" || fail "the installer leftover /etc/cloud/cloud.cfg.d/$f is still there"
        done
        [ "$(c readlink -f /var/lib/cloud/instance)" = "/var/lib/cloud/instances/$IID" ] \
            || fail "/var/lib/cloud/instance is not the new instance's"
        ;;
esac
stage_end

e2e_finish
