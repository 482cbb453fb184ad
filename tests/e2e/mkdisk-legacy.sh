#!/usr/bin/env bash
# Build a legacy guest disk image the way old VMware-era Debian guests are set up:
# GRUB in the MBR, fstab and grub.cfg naming /dev/sda1, GRUB_DISABLE_LINUX_UUID=true, a static IP on eth0,
# 70-persistent-net.rules pinning the old NIC's MAC, an initramfs with only IDE/SATA drivers (MODULES=list),
# no cloud-init.
#   tests/e2e/mkdisk-legacy.sh IMAGE MAC [--root-key PUBKEY] [--offline-cloud-init] [DEB...]
# DEBs are copied into the guest's /root (for the pre-migration stage). --root-key authorizes an SSH key
# for root (the operator's access on the old hypervisor). --offline-cloud-init puts cloud-init's .deb and
# those of the dependencies the guest lacks into /root/offline-debs (fetched once from the host's Debian
# mirror inside the guest's chroot, cached beside the debootstrap tarballs): the guest itself never has
# network access. Needs root and loop devices.
set -euo pipefail
img=$1 mac=$2; shift 2
root_key="" offline=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-key) root_key=$2; shift 2 ;;
        --offline-cloud-init) offline=1; shift ;;
        *) break ;;
    esac
done
cache=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d /var/tmp/cloudprep-e2e-mk.XXXXXX)
loop=""
cleanup() {
    set +e
    for m in dev/pts dev proc sys; do umount "$work/mnt/$m" 2>/dev/null; done
    umount "$work/mnt" 2>/dev/null
    [ -n "$loop" ] && { partx -d "$loop" 2>/dev/null; losetup -d "$loop"; }
    rm -rf "$work"
}
trap cleanup EXIT

rm -f "$img"
truncate -s 3G "$img"
printf 'label: dos\n,,L,*\n' | sfdisk -q "$img"
loop=$(losetup -f --show -P "$img")
partx -a "$loop" 2>/dev/null || true
# No udev here: create the partition node from sysfs when the kernel did not.
p1="${loop}p1"
if [ ! -b "$p1" ]; then
    mknod "$p1" b $(tr ':' ' ' < "/sys/class/block/$(basename "$p1")/dev")
fi
mkfs.ext4 -q -F -L legacy-root "$p1"
mkdir -p "$work/mnt"
mount "$p1" "$work/mnt"
"$repo/scripts/mkroot.sh" bookworm "$work/mnt" vm
r=$work/mnt
k=$(ls "$r/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)

echo legacy-vm > "$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tlegacy-vm\n' > "$r/etc/hosts"
# A root password only for the serial console of this throwaway test guest.
echo 'root:cloudprep-e2e' | chroot "$r" chpasswd
cat > "$r/etc/fstab" <<FSTAB
# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
proc            /proc           proc    defaults        0       0
/dev/sda1       /               ext4    errors=remount-ro 0       1
FSTAB
cat > "$r/etc/network/interfaces" <<NET
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug eth0
iface eth0 inet static
	address 10.0.2.15
	netmask 255.255.255.0
	gateway 10.0.2.2
NET
cat > "$r/etc/udev/rules.d/70-persistent-net.rules" <<UDEV
# PCI device 0x8086:0x100e (e1000)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$mac", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
UDEV
sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf"
cat > "$r/etc/initramfs-tools/modules" <<MODS
# IDE/SATA and the filesystem: what MODULES=dep picks on the old hypervisor.
ata_piix
ata_generic
pata_acpi
ahci
libata
sd_mod
scsi_mod
ext4
crc32c_generic
MODS
sed -i 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="net.ifnames=0 console=ttyS0"/' "$r/etc/default/grub"
echo 'GRUB_DISABLE_LINUX_UUID=true' >> "$r/etc/default/grub"
echo 'GRUB_TIMEOUT=1' >> "$r/etc/default/grub"

mount -t proc proc "$r/proc"
mount -t sysfs sys "$r/sys"
mount --bind /dev "$r/dev"
mount --bind /dev/pts "$r/dev/pts"
chroot "$r" env LC_ALL=C update-initramfs -c -k "$k" >/dev/null 2>&1 || chroot "$r" env LC_ALL=C update-initramfs -u -k "$k" >/dev/null
chroot "$r" grub-install --target=i386-pc "$loop" >/dev/null 2>&1
# grub.cfg as the old hypervisor's installer left it: the root named by kernel device name.
cat > "$r/boot/grub/grub.cfg" <<GRUB
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry 'Debian GNU/Linux (legacy)' {
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	linux	/boot/vmlinuz-$k root=/dev/sda1 ro net.ifnames=0 console=ttyS0
	initrd	/boot/initrd.img-$k
}
GRUB
echo "(hd0)	/dev/sda" > "$r/boot/grub/device.map"
for d in "$@"; do cp "$d" "$r/root/"; done
if [ -n "$root_key" ]; then
    install -d -m 700 "$r/root/.ssh"
    install -m 600 "$root_key" "$r/root/.ssh/authorized_keys"
fi
if [ "$offline" = 1 ]; then
    debs="$cache/offline-debs-bookworm-cloud-init"
    if ! ls "$debs"/cloud-init_*.deb >/dev/null 2>&1; then
        # The host's Debian mirror, as scripts/mkroot.sh finds it (sources.list may not exist).
        mirror=$( { grep -rhoE '^(deb|URIs:)\s+\S*https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
            | { grep -v security || true; } | head -n1 | sed -E 's/^(deb|URIs:)\s+//; s/\[[^]]*\]\s*//')
        [ -n "$mirror" ] || { echo "mkdisk-legacy: no Debian mirror in the host's apt sources" >&2; exit 1; }
        sl="$r/etc/apt/sources.list"
        cp -a "$sl" "$work/sources.list.orig" 2>/dev/null || true
        echo "deb $mirror bookworm main" > "$sl"
        rm -f "$r/var/cache/apt/archives/"*.deb
        chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C sh -c \
            'apt-get update -q && apt-get install -y -q --download-only --no-install-recommends cloud-init' >"$work/apt.log" 2>&1 \
            || { tail -n 30 "$work/apt.log" >&2; exit 1; }
        mkdir -p "$debs.tmp"
        mv "$r/var/cache/apt/archives/"*.deb "$debs.tmp/"
        rm -rf "$debs"; mv "$debs.tmp" "$debs"
        if [ -e "$work/sources.list.orig" ]; then cp -a "$work/sources.list.orig" "$sl"; else rm -f "$sl"; fi
        # The guest is offline: no package lists, as mkroot leaves it.
        rm -rf "$r/var/lib/apt/lists/"*_Packages "$r/var/lib/apt/lists/"*_InRelease "$r/var/lib/apt/lists/"*_Release*
    fi
    mkdir -p "$r/root/offline-debs"
    cp "$debs"/*.deb "$r/root/offline-debs/"
fi
sync
echo "mkdisk-legacy: $img ready (kernel $k, MAC $mac)"
