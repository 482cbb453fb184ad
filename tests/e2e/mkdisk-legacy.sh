#!/usr/bin/env bash
# Build a legacy guest disk image the way old VMware-era Debian guests are set up:
# GRUB in the MBR, fstab and grub.cfg naming /dev/sda1, GRUB_DISABLE_LINUX_UUID=true, a static IP on eth0,
# 70-persistent-net.rules pinning the old NIC's MAC, an initramfs with only IDE/SATA drivers (MODULES=list),
# no cloud-init.
#   tests/e2e/mkdisk-legacy.sh IMAGE MAC [OPTIONS] [DEB...]
# DEBs are copied into the guest's /root (for the pre-migration stage). Options:
#   --root-key PUBKEY      authorize an SSH key for root (the operator's access on the old hypervisor)
#   --offline-cloud-init   cloud-init's .deb and those of the dependencies the guest lacks in /root/offline-debs
#   --release R            Debian release (default bookworm; trixie: Debian 13 with its own defaults)
#   --size S               disk size (default 3G)
#   --layout L             msdos (default): one ext4 partition sda1 holding /
#                          lvm: the Debian installer's guided LVM layout: /boot ext2 on sda1, an extended
#                            partition with the PV on sda5, VG <host>-vg with LVs root and swap_1; fstab and
#                            initramfs-tools' resume name /dev/mapper/..., /boot is /dev/sda1; lvm2 in the guest
#                          uefi: GPT, ESP (vfat, sda1) mounted at /boot/efi, / ext4 on sda2, grub-efi-amd64
#                            with GRUB only in \EFI\debian\ and an NVRAM boot entry "debian" in IMAGE.vars
#                            (made by booting the guest once under OVMF and running grub-install in it)
#   --net N                ifupdown (default): static eth0, 70-persistent-net.rules pinning MAC
#                          netplan: no ifupdown; netplan.io + systemd-networkd with a static address on a
#                            MAC-matched NIC renamed to ens192 (set-name), predictable names, no udev pin:
#                            what open-vm-tools customization leaves on an Ubuntu-style guest
#   --cloud-init vmware    cloud-init installed but shaped by the old platform: VMware/OVF datasources,
#                          disable_vmware_customization, Ubuntu installer and curtin leftovers, the state of
#                          the old instance in /var/lib/cloud (default: no cloud-init)
#   --stale-apt-lists      the guest's apt lists know the versions of the offline .debs and its sources.list
#                          names a mirror it cannot reach (an installed guest cut off from its mirror)
# Packages beyond the cached debootstrap root (lvm2, grub-efi-amd64, netplan.io, cloud-init) are fetched once
# from the host's Debian mirror inside the guest's chroot and cached beside the debootstrap tarballs
# ($CLOUDPREP_CACHE/offline-debs-RELEASE-NAME): the guest itself never has network access. Needs root and
# loop devices; the uefi layout also runs qemu (TCG, OVMF) once.
set -euo pipefail
img=$1 mac=$2; shift 2
root_key="" offline=0 release=bookworm size=3G layout=msdos net=ifupdown ci=none stale=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-key) root_key=$2; shift 2 ;;
        --offline-cloud-init) offline=1; shift ;;
        --release) release=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --layout) layout=$2; shift 2 ;;
        --net) net=$2; shift 2 ;;
        --cloud-init) ci=$2; shift 2 ;;
        --stale-apt-lists) stale=1; shift ;;
        --*) echo "mkdisk-legacy: unknown option $1" >&2; exit 64 ;;
        *) break ;;
    esac
done
case "$layout" in msdos|lvm|uefi) ;; *) echo "mkdisk-legacy: unknown layout $layout" >&2; exit 64 ;; esac
case "$net" in ifupdown|netplan) ;; *) echo "mkdisk-legacy: unknown net $net" >&2; exit 64 ;; esac
case "$ci" in none|vmware) ;; *) echo "mkdisk-legacy: unknown cloud-init shape $ci" >&2; exit 64 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
work=$(mktemp -d /var/tmp/cloudprep-e2e-mk.XXXXXX)
W=$work E2E_NAME=mkdisk T0=$(date +%s)
loop="" lvloops=() QEMU_PIDS=()
r=$work/mnt
cleanup() {
    set +e
    for p in "${QEMU_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for m in dev/pts dev proc sys boot/efi boot; do umount "$r/$m" 2>/dev/null; done
    umount "$r" 2>/dev/null
    for l in "${lvloops[@]}"; do losetup -d "$l"; done
    [ -n "$loop" ] && { partx -d "$loop" 2>/dev/null; losetup -d "$loop"; }
    rm -rf "$work"
}
trap cleanup EXIT

