#!/usr/bin/env bash
# Benchmark `cloudprep report merge` on N synthetic host reports (default 1000): wall time, CPU time (user +
# system: what counts on a loaded machine) and peak RSS per output format, from /usr/bin/time -v (Debian
# package `time`). Not a test: prints figures.
#   scripts/bench-fleet.sh [N]          (BIN=path/to/cloudprep to use another binary; default: release build)
# Each report is shaped like a real `cloudprep audit --format json` of an old guest: 8-14 findings with
# evidence, remediation and planned diffs, facts with two NICs and routes, recommendations.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/cloudprep
fi
[ -x /usr/bin/time ] || { echo "bench-fleet: /usr/bin/time missing (apt install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/reports" "$n" <<'PY'
import json, os, random, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
random.seed(42)
checks = [("fstab.device-names", "blocker"), ("network.udev-persistent-net", "blocker"),
          ("network.static-addressing", "blocker"), ("cloud-init.installed", "blocker"),
          ("cloud-init.datasource", "blocker"), ("boot.virtio-initramfs", "blocker"),
          ("boot.serial-console", "warning"), ("boot.serial-terminal", "warning"),
          ("cloud-init.locale", "warning"), ("network.resolv-conf-static", "warning"),
          ("platform.hypervisor-tools", "warning"), ("storage.absent-devices", "warning"),
          ("platform.qemu-guest-agent", "info"), ("boot.grub-installed", "info")]
diff = "".join(f"-/dev/sda{i} /srv{i} ext4 defaults 0 2\n+UUID=6b1f6f2e-8d7c-4a1e-b0a4-2f6f0f3c9e{i:02} /srv{i} ext4 defaults 0 2\n" for i in range(12))
for h in range(n):
    picked = random.sample(checks, random.randint(8, 14))
    findings = []
    for cid, sev in picked:
        status = random.choice(["open"] * 8 + ["waived", "error"])
        findings.append({
            "id": cid, "severity": sev, "status": status, "title": f"title of {cid}",
            "message": "why this breaks in the cloud " * 4,
            "evidence": [{"path": "/etc/fstab", "line": i + 1, "text": f"/dev/sda{i} /srv{i} ext4 defaults 0 2"} for i in range(4)],
            "remediation": "what the fix does " * 5,
            "fix": {"files": [{"path": "/etc/fstab", "action": "rewrite", "diff": diff}],
                    "commands": [{"argv": ["update-initramfs", "-u", "-k", "all"], "phase": "post", "order": 1, "reason": "r"}]},
        })
    report = {
        "schema": 1, "tool": {"name": "cloudprep", "version": "0.1.0"}, "root": "/",
        "summary": {"blockers": 0, "warnings": 0, "info": 0, "errors": 0, "waived": 0, "exit_code": 2},
        "facts": {"root": "/", "live": True,
                  "os": {"id": "debian", "version_id": "10", "pretty_name": "Debian GNU/Linux 10 (buster)"},
                  "arch": "x86_64", "kernels": ["4.19.0-27-amd64"], "boot_mode": random.choice(["bios", "uefi"]),
                  "cpus": 4, "memory_bytes": 8 << 30, "mounts": [], "disks": [], "filesystems": [], "root_device": "/dev/sda1",
                  "interfaces": [{"name": "lo", "mac": None, "addresses": ["127.0.0.1/8"]},
                                 {"name": "eth0", "mac": f"00:50:56:{h >> 8 & 255:02x}:{h & 255:02x}:01", "driver": "vmxnet3", "addresses": [f"10.{h >> 8}.{h & 255}.5/24"]},
                                 {"name": "eth1", "mac": f"00:50:56:{h >> 8 & 255:02x}:{h & 255:02x}:02", "driver": "vmxnet3", "addresses": [f"192.168.{h & 255}.5/24"]}],
                  "routes": [{"destination": "default", "gateway": f"10.{h >> 8}.{h & 255}.1", "interface": "eth0"}],
                  "unavailable": {}},
        "recommendations": {"min_vcpus": 4, "min_ram_mib": 8192, "min_disk_gib": 40,
                            "properties": {"hw_disk_bus": "virtio", "hw_vif_model": "virtio", "os_distro": "debian", "os_version": "10"},
                            "disk_format": "raw", "image_create": "openstack image create ..."},
        "checks": [], "findings": findings, "plan": {"files": [], "commands": []},
    }
    with open(os.path.join(out, f"vm{h:04d}.example.com.json"), "w") as f:
        json.dump(report, f, indent=2)
PY
echo "bench-fleet: $n reports, $(du -sh "$work/reports" | cut -f1) in $work/reports; binary $BIN ($("$BIN" --version))"
printf '%-6s %10s %10s %14s %12s  %s\n' format "wall (s)" "cpu (s)" "peak RSS (MiB)" "output" "exit"
for fmt in text json csv html; do
    set +e
    /usr/bin/time -v -o "$work/time.$fmt" "$BIN" report merge "$work/reports" --format "$fmt" --output "$work/fleet.$fmt" 2>"$work/err.$fmt"
    rc=$?
    set -e
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.$fmt")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.3f", s}' "$work/time.$fmt")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.$fmt")
    secs=$(python3 -c "import sys; p=sys.argv[1].split(':'); print(f'{float(p[-1]) + 60 * int(p[-2]) + (3600 * int(p[-3]) if len(p) > 2 else 0):.3f}')" "$wall")
    printf '%-6s %10s %10s %14s %12s  %s\n' "$fmt" "$secs" "$cpu" "$((rss / 1024))" "$(du -h "$work/fleet.$fmt" | cut -f1)" "$rc"
done
