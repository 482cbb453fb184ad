# Shared helpers of the end-to-end scripts (sourced by run.sh, variant.sh and mkdisk-legacy.sh; bash only).
# Functions only: the caller sets W (its work directory), T0 and the EXIT trap (e2e_init does it for the
# test scripts). Networking: every guest uses qemu user networking with restrict=on; the only ways in or out
# are the SSH port forwarded from 127.0.0.1 and the metadata service, a program qemu runs on this host per
# connection.

E2E_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

OLD_MAC=00:50:56:3a:10:01     # a VMware OUI, pinned by 70-persistent-net.rules
NEW_MAC=fa:16:3e:5c:21:07     # an OpenStack OUI
OLD_UUID=564d3a10-0001-4c2b-9e4f-0123456789ab
NEW_UUID=7f0c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f
HOSTNAME_MD=migrated-e2e
IID=i-0e2e5c2107
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
# The cloud's network: link-local so that slirp accepts a guestfwd at 169.254.169.254 (REFERENCE.md).
CLOUD_NET="user,id=n0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15"

# ---------------------------------------------------------------------------------------------------
# Loop devices without udev (REFERENCE.md): the partition node is made from sysfs, and made anew when a node
# left from an earlier attach carries another partition's major:minor.
part_node() { # LOOP N -> prints /dev/loopXpN
    local p="${1}p$2" want
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -e "/sys/class/block/$(basename "$p")/dev" ] && break
        partx -a "$1" 2>/dev/null || partx -u "$1" 2>/dev/null || true
        sleep 0.2
    done
    want=$(cat "/sys/class/block/$(basename "$p")/dev") || { echo "e2e: no partition $p" >&2; return 1; }
    if [ ! -b "$p" ] || [ "$(stat -c '%t:%T' "$p" | { IFS=: read -r a b; echo "$((16#$a)):$((16#$b))"; })" != "$want" ]; then
        rm -f "$p"
        mknod "$p" b "${want%%:*}" "${want##*:}"
    fi
    echo "$p"
}

# The host's Debian mirror, as scripts/mkroot.sh finds it (sources.list may not exist).
host_mirror() {
    local m
    m=$( { grep -rhoE '^(deb|URIs:)\s+\S*https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
        | { grep -v security || true; } | head -n1 | sed -E 's/^(deb|URIs:)\s+//; s/\[[^]]*\]\s*//')
    [ -n "$m" ] || { echo "e2e: no Debian mirror in the host's apt sources" >&2; return 1; }
    echo "$m"
}

# .debs of PKGS and the dependencies ROOT lacks, fetched once through ROOT's apt (chroot, the host's mirror)
# and cached under $CLOUDPREP_CACHE/offline-debs-RELEASE-NAME; prints that directory. ROOT needs /proc and
# /dev mounted. ROOT's sources.list and package lists are left as they were (none: the guest is offline).
cached_debs() { # ROOT RELEASE NAME PKGS...
    local r=$1 rel=$2 name=$3; shift 3
    local cache=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
    local debs="$cache/offline-debs-$rel-$name" sl="$r/etc/apt/sources.list" mirror
    if ! ls "$debs"/*.deb >/dev/null 2>&1; then
        mirror=$(host_mirror)
        exec 8>"$cache/.lock-debs-$rel-$name"
        flock 8
        if ! ls "$debs"/*.deb >/dev/null 2>&1; then
            cp -a "$sl" "$sl.e2e-orig" 2>/dev/null || true
            echo "deb $mirror $rel main" > "$sl"
            rm -f "$r/var/cache/apt/archives/"*.deb
            if ! chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C sh -c \
                "apt-get update -q && apt-get install -y -q --download-only --no-install-recommends $*" \
                >"$r/tmp/e2e-apt.log" 2>&1; then
                tail -n 30 "$r/tmp/e2e-apt.log" >&2
                return 1
            fi
            rm -rf "$debs.tmp"; mkdir -p "$debs.tmp"
            mv "$r/var/cache/apt/archives/"*.deb "$debs.tmp/"
            # With E2E_KEEP_LISTS=1, the package lists of that moment: for a guest whose lists know these
            # versions (mkdisk-legacy.sh --stale-apt-lists).
            if [ "${E2E_KEEP_LISTS:-0}" = 1 ]; then tar -C "$r/var/lib/apt/lists" -cf "$debs.lists.tar" .; fi
            rm -rf "$debs"; mv "$debs.tmp" "$debs"
            if [ -e "$sl.e2e-orig" ]; then mv "$sl.e2e-orig" "$sl"; else rm -f "$sl"; fi
            rm -rf "$r/var/lib/apt/lists/"*_Packages "$r/var/lib/apt/lists/"*_InRelease "$r/var/lib/apt/lists/"*_Release* \
                "$r/var/cache/apt/"*.bin "$r/tmp/e2e-apt.log"
        fi
        flock -u 8
    fi
    echo "$debs"
}

# ---------------------------------------------------------------------------------------------------
# The test scripts' frame: work directory, cleanup of qemu, mounts and loop devices on every exit path.
e2e_init() { # NAME
    [ "$(id -u)" = 0 ] || { echo "e2e: needs root (loop devices, mounts)" >&2; exit 2; }
    for t in qemu-system-x86_64 qemu-img ssh ssh-keygen setpriv /usr/bin/python3 mkfs.ext4; do
        command -v "$t" >/dev/null || { echo "e2e: $t is missing (./x.sh setup installs it)" >&2; exit 2; }
    done
    E2E_NAME=$1
    W=$(mktemp -d "${CLOUDPREP_SCRATCH:-/var/tmp}/cloudprep-e2e-$1.XXXXXX")
    MOUNTS=()
    LOOPS=()
    QEMU_PIDS=()
    T0=$(date +%s)
    TIMINGS=()
    trap e2e_cleanup EXIT
    trap 'exit 130' INT TERM HUP
}

log() { echo "e2e $E2E_NAME [$(( $(date +%s) - T0 ))s] $*" >&2; }
fail() {
    echo "e2e $E2E_NAME: FAIL in stage \"${STAGE:-?}\": $*" >&2
    [ -n "${STAGE_T:-}" ] && TIMINGS+=("$STAGE: $(( $(date +%s) - STAGE_T ))s (FAILED)")
    for c in "$W"/*.console; do
        [ -s "$c" ] || continue
        echo "---- last lines of $(basename "$c") ----" >&2
        tail -n 40 "$c" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' >&2
    done
    print_timings
    exit 1
}
print_timings() {
    [ ${#TIMINGS[@]} -gt 0 ] || return 0
    echo "e2e $E2E_NAME: stage timings" >&2
    for t in "${TIMINGS[@]}"; do echo "  $t" >&2; done
}
e2e_cleanup() {
    local rc=$?
    set +e
    for p in "${QEMU_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${QEMU_PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null
    done
    for ((i = ${#LOOPS[@]} - 1; i >= 0; i--)); do
        partx -d "${LOOPS[i]}" 2>/dev/null
        losetup -d "${LOOPS[i]}" 2>/dev/null
    done
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "e2e: kept $W" >&2
    else
        rm -rf "$W"
    fi
    exit "$rc"
}

stage_begin() { STAGE=$1; STAGE_T=$(date +%s); log "stage: $STAGE"; }
stage_end() {
    local s=$(( $(date +%s) - STAGE_T ))
    TIMINGS+=("$STAGE: ${s}s")
    echo "e2e $E2E_NAME: stage \"$STAGE\" took ${s} s" >&2
}
e2e_pass() {
    echo "e2e $E2E_NAME: PASS in $(( $(date +%s) - T0 )) s"
    for t in "${TIMINGS[@]}"; do echo "  $t"; done
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------------
# qemu in the background, killed with this script even if the script itself is SIGKILLed (pdeathsig).
# QEMU_MACHINE: the machine type (default pc; the UEFI cloud boots q35, as cloudprep recommends with
# hw_machine_type=q35 for UEFI guests).
QEMU_COMMON=(-accel tcg -m 1536 -smp 2 -display none -no-user-config -nodefaults -vga std)
start_qemu() { # NAME ARGS...
    local name=$1; shift
    : > "$W/$name.console"
    setpriv --pdeathsig KILL qemu-system-x86_64 -machine "${QEMU_MACHINE:-pc}" "${QEMU_COMMON[@]}" -name "cloudprep-e2e-$name" \
        -serial "file:$W/$name.console" "$@" 2>"$W/$name.qemu-stderr" &
    QEMU_PID=$!
    QEMU_PIDS+=("$QEMU_PID")
    log "$name: qemu pid $QEMU_PID"
}
stop_qemu() { # PID: hard stop (the guest's disk is a -snapshot or thrown away)
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# UEFI firmware arguments: the read-only code and a writable variables file (VARS; made from the empty
# template when it does not exist: what a new cloud instance starts with).
ovmf_args() { # VARS
    [ -e "$1" ] || cp "$OVMF_VARS" "$1"
    echo "-drive if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE -drive if=pflash,format=raw,unit=1,file=$1"
}
# The system disk on the old hypervisor: IDE for BIOS guests; SATA (AHCI) under OVMF, whose i440fx IDE disk
# the guest kernel does not find (and a VMware UEFI VM's disk is SATA or SCSI anyway).
old_disk_args() { # IMAGE bios|uefi
    if [ "$2" = uefi ]; then
        echo "-device ahci,id=ahci0 -drive file=$1,format=raw,if=none,id=sysdisk -device ide-hd,drive=sysdisk,bus=ahci0.0"
    else
        echo "-drive file=$1,format=raw,if=ide,index=0"
    fi
}
monitor() { # NAME COMMAND: one HMP command on the guest's monitor socket
    /usr/bin/python3 - "$W/$1.mon" "$2" <<'PY' >&2
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
def drain():
    out = b""
    try:
        while not out.endswith(b"(qemu) "):
            out += s.recv(4096)
    except socket.timeout:
        pass
    return out
drain()
s.sendall(sys.argv[2].encode() + b"\n")
reply = drain().decode(errors="replace")
# HMP echoes the command with line-editing escapes; only an error is worth showing.
if "rror" in reply or "ould not" in reply:
    print(reply.rsplit("\r\n", 2)[-2] if "\r\n" in reply else reply)
    sys.exit(1)
PY
}
# Readers of console output use `grep PATTERN >/dev/null`, not `grep -q`: under pipefail a grep that quits at
# its first match makes the writer die of SIGPIPE and the whole test fail (or pass) by accident.
console() { tr -d '\r' < "$W/$1.console" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g'; }
# Wait until the console shows a pattern (grep -E), the guest's qemu dies, or the timeout passes.
wait_console() { # NAME PATTERN TIMEOUT
    local name=$1 pat=$2 timeout=$3 t=0
    while ! console "$name" | grep -E "$pat" >/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || return 2
        [ "$t" -ge "$timeout" ] && return 1
        sleep 2; t=$((t + 2))
    done
}
wait_exit() { # PID TIMEOUT
    local t=0
    while kill -0 "$1" 2>/dev/null; do
        [ "$t" -ge "$2" ] && return 1
        sleep 2; t=$((t + 2))
    done
    wait "$1" 2>/dev/null || true
}

SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR
          -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=8)
gssh() { # KEY USER PORT CMD...
    local key=$1 user=$2 port=$3; shift 3
    ssh "${SSH_OPTS[@]}" -i "$key" -p "$port" "$user@127.0.0.1" "$@"
}
wait_ssh() { # KEY USER PORT TIMEOUT
    local t0; t0=$(date +%s)
    until gssh "$1" "$2" "$3" true 2>/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || return 2
        [ $(( $(date +%s) - t0 )) -ge "$4" ] && return 1
        sleep 5
    done
}

# ---------------------------------------------------------------------------------------------------
# What the console shows when a guest cannot boot on the cloud's hardware: the initramfs gives up on the root
# device (no virtio driver, /dev/sdX gone), or OVMF finds no loader on the disk (it then tries PXE and ends
# in its shell: the first line is enough).
BOOT_STOPPED='Gave up waiting for root|ALERT!.*does not exist|\(initramfs\)|failed to load Boot[0-9A-F]+ "UEFI Misc Device"|Shell> '
# The unprepared image on the cloud's hardware (virtio-blk, virtio-net with a new MAC; UEFI: empty NVRAM)
# must not come up: it stops in the initramfs (no virtio driver, /dev/sdX gone), or, for UEFI, the firmware
# finds no boot loader on the disk.
negative_case() { # IMAGE bios|uefi
    local fw=() QEMU_MACHINE=pc
    if [ "$2" = uefi ]; then
        # shellcheck disable=SC2207
        fw=($(ovmf_args "$W/neg.vars"))
        QEMU_MACHINE=q35
    fi
    start_qemu neg -snapshot -uuid "$NEW_UUID" "${fw[@]}" \
        -drive "file=$1,format=raw,if=virtio" \
        -netdev "$CLOUD_NET" -device "virtio-net-pci,netdev=n0,mac=$NEW_MAC"
    local pat=$BOOT_STOPPED
    local r=0; wait_console neg "$pat" 900 || r=$?
    [ "$r" = 0 ] || fail "the unprepared image did not stop on the cloud's virtio hardware (wait status $r)"
    console neg | grep -E 'login:' >/dev/null && fail "the unprepared image reached a login prompt on virtio"
    console neg | grep -aE -m 3 "$pat" >&2 || true
    stop_qemu "$QEMU_PID"
}

# The exported image booted the way an OpenStack cloud runs it: virtio-blk, virtio-net with a new MAC, DHCP,
# the EC2-style metadata service at 169.254.169.254 (metadata.py per connection through guestfwd), no video
# device (serial console only). UEFI: OVMF with a fresh variables file. Sets P_CLOUD and CLOUD_PID and waits
# for SSH as `debian` with the metadata's key.
cloud_boot() { # QCOW2 bios|uefi
    local fw=() QEMU_MACHINE=pc
    if [ "$2" = uefi ]; then
        # shellcheck disable=SC2207
        fw=($(ovmf_args "$W/cloud.vars"))
        QEMU_MACHINE=q35
    fi
    mkdir -p "$W/md"
    echo "$IID" > "$W/md/instance-id"
    echo "$HOSTNAME_MD" > "$W/md/hostname"
    cp "$W/cloud_key.pub" "$W/md/openssh-key"
    : > "$W/md/requests.log"
    P_CLOUD=$(free_port)
    start_qemu cloud -uuid "$NEW_UUID" -vga none "${fw[@]}" \
        -drive "file=$1,format=qcow2,if=virtio" \
        -netdev "$CLOUD_NET,hostfwd=tcp:127.0.0.1:$P_CLOUD-:22,guestfwd=tcp:169.254.169.254:80-cmd:/usr/bin/python3 $E2E_LIB/metadata.py $W/md" \
        -device "virtio-net-pci,netdev=n0,mac=$NEW_MAC"
    CLOUD_PID=$QEMU_PID
    local t0 stop
    t0=$(date +%s)
    until c true 2>/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || fail "the instance's qemu ended before SSH answered"
        stop=$(console cloud | grep -aE -m 1 "$BOOT_STOPPED" || true)
        [ -z "$stop" ] || fail "the migrated image does not boot on the cloud's hardware: $stop"
        [ $(( $(date +%s) - t0 )) -lt 1200 ] || fail "no SSH login as debian with the metadata key after 1200 s"
        sleep 5
    done
}
c() { gssh "$W/cloud_key" debian "$P_CLOUD" "$@"; }

# What every migrated instance must show: the NIC with the new MAC got its address by DHCP and is brought up
# by one client only; cloud-init finished with the Ec2 datasource and the metadata's hostname and key; no
# failed unit; the first-boot unit ran once with a clean audit.
assert_cloud() {
    # cloud-init may still be running its final stage when sshd accepts the key.
    c "sudo cloud-init status --wait >/dev/null 2>&1 || true"
    c "sudo cloud-init status --long" >&2 || true
    local nic
    nic=$(c "grep -l '^$NEW_MAC\$' /sys/class/net/*/address" | head -n1 | cut -d/ -f5)
    [ -n "$nic" ] || fail "no interface has the new MAC $NEW_MAC"
    log "the virtio NIC is $nic"
    c ip -4 -o addr show dev "$nic" >&2
    c ip -4 -o addr show dev "$nic" | grep 'inet 169.254.0.15/16 .*dynamic' >/dev/null \
        || fail "$nic did not get its address by DHCP"
    # One DHCP client per interface: dhclient processes, and systemd-networkd managing the same NIC.
    local clients
    clients=$(c "ps -eo args" | grep -E '^(/sbin/|/usr/sbin/)?(dhclient|dhcpcd|udhcpc)' | grep -c -- "$nic" || true)
    if c "networkctl list --no-legend --no-pager 2>/dev/null" | grep -E "[[:space:]]$nic[[:space:]].*(configured|configuring)" >/dev/null; then
        clients=$((clients + 1))
    fi
    c "ps -eo args" | grep -E 'dhclient|dhcpcd|networkd' >&2 || true
    [ "$clients" = 1 ] || fail "$clients DHCP clients manage $nic (want exactly one)"
    if c "command -v networkctl" >/dev/null 2>&1 && c "systemctl is-active systemd-networkd" >/dev/null 2>&1; then
        c "networkctl list --no-legend --no-pager" >&2
        c "networkctl list --no-legend --no-pager" | grep -E 'failed' >/dev/null && fail "networkctl reports a failed interface"
    fi
    local ds errs
    ds=$(c "python3 -c 'import json; print(json.load(open(\"/run/cloud-init/result.json\"))[\"v1\"][\"datasource\"])'")
    log "cloud-init datasource: $ds"
    case "$ds" in DataSourceEc2*) ;; *) fail "cloud-init ran datasource '$ds', not Ec2" ;; esac
    errs=$(c "python3 -c 'import json; print(len(json.load(open(\"/run/cloud-init/result.json\"))[\"v1\"][\"errors\"]))'")
    [ "$errs" = 0 ] || fail "cloud-init reported $errs errors: $(c cat /run/cloud-init/result.json)"
    [ "$(c hostname)" = "$HOSTNAME_MD" ] || fail "hostname is $(c hostname), not $HOSTNAME_MD from the metadata"
    [ "$(c cat /var/lib/cloud/data/instance-id)" = "$IID" ] || fail "cloud-init's instance id is not $IID"
    c getent hosts "$HOSTNAME_MD" >&2 || fail "the new hostname does not resolve in the instance (/etc/hosts)"
    c cat .ssh/authorized_keys | grep -F "$(cut -d' ' -f2 "$W/cloud_key.pub")" >/dev/null || fail "the metadata key is not in authorized_keys"
    grep -qE '^GET /[^ ]+/meta-data/public-keys/0/openssh-key 200' "$W/md/requests.log" \
        || fail "the metadata service was never asked for the key: $(cat "$W/md/requests.log")"
    # The first-boot unit: ran once, a clean audit.
    c 'for i in $(seq 150); do [ "$(systemctl is-active cloudprep-firstboot.service)" = activating ] || break; sleep 2; done'
    c "sudo systemctl show -p Result -p ExecMainStatus cloudprep-firstboot.service" >&2
    c "sudo cat /var/lib/cloudprep/firstboot-steps.json" > "$W/firstboot-steps.json" || fail "no firstboot-steps.json: the first-boot unit did not run"
    c "sudo cat /var/lib/cloudprep/firstboot-report.json" > "$W/firstboot-report.json"
    local fb
    fb=$(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["summary"]["exit_code"], " ".join(f["id"] + ":" + f["severity"] + ("" if f["severity"] == "info" else " (" + f["message"][:200] + ")") for f in r["findings"]))' "$W/firstboot-report.json")
    log "first-boot audit: $fb"
    [ "$(c "sudo systemctl show -p Result --value cloudprep-firstboot.service")" = success ] \
        || fail "cloudprep-firstboot.service did not succeed (first-boot audit: $fb)"
    [ "${fb%% *}" = 0 ] || fail "the first-boot audit is not clean: $fb"
    c "sudo test ! -e /var/lib/cloudprep/firstboot-armed" || fail "the first-boot marker is still there"
    local failed
    failed=$(c "systemctl --failed --no-legend --plain --no-pager" || true)
    [ -z "$failed" ] || fail "failed units in the instance: $failed"
    console cloud | grep -E 'Cloud-init v\. .* finished' >/dev/null || fail "the serial console shows no finished cloud-init"
    console cloud | grep -E 'cloudprep firstboot: audit exit 0' >/dev/null || fail "the serial console shows no clean first-boot audit"
    console cloud | grep 'GNU GRUB' >/dev/null || fail "GRUB's menu did not reach the serial console (boot.serial-terminal)"
}

# The commands of a fix run that failed, with their output (`cloudprep fix` prints only the argv; the output is
# in the run's journal, /var/lib/cloudprep/runs/<id>/journal.jsonl).
journal_failures() { # JOURNAL.jsonl
    /usr/bin/python3 - "$1" <<'PY' >&2
import json, sys
def walk(v):
    if isinstance(v, dict):
        if v.get("ok") is False and "output" in v:
            yield v
        for x in v.values():
            yield from walk(x)
    elif isinstance(v, list):
        for x in v:
            yield from walk(x)
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    for d in walk(e):
        print("failed command:", " ".join(d.get("argv", []))[:300], "status", d.get("status"), "signal", d.get("signal"))
        print("\n".join(d["output"].splitlines()[-25:]))
PY
}

# The last stage of every variant: the instance powers off cleanly; then the summary with the timings.
e2e_finish() {
    stage_begin "power off the instance"
    c "sudo systemctl poweroff" || true
    wait_exit "$CLOUD_PID" 300 || fail "the instance did not power off"
    stage_end
    e2e_pass
}