host=legacy-vm
vg=$host-vg
# device-mapper names double the dashes of VG and LV names
dm_root="/dev/mapper/${vg//-/--}-root"
dm_swap="/dev/mapper/${vg//-/--}-swap_1"

rm -f "$img" "$img.vars"
truncate -s "$size" "$img"
case "$layout" in
    msdos) printf 'label: dos\n,,L,*\n' | sfdisk -q "$img" ;;
    # What the Debian installer's "guided - use entire disk and set up LVM" writes.
    lvm) printf 'label: dos\nsize=256MiB,type=83,bootable\ntype=5\ntype=8e\n' | sfdisk -q "$img" ;;
    uefi) printf 'label: gpt\nsize=128MiB,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name="EFI System Partition"\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' \
        | sfdisk -q "$img" ;;
esac
loop=$(losetup -f --show -P "$img")
partx -a "$loop" 2>/dev/null || true
mkdir -p "$r"
case "$layout" in
    msdos)
        p1=$(part_node "$loop" 1)
        mkfs.ext4 -q -F -L legacy-root "$p1"
        mount "$p1" "$r"
        ;;
    lvm)
        p1=$(part_node "$loop" 1)
        p5=$(part_node "$loop" 5)
        # The host kernel has no device-mapper: LVM metadata only (no activation), the filesystems written
        # through loop devices over the LVs' extents (as tests/export.rs does). The guest's kernel activates them.
        lvmcfg="devices { filter=[\"a|^$p5\$|\",\"r|.*|\"] global_filter=[\"a|^$p5\$|\",\"r|.*|\"] obtain_device_list_from_udev=0 } activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }"
        # (Without device-mapper every LVM command warns that activation is disabled: only errors are shown.)
        lv() {
            LVM_SUPPRESS_FD_WARNINGS=1 "$1" --config "$lvmcfg" --driverloaded n "${@:2}" 2>"$work/lvm.err" \
                || { cat "$work/lvm.err" >&2; return 1; }
        }
        lv pvcreate -qq -ff -y "$p5"
        lv vgcreate -qq "$vg" "$p5"
        num() { lv "$1" --noheadings --units b --nosuffix -o "$2" "$3" | tr -d ' '; }
        pe_start=$(num pvs pe_start "$p5")
        extent=$(num vgs vg_extent_size "$vg")
        part_start=$(( $(cat "/sys/class/block/$(basename "$p5")/start") * 512 ))
        lv_window() { # LV -> a loop device over its (single, linear) segment, on the image file itself
            local ranges first len
            ranges=$(num lvs seg_pe_ranges "$vg/$1")
            [ "$(echo "$ranges" | wc -w)" = 1 ] || { echo "mkdisk-legacy: $1 has several segments: $ranges" >&2; exit 1; }
            first=${ranges##*:}; first=${first%%-*}
            len=$(num lvs lv_size "$vg/$1")
            losetup -f --show -o $(( part_start + pe_start + first * extent )) --sizelimit "$len" "$img"
        }
        # root first, then swap_1 in the rest: each LV one linear segment, in the installer's order.
        free=$(num vgs vg_free_count "$vg")
        lv lvcreate -qq -an -Zn -y -l $(( free - 256 * 1024 * 1024 / extent )) -n root "$vg"
        lv lvcreate -qq -an -Zn -y -l 100%FREE -n swap_1 "$vg"
        rootlv=$(lv_window root); lvloops+=("$rootlv")
        swaplv=$(lv_window swap_1); lvloops+=("$swaplv")
        mkfs.ext4 -q -F "$rootlv"
        mkswap -q "$swaplv" >/dev/null
        mkfs.ext2 -q -F "$p1"
        mount "$rootlv" "$r"
        mkdir -p "$r/boot"
        mount "$p1" "$r/boot"
        lv lvs -o lv_name,lv_size,seg_pe_ranges "$vg" >&2
        ;;
    uefi)
        p1=$(part_node "$loop" 1)
        p2=$(part_node "$loop" 2)
        # No vfat in the host kernel: the ESP is made and filled with mtools, never mounted here.
        # (mtools complains that a loop partition has no geometry; -T/-h/-s give it one.)
        mformat -i "$p1" -F -T "$(blockdev --getsz "$p1")" -h 64 -s 32 -v ESP -N 4e2e0001 :: 2>/dev/null
        mmd -i "$p1" ::/EFI 2>/dev/null
        mkfs.ext4 -q -F -L legacy-root "$p2"
        mount "$p2" "$r"
        ;;
