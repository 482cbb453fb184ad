#!/usr/bin/env bash
# Benchmark `cloudprep export` against `qemu-img convert` and `e2image -ra` on a disk like a long-lived
# VM's: an OS tree on ext4, a few GiB of deleted data in its free blocks, and a used swap partition.
#   scripts/bench-export.sh [DISK_GIB (default 7)] [DELETED_GIB (default 3)]
# Needs root, qemu-img, e2fsprogs, openssl. Prints time, output size and peak RSS of every run, with ratios,
# first with the source in the page cache (warm), then with all caches dropped before every run (cold).
# BENCH_SKIP_ZLIB=1 skips the slow `qemu-img -c` (zlib) runs.
# All tools read the same loop device (what a VM's /dev/vda is); outputs go to a scratch directory on
# another filesystem and are removed after being measured.
set -euo pipefail
cd "$(dirname "$0")/.."
disk_gib=${1:-7} deleted_gib=${2:-3}
[ "$(id -u)" = 0 ] || { echo "bench-export: needs root (loop devices)" >&2; exit 2; }
cargo build --release --quiet
bin=$PWD/target/release/cloudprep
work=$(mktemp -d "${CLOUDPREP_SCRATCH:-/var/tmp}/cloudprep-bench.XXXXXX")
loop=""
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    if [ -n "$loop" ]; then partx -d "$loop" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

img=$work/disk.img
truncate -s "${disk_gib}G" "$img"
swap_mib=1024
printf 'label: dos\nstart=2048, size=%s, type=83\nstart=%s, size=%s, type=82\n' \
    $(( (disk_gib * 1024 - swap_mib - 2) * 2048 )) $(( (disk_gib * 1024 - swap_mib - 1) * 2048 )) $(( swap_mib * 2048 )) \
    | sfdisk -q "$img"
loop=$(losetup -f --show -P "$img")
partx -a "$loop" 2>/dev/null || true
for p in /sys/class/block/"${loop#/dev/}"/"${loop#/dev/}"p*; do
    n=$(basename "$p"); [ -e "/dev/$n" ] || mknod "/dev/$n" b $(tr ':' ' ' < "$p/dev")
done
mkfs.ext4 -q -F "${loop}p1"
mkswap -q "${loop}p2" >/dev/null 2>&1 || mkswap "${loop}p2" >/dev/null
mkdir -p "$work/mnt"
mount "${loop}p1" "$work/mnt"
echo "bench: unpacking the OS tree" >&2
scripts/mkroot.sh bookworm "$work/mnt/" vm
echo "bench: writing ${deleted_gib} GiB of data to delete (half random, half compressible)" >&2
half=$(( deleted_gib * 512 ))
dd if=/dev/urandom of="$work/mnt/old-random" bs=1M count=$half status=none
tar -C "$work/mnt" -cf - usr 2>/dev/null | head -c $(( half << 20 )) > "$work/mnt/old-logs" || true
sync
rm -f "$work/mnt/old-random" "$work/mnt/old-logs"
sync
echo "bench: filling 512 MiB of swap" >&2
dd if=/dev/urandom of="${loop}p2" bs=1M seek=1 count=512 conv=notrunc status=none
umount "$work/mnt"
sync

