#!/usr/bin/env bash
# Benchmark `cloudprep export` against `qemu-img convert` and `e2image -ra` on a disk like a long-lived
# VM's: an OS tree on ext4, a few GiB of deleted data in its free blocks, and a used swap partition.
#   scripts/bench-export.sh [DISK_GIB (default 7)] [DELETED_GIB (default 3)]
# Needs root, qemu-img, e2fsprogs, openssl, GNU time (/usr/bin/time). Builds the shipped binary (static musl
# release; BENCH_BIN=PATH uses another). Three modes, every tool in each, runs interleaved:
#   warm  the source in the page cache (read once before), as on a test box;
#   cold  every cache dropped before each run; the loop device reads its image file through the page cache;
#   disk  the source is a loop device with --direct-io=on over the image file, caches dropped before each
#         run: neither tool reads the page cache, every source byte comes from this machine's disk, as a
#         migrated VM reads its virtual disk.
# e2image -ra (the used blocks of the one ext4 filesystem; its output does not boot) is the physical-limit
# reference. Prints a line per run (time, peak RSS from `/usr/bin/time -v`, output sizes), then the tables:
# times, ratios against the targets, peak RSS and sizes, and cloudprep's per-stage timings (-vv).
# Outputs go to a scratch directory on the same disk and are removed after being measured.
set -euo pipefail
cd "$(dirname "$0")/.."
disk_gib=${1:-7} deleted_gib=${2:-3}
[ "$(id -u)" = 0 ] || { echo "bench-export: needs root (loop devices, drop_caches)" >&2; exit 2; }
echo "bench: load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
else
    cargo build --release --quiet --target x86_64-unknown-linux-musl
    bin=$PWD/target/x86_64-unknown-linux-musl/release/cloudprep
fi
work=$(mktemp -d "${CLOUDPREP_SCRATCH:-/var/tmp}/cloudprep-bench.XXXXXX")
loops=()
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    for l in "${loops[@]}"; do partx -d "$l" 2>/dev/null || true; losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# attach IMG [losetup options...]: a loop device with its partition nodes (no udev here).
attach() {
    local img=$1 l; shift
    l=$(losetup -f --show -P "$@" "$img")
    loops+=("$l")
    partx -a "$l" 2>/dev/null || true
    for p in /sys/class/block/"${l#/dev/}"/"${l#/dev/}"p*; do
        local n; n=$(basename "$p"); [ -e "/dev/$n" ] || mknod "/dev/$n" b $(tr ':' ' ' < "$p/dev")
    done
    echo "$l"
}

img=$work/disk.img
truncate -s "${disk_gib}G" "$img"
swap_mib=1024
printf 'label: dos\nstart=2048, size=%s, type=83\nstart=%s, size=%s, type=82\n' \
    $(( (disk_gib * 1024 - swap_mib - 2) * 2048 )) $(( (disk_gib * 1024 - swap_mib - 1) * 2048 )) $(( swap_mib * 2048 )) \
    | sfdisk -q "$img"
