#!/usr/bin/env bash
# The whole test suite: format and lint gates, unit tests, and the integration tests on real debootstrap
# roots and loop-device disk images (needs root). Called by `./x.sh test` and `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The integration tests need loop devices, mounts and chroots; they fail (never skip) without root.
if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the test suite must run as root (loop devices, mounts, the guest's chroot): sudo $0" >&2
    exit 1
fi
export CLOUDPREP_CACHE=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
start=$(date +%s)
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# Prepare the cached debootstrap root once, before the tests race for it.
warm=$(mktemp -d); scripts/mkroot.sh bookworm "$warm/root" vm; rm -rf "$warm"
# Integration tests share loop devices and mounts: run test binaries one thread each where they ask for it.
cargo test --all-targets --no-fail-fast -- --test-threads=2
echo "test.sh: finished in $(( $(date +%s) - start ))s"
