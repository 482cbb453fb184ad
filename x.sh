#!/usr/bin/env bash
# cloudprep developer entry point.
#   ./x.sh run    install build dependencies, build the static binary and the .deb, audit this machine (read-only)
#   ./x.sh test   install test dependencies, then run the whole test suite
#   ./x.sh setup  only install what the build and the tests need
#   ./x.sh deb    build the static binary and the .deb into target/deb/
set -euo pipefail
cd "$(dirname "$0")"

APT_PKGS=(debootstrap lintian grub-common e2fsprogs dosfstools mtools ovmf lvm2 fdisk gdisk cpio zstd lz4 xz-utils bzip2
          musl-tools util-linux kmod initramfs-tools-core fakeroot dpkg-dev file binutils systemd groff-base
          systemd-container netplan.io xfsprogs btrfs-progs cryptsetup-bin qemu-utils openssl openssh-client python3
          chromium time python3-venv)

setup() {
    local missing=()
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "x.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # The end-to-end test boots guests with qemu-system-x86. Debian 12's qemu-system-x86 (7.2) breaks
    # a newer qemu-utils from backports, so both are installed together at the same version (7.2 reads
    # and checks zstd qcow2; `apt-get install qemu-system-x86` alone would remove qemu-img instead).
    if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
        export DEBIAN_FRONTEND=noninteractive
        local v
        v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        if [ -z "$v" ] || [ "$v" = "(none)" ]; then
            apt-get update -q
            v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        fi
        echo "x.sh: installing qemu-system-x86 and qemu-utils $v" >&2
        apt-get install -y -q --no-install-recommends --allow-downgrades \
            qemu-system-x86 "qemu-utils=$v" ipxe-qemu seabios
    fi
    if ! rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
        rustup target add x86_64-unknown-linux-musl
    fi
}

case "${1:-}" in
    setup) setup ;;
    run)
        setup
        # The static binary and the .deb to install on the old VM (`apt install ./cloudprep_*.deb`).
        deb=$(packaging/build-deb.sh)
        echo "x.sh: built $deb" >&2
        shift
        set +e
        ./target/x86_64-unknown-linux-musl/release/cloudprep audit "$@"
        rc=$?
        echo "x.sh: audit exit code $rc (0 ready, 1 warnings, 2 blockers, 3 could not run)" >&2
        exit 0
        ;;
    deb)
        setup
        packaging/build-deb.sh
        ;;
    test)
        setup
        shift
        exec scripts/test.sh "$@"
        ;;
    *)
        sed -n '2,7p' "$0"
        exit 64
        ;;
esac