esac
"$repo/scripts/mkroot.sh" "$release" "$r" vm
k=$(ls "$r/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)

echo $host > "$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' $host > "$r/etc/hosts"
# A root password only for the serial console of this throwaway test guest.
echo 'root:cloudprep-e2e' | chroot "$r" chpasswd
{
    echo '# /etc/fstab: static file system information.'
    echo '# <file system> <mount point>   <type>  <options>       <dump>  <pass>'
    echo 'proc            /proc           proc    defaults        0       0'
    case "$layout" in
        msdos) echo '/dev/sda1       /               ext4    errors=remount-ro 0       1' ;;
        lvm)
            echo "$dm_root /               ext4    errors=remount-ro 0       1"
            echo '# /boot was on /dev/sda1 during installation'
            echo '/dev/sda1       /boot           ext2    defaults        0       2'
            echo "$dm_swap none            swap    sw              0       0"
            ;;
        uefi)
            echo '/dev/sda2       /               ext4    errors=remount-ro 0       1'
            echo '# /boot/efi was on /dev/sda1 during installation'
            echo "UUID=$(blkid -s UUID -o value "$p1") /boot/efi       vfat    umask=0077      0       1"
            ;;
    esac
} > "$r/etc/fstab"
[ "$layout" = uefi ] && mkdir -p "$r/boot/efi"
[ "$layout" = lvm ] && echo "RESUME=$dm_swap" > "$r/etc/initramfs-tools/conf.d/resume"