loop=$(attach "$img")
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
dloop=$(attach "$img" --direct-io=on)
[ "$(cat /sys/block/"${dloop#/dev/}"/loop/dio)" = 1 ] || { echo "bench: $dloop did not get direct I/O" >&2; exit 1; }

declare -A T RSS ALLOC SIZE
stages=()
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# measure MODE NAME OUTFILE CMD...: one run; records wall time, peak RSS, allocated and apparent size.
measure() {
    local mode=$1 name=$2 out=$3; shift 3
    rm -f "$out"
    sync
    if [ "$mode" != warm ]; then drop_caches; fi
    /usr/bin/time -v -o "$work/time" "$@" >/dev/null 2>"$work/err" \
        || { echo "bench: $name ($mode) failed:" >&2; cat "$work/err" "$work/time" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$work/time")
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$work/time")
    T[$mode,$name]=$wall RSS[$mode,$name]=$rss
    ALLOC[$mode,$name]=$(du -B1 "$out" | cut -f1) SIZE[$mode,$name]=$(stat -c %s "$out")
    printf '%-5s %-34s %7s s %8s MiB RSS %12s bytes allocated %12s bytes apparent\n' \
        "$mode" "$name" "$wall" "$rss" "${ALLOC[$mode,$name]}" "${SIZE[$mode,$name]}"
    local st
    st=$(grep -h -o 'export pipeline: .*\|export: output \(synced\|hashed\) in .*' "$work/err" | tr '\n' ' ' || true)
    [ -z "$st" ] || stages+=("$mode $name: $st")
    rm -f "$out"
}
o=$work/out
run_mode() { # MODE SOURCE-LOOP
    local m=$1 l=$2
    measure "$m" "cloudprep qcow2"           $o.q   "$bin" -vv export --source "$l" --format qcow2 -o $o.q
    measure "$m" "qemu-img qcow2"            $o.q   qemu-img convert -f raw -O qcow2 "$l" $o.q
    measure "$m" "cloudprep qcow2 zstd"      $o.qz  "$bin" -vv export --source "$l" --format qcow2 --compress zstd -o $o.qz
    measure "$m" "qemu-img qcow2 -c zstd"    $o.qz  qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$l" $o.qz
    measure "$m" "e2image -ra"               $o.e2  e2image -ra "${l}p1" $o.e2
    measure "$m" "cloudprep raw"             $o.raw "$bin" -vv export --source "$l" --format raw -o $o.raw
    measure "$m" "cloudprep qcow2 --digest none"    $o.q "$bin" -vv export --source "$l" --format qcow2 --digest none -o $o.q
    measure "$m" "cloudprep qcow2 --digest content" $o.q "$bin" -vv export --source "$l" --format qcow2 --digest content -o $o.q
}
sha_rate=$(openssl speed -evp sha256 -bytes 1048576 -seconds 1 2>/dev/null | awk '/^sha256/ {printf "%.2f GB/s", $2 / 1e6}')
echo "disk: ${disk_gib} GiB, ext4 with a bookworm root + ${deleted_gib} GiB deleted, 1 GiB swap (512 MiB used); $(nproc) cores; $(qemu-img --version | head -n1); $($bin --version)"
echo "SHA-256 on one core here (openssl): $sha_rate"
# Warm: a first pass over the device puts it in the page cache for everyone alike.
cat "$loop" > /dev/null
run_mode warm "$loop"
run_mode cold "$loop"
run_mode disk "$dloop"
modes=(warm cold disk)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.0f", a / 1048576 }'; }
row() { # LABEL FUNCTION: a table row with FUNCTION MODE for each mode
    local line="| $1 |"
    for m in "${modes[@]}"; do line+=" $($2 "$m") |"; done
    echo "$line"
}
header() { echo "| $1 | warm | cold | disk (direct I/O) |"; echo "|---|---|---|---|"; }
echo
echo "load average: $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "Times (s):"
header run
for n in "cloudprep qcow2" "qemu-img qcow2" "cloudprep qcow2 zstd" "qemu-img qcow2 -c zstd" "e2image -ra" \
    "cloudprep raw" "cloudprep qcow2 --digest none" "cloudprep qcow2 --digest content"; do
    t_of() { echo "${T[$1,$n]}"; }
    row "$n" t_of
done
echo
echo "Ratios (target):"
header ratio
r1() { ratio "${T[$1,cloudprep qcow2]}" "${T[$1,qemu-img qcow2]}"; }
r2() { ratio "${T[$1,cloudprep qcow2 zstd]}" "${T[$1,qemu-img qcow2 -c zstd]}"; }
r3() { ratio "${ALLOC[$1,cloudprep qcow2 zstd]}" "${ALLOC[$1,qemu-img qcow2 -c zstd]}"; }
r4() { ratio "${T[$1,cloudprep qcow2]}" "${T[$1,e2image -ra]}"; }
r5() { ratio "${ALLOC[$1,cloudprep qcow2]}" "${ALLOC[$1,e2image -ra]}"; }
r6() { ratio "${ALLOC[$1,cloudprep qcow2 zstd]}" "${ALLOC[$1,e2image -ra]}"; }
row "qcow2 time / qemu-img qcow2 (<= 0.25)" r1
row "zstd time / qemu-img -c zstd (<= 0.15)" r2
row "zstd size / qemu-img -c zstd size (< 1)" r3
row "qcow2 time / e2image -ra (<= 1.3)" r4
row "qcow2 size / e2image -ra size (<= 1.1)" r5
row "zstd size / e2image -ra size (<= 1.1)" r6
echo
echo "Peak RSS (MiB; target <= 64 for cloudprep) and output size (MiB allocated / apparent):"
echo "| run | RSS warm | RSS cold | RSS disk | size (disk run) |"
echo "|---|---|---|---|---|"
for n in "cloudprep qcow2" "qemu-img qcow2" "cloudprep qcow2 zstd" "qemu-img qcow2 -c zstd" "e2image -ra" \
    "cloudprep raw" "cloudprep qcow2 --digest none" "cloudprep qcow2 --digest content"; do
    echo "| $n | ${RSS[warm,$n]} | ${RSS[cold,$n]} | ${RSS[disk,$n]} | $(mib "${ALLOC[disk,$n]}") / $(mib "${SIZE[disk,$n]}") |"
done
echo
echo "cloudprep per-stage timings (-vv):"
for s in "${stages[@]}"; do echo "  $s"; done
echo
echo "note: a shared 2-core machine; single runs, expect +-20% noise (compare the load averages above)."