results=()
cache=warm
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
measure() { # NAME OUTFILE CMD...
    local name="$1 ($cache)" out=$2; shift 2
    rm -f "$out"
    sync
    # warm: the source was read once before (it sits in the page cache, as on a test box);
    # cold: every cache dropped before each run (a migrated VM's disk is not in the page cache).
    if [ "$cache" = cold ]; then drop_caches; fi
    local t
    /usr/bin/time -f '%e %M' "$@" >/dev/null 2>"$work/err" || { echo "bench: $name failed:" >&2; cat "$work/err" >&2; exit 1; }
    t=$(tail -n1 "$work/err")
    local secs=${t% *} rss=${t#* }
    local alloc; alloc=$(du -B1 "$out" | cut -f1)
    results+=("$name|$secs|$alloc|$rss")
    printf '%-42s %8s s %12s bytes %8s KiB RSS\n' "$name" "$secs" "$alloc" "$rss"
    rm -f "$out"
}
o=$work/out
run_all() {
    measure "cloudprep raw"                 $o.raw "$bin" export --source "$loop" --format raw -o $o.raw
    measure "cloudprep qcow2"               $o.q   "$bin" export --source "$loop" --format qcow2 -o $o.q
    measure "cloudprep qcow2 zstd"          $o.qz  "$bin" export --source "$loop" --format qcow2 --compress zstd -o $o.qz
    measure "cloudprep qcow2 zlib"          $o.ql  "$bin" export --source "$loop" --format qcow2 --compress zlib -o $o.ql
    measure "cloudprep qcow2 --digest none" $o.q   "$bin" export --source "$loop" --format qcow2 --digest none -o $o.q
    measure "cloudprep zstd --digest none"  $o.qz  "$bin" export --source "$loop" --format qcow2 --compress zstd --digest none -o $o.qz
    measure "qemu-img raw"                  $o.raw qemu-img convert -f raw -O raw "$loop" $o.raw
    measure "qemu-img qcow2"                $o.q   qemu-img convert -f raw -O qcow2 "$loop" $o.q
    measure "qemu-img qcow2 -c zstd"        $o.qz  qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$loop" $o.qz
    if [ -z "${BENCH_SKIP_ZLIB:-}" ]; then
        measure "qemu-img qcow2 -c (zlib)"  $o.ql  qemu-img convert -f raw -O qcow2 -c "$loop" $o.ql
    fi
    measure "e2image -ra (ext4 part.)"      $o.e2  e2image -ra "${loop}p1" $o.e2
}
get() { for r in "${results[@]}"; do IFS='|' read -r n s a m <<<"$r"; [ "$n" = "$1 ($cache)" ] && { echo "${!2}"; return; }; done; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
ratios() {
    echo "ratios ($cache cache):"
    echo "  qcow2 size / e2image kept size:                  $(ratio "$(get 'cloudprep qcow2' a)" "$(get 'e2image -ra (ext4 part.)' a)")  (target <= ~1.1)"
    echo "  qcow2 time / qemu-img qcow2 time:                 $(ratio "$(get 'cloudprep qcow2' s)" "$(get 'qemu-img qcow2' s)")  (target <= 0.5)"
    echo "    same, --digest none:                            $(ratio "$(get 'cloudprep qcow2 --digest none' s)" "$(get 'qemu-img qcow2' s)")"
    echo "  qcow2 zstd time / qemu-img -c zstd time:          $(ratio "$(get 'cloudprep qcow2 zstd' s)" "$(get 'qemu-img qcow2 -c zstd' s)")  (target <= 0.25)"
    echo "    same, --digest none:                            $(ratio "$(get 'cloudprep zstd --digest none' s)" "$(get 'qemu-img qcow2 -c zstd' s)")"
    if [ -z "${BENCH_SKIP_ZLIB:-}" ]; then
    echo "  qcow2 zlib time / qemu-img -c time:               $(ratio "$(get 'cloudprep qcow2 zlib' s)" "$(get 'qemu-img qcow2 -c (zlib)' s)")"
    fi
    echo "  zstd size / qemu-img -c zstd size:                $(ratio "$(get 'cloudprep qcow2 zstd' a)" "$(get 'qemu-img qcow2 -c zstd' a)")"
    echo "  raw size / qemu-img raw size:                     $(ratio "$(get 'cloudprep raw' a)" "$(get 'qemu-img raw' a)")"
    echo "  raw time / qemu-img raw time:                     $(ratio "$(get 'cloudprep raw' s)" "$(get 'qemu-img raw' s)")"
}
echo "disk: ${disk_gib} GiB, ext4 with a bookworm root + ${deleted_gib} GiB deleted, 1 GiB swap (512 MiB used); $(nproc) cores; $(qemu-img --version | head -n1)"
echo "the digest (SHA-256 of all ${disk_gib} GiB, zeros included) runs at $(openssl speed -evp sha256 -bytes 1048576 -seconds 1 2>/dev/null | awk '/^sha256/ {printf "%.2f GB/s", $2 / 1e6}') on one core here (openssl)"
# Warm: a first pass over the device puts it in the page cache for everyone alike (cloudprep drops the
# source device's own cache before reading, so it reads through the loop device from the cached image).
cat "$loop" > /dev/null
run_all
echo
ratios
echo
cache=cold
run_all
echo
ratios
echo
echo "note: a shared 2-core machine; single runs, expect +-20% noise (check 'uptime' load)."
