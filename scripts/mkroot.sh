#!/usr/bin/env bash
# Build (once) and unpack a real Debian root filesystem made with debootstrap, for the tests.
#   scripts/mkroot.sh RELEASE DEST [VARIANT]
# VARIANT: "vm" (default: kernel, grub-pc, ifupdown, openssh-server, initramfs: a VMware-era guest's packages)
#          "cloud" (vm plus cloud-init: the base of a cloud-ready guest)
#          "uefi" (vm with grub-efi-amd64 instead of grub-pc: a UEFI guest's packages, real EFI binaries)
#          "min" (minbase only: for packaging tests).
# The debootstrap result is cached as a tarball under $CLOUDPREP_CACHE (default /var/cache/cloudprep-tests)
# so later runs on the same machine only unpack it. The mirror is read from the host's apt sources.
set -euo pipefail
release=$1 dest=$2 variant=${3:-vm}
cache=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
mkdir -p "$cache"
tarball="$cache/root-$release-$variant.tar"

mirror() {
    local m
    m=$(grep -rhoE '^(deb|URIs:)\s+\S*https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -v security | head -n1 | sed -E 's/^(deb|URIs:)\s+//; s/\[[^]]*\]\s*//')
    [ -n "$m" ] || { echo "mkroot: no Debian mirror found in the host's apt sources" >&2; exit 1; }
    echo "$m"
}

vm_pkgs="linux-image-amd64,grub-pc,ifupdown,isc-dhcp-client,openssh-server,initramfs-tools,zstd,iproute2,netbase,sudo,kmod,udev,systemd-sysv,dbus,locales"
if [ ! -s "$tarball" ]; then
    exec 9>"$cache/.lock-$release-$variant"
    flock 9
    if [ ! -s "$tarball" ]; then
        work=$(mktemp -d "$cache/build.XXXXXX")
        trap 'umount -R "$work/root" 2>/dev/null || true; rm -rf "$work"' EXIT
        case "$variant" in
            vm)  include="$vm_pkgs" ;;
            cloud) include="$vm_pkgs" ;;
            uefi) include="${vm_pkgs/grub-pc/grub-efi-amd64}" ;;
            min) include="" ;;
            *) echo "mkroot: unknown variant $variant" >&2; exit 2 ;;
        esac
        echo "mkroot: debootstrap $release ($variant) from $(mirror), cached at $tarball" >&2
        # grub-pc asks debconf questions; a noninteractive frontend keeps debootstrap unattended.
        DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase ${include:+--include="$include"} \
            "$release" "$work/root" "$(mirror)" >"$work/log" 2>&1 || { tail -n 30 "$work/log" >&2; exit 1; }
        if [ "$variant" = cloud ]; then
            # cloud-init in debootstrap's --include fails to configure (python3 ordering): add it with apt.
            mount -t proc proc "$work/root/proc"
            mount --bind /dev "$work/root/dev"
            echo "deb $(mirror) $release main" > "$work/root/etc/apt/sources.list"
            chroot "$work/root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C sh -c \
                'apt-get update -q && apt-get install -y -q --no-install-recommends cloud-init' >>"$work/log" 2>&1 \
                || { tail -n 30 "$work/log" >&2; exit 1; }
            umount "$work/root/dev" "$work/root/proc"
        fi
        rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
        tar -C "$work/root" --numeric-owner --xattrs -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
    fi
    flock -u 9
fi
mkdir -p "$dest"
tar -C "$dest" --numeric-owner --xattrs -xf "$tarball"