mount -t proc proc "$r/proc"
mount -t sysfs sys "$r/sys"
mount --bind /dev "$r/dev"
mount --bind /dev/pts "$r/dev/pts"
install_debs() { # DIR: a cached set installed inside the chroot (apt orders it; no lists, no network)
    rm -rf "$r/tmp/e2e-debs"; mkdir -p "$r/tmp/e2e-debs"
    cp "$1"/*.deb "$r/tmp/e2e-debs/"
    chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C sh -c \
        'apt-get install -y -q --no-install-recommends /tmp/e2e-debs/*.deb' >"$work/dpkg.log" 2>&1 \
        || { tail -n 30 "$work/dpkg.log" >&2; exit 1; }
    rm -rf "$r/tmp/e2e-debs"
}
case "$layout" in
    lvm) install_debs "$(cached_debs "$r" "$release" lvm2 lvm2)" ;;
    uefi)
        efidebs=$(cached_debs "$r" "$release" grub-efi grub-efi-amd64 efibootmgr)
        chroot "$r" env DEBIAN_FRONTEND=noninteractive dpkg --purge grub-pc >/dev/null
        install_debs "$efidebs"
        ;;
esac

if [ "$net" = ifupdown ]; then
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
    ifnames="net.ifnames=0 "
else
    install_debs "$(cached_debs "$r" "$release" netplan netplan.io)"
    chroot "$r" env DEBIAN_FRONTEND=noninteractive dpkg --purge ifupdown >/dev/null
    rm -f "$r/etc/network/interfaces"
    install -d -m 755 "$r/etc/netplan"
    # What open-vm-tools' guest customization writes on an Ubuntu-style guest (netplan + networkd).
    install -m 600 /dev/stdin "$r/etc/netplan/99-netcfg-vmware.yaml" <<NETPLAN
# Generated by VMWare customization engine.
network:
  version: 2
  renderer: networkd
  ethernets:
    ens192:
      match:
        macaddress: $mac
      set-name: ens192
      wakeonlan: true
      dhcp4: false
      dhcp6: false
      addresses:
        - 10.0.2.15/24
      gateway4: 10.0.2.2
      nameservers:
        addresses: [10.0.2.3]
NETPLAN
    chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
    ifnames=""
fi

sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf"
{
    echo '# IDE/SATA and the filesystem: what MODULES=dep picks on the old hypervisor.'
    printf '%s\n' ata_piix ata_generic pata_acpi ahci libata sd_mod scsi_mod ext4 crc32c_generic
    [ "$layout" = lvm ] && printf '%s\n' dm_mod dm_snapshot dm_mirror
    true
} > "$r/etc/initramfs-tools/modules"
sed -i "s/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\"${ifnames}console=ttyS0\"/" "$r/etc/default/grub"
echo 'GRUB_DISABLE_LINUX_UUID=true' >> "$r/etc/default/grub"
echo 'GRUB_TIMEOUT=1' >> "$r/etc/default/grub"

chroot "$r" env LC_ALL=C update-initramfs -c -k "$k" >/dev/null 2>&1 || chroot "$r" env LC_ALL=C update-initramfs -u -k "$k" >/dev/null
# grub.cfg as the old hypervisor's installer left it: the root named by kernel device name.
case "$layout" in
    msdos) gpart=msdos1 gmod=part_msdos bootdir=/boot rootdev=/dev/sda1 ;;
    lvm) gpart=msdos1 gmod=part_msdos bootdir="" rootdev=$dm_root ;;
    uefi) gpart=gpt2 gmod=part_gpt bootdir=/boot rootdev=/dev/sda2 ;;
esac
cat > "$r/boot/grub/grub.cfg" <<GRUB
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry 'Debian GNU/Linux (legacy)' {
	insmod $gmod
	insmod ext2
	set root='hd0,$gpart'
	linux	$bootdir/vmlinuz-$k root=$rootdev ro ${ifnames}console=ttyS0
	initrd	$bootdir/initrd.img-$k
}
GRUB
if [ "$layout" != uefi ]; then
    chroot "$r" grub-install --target=i386-pc "$loop" >"$work/grub.log" 2>&1 || { cat "$work/grub.log" >&2; exit 1; }
    echo "(hd0)	/dev/sda" > "$r/boot/grub/device.map"
fi

for d in "$@"; do cp "$d" "$r/root/"; done
install -d -m 700 "$r/root/.ssh"
[ -n "$root_key" ] && install -m 600 "$root_key" "$r/root/.ssh/authorized_keys"
if [ "$offline" = 1 ] || [ "$ci" != none ]; then
    cidebs=$(E2E_KEEP_LISTS=1 cached_debs "$r" "$release" cloud-init cloud-init)
fi
if [ "$offline" = 1 ]; then
    mkdir -p "$r/root/offline-debs"
    cp "$cidebs"/*.deb "$r/root/offline-debs/"
fi
if [ "$stale" = 1 ]; then
    # An installed guest's lists (they know the offline .debs' versions) and its mirror, now out of reach.
    tar -C "$r/var/lib/apt/lists" -xf "$cidebs.lists.tar"
    echo "deb $(host_mirror) $release main" > "$r/etc/apt/sources.list"
fi
if [ "$ci" = vmware ]; then
    install_debs "$cidebs"
    cc=$r/etc/cloud/cloud.cfg.d
    printf '# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ VMware, OVF, None ]\n' > "$cc/90_dpkg.cfg"
    # Ubuntu's installer (subiquity/curtin) leftovers.
    printf 'datasource:\n  None:\n    metadata:\n      instance-id: 1234\n    userdata_raw: "#cloud-config\\n"\ndatasource_list:\n- None\n' \
        > "$cc/99-installer.cfg"
    echo 'network: {config: disabled}' > "$cc/subiquity-disable-cloudinit-networking.cfg"
    printf 'apt:\n  preserve_sources_list: true\n' > "$cc/curtin-preserve-sources.cfg"
    # open-vm-tools' guest customization through cloud-init.
    printf 'disable_vmware_customization: false\ndatasource:\n  OVF:\n    allow_raw_data: true\n' > "$cc/99-vmware-guest-customization.cfg"
    # The state of the instance the old platform ran (the OVF datasource, its instance id, semaphores).
    old_iid=4216dd8c-7b5e-a3f1-0c2d-e2e0ddc0ffee
    vlc=$r/var/lib/cloud
    mkdir -p "$vlc/instances/$old_iid/sem" "$vlc/data" "$vlc/sem" "$vlc/scripts/per-instance"
    echo "DataSourceOVF: DataSourceOVF [seed=vmware-guestinfo]" > "$vlc/instances/$old_iid/datasource"
    echo "$old_iid" > "$vlc/data/instance-id"
    echo "$old_iid" > "$vlc/data/previous-instance-id"
    echo "DataSourceOVF: DataSourceOVF [seed=vmware-guestinfo]" > "$vlc/data/previous-datasource"
    printf '{"fqdn": "%s.corp.example", "hostname": "%s"}\n' $host $host > "$vlc/data/set-hostname"
    for m in config_set_hostname config_ssh config_users_groups config_write_files; do
        echo "$(date +%s)" > "$vlc/instances/$old_iid/sem/$m"
    done
    echo "$(date +%s).5" > "$vlc/instances/$old_iid/boot-finished"
    ln -sfn "/var/lib/cloud/instances/$old_iid" "$vlc/instance"
fi
if [ "$layout" = uefi ]; then
    # The old hypervisor's installer ran grub-install with efivarfs: GRUB in \EFI\debian\ and an NVRAM boot
    # entry. Do the same: boot the guest once under OVMF (kernel and initramfs given directly), run
    # grub-install in it, and keep the variables file as that VM's NVRAM.
    cp "$r/boot/vmlinuz-$k" "$r/boot/initrd.img-$k" "$work/"
    ssh-keygen -q -t ed25519 -N '' -C mkdisk -f "$work/key"
    cat "$work/key.pub" >> "$r/root/.ssh/authorized_keys"
    chmod 600 "$r/root/.ssh/authorized_keys"
    sync
    for m in dev/pts dev proc sys; do umount "$r/$m"; done
    umount "$r"
    partx -d "$loop" 2>/dev/null || true
    losetup -d "$loop"; loop=""
    port=$(free_port)
    # shellcheck disable=SC2046
    start_qemu first -uuid "$OLD_UUID" $(ovmf_args "$img.vars") \
        -kernel "$work/vmlinuz-$k" -initrd "$work/initrd.img-$k" -append "root=/dev/sda2 ro ${ifnames}console=ttyS0" \
        $(old_disk_args "$img" uefi) \
        -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:22" \
        -device "e1000,netdev=n0,mac=$mac,romfile="
    rc=0; wait_ssh "$work/key" root "$port" 900 || rc=$?
    [ "$rc" = 0 ] || { tail -n 40 "$work/first.console" >&2; echo "mkdisk-legacy: no SSH to the UEFI guest's first boot ($rc)" >&2; exit 1; }
    g() { gssh "$work/key" root "$port" "$@"; }
    g 'findmnt /boot/efi && grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian && efibootmgr -v' >&2 \
        || { echo "mkdisk-legacy: grub-install in the UEFI guest failed" >&2; exit 1; }
    g 'test -f /boot/efi/EFI/debian/grubx64.efi && test ! -e /boot/efi/EFI/BOOT/BOOTX64.EFI' \
        || { echo "mkdisk-legacy: the ESP is not as Debian installs it" >&2; exit 1; }
    g "sed -i '/ mkdisk\$/d' /root/.ssh/authorized_keys; sync; systemctl poweroff" || true
    wait_exit "$QEMU_PID" 300 || { echo "mkdisk-legacy: the UEFI guest did not power off" >&2; exit 1; }
    echo "mkdisk-legacy: NVRAM with the guest's boot entry in $img.vars" >&2
fi
sync
echo "mkdisk-legacy: $img ready ($release, layout $layout, net $net, cloud-init $ci, kernel $k, MAC $mac)"
