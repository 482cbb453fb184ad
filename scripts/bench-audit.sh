#!/usr/bin/env bash
# Benchmark (not a test): wall time of `cloudprep audit` on a full debootstrap root.
#   scripts/bench-audit.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release --quiet
work=$(mktemp -d /var/tmp/cloudprep-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
scripts/mkroot.sh bookworm "$work/root" vm
files=$(find "$work/root" -xdev | wc -l)
size=$(du -sh "$work/root" | cut -f1)
echo "root: $work/root ($files entries, $size)"
sync
times=()
for i in $(seq "$runs"); do
    s=$(date +%s.%N)
    ./target/release/cloudprep audit --root "$work/root" --format json >/dev/null 2>&1 || true
    e=$(date +%s.%N)
    times+=("$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f", b - a }')")
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$runs" '
    { t[NR] = $1; sum += $1 }
    END { printf "audit wall time over %d runs: min %.3f s, median %.3f s, max %.3f s, mean %.3f s\n",
          n, t[1], t[int((n+1)/2)], t[n], sum/n }'
