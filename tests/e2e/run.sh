#!/usr/bin/env bash
# End-to-end proof under qemu (TCG): an old VMware-era Debian guest boots on its old "hypervisor" (IDE disk,
# e1000 NIC), gets the cloudprep .deb, is armed and powered off; the pre-migration unit audits, fixes and
# exports the disk to a second disk; the exported image then boots the way an OpenStack cloud runs it
# (virtio-blk, virtio-net with a new MAC, DHCP, an EC2-style metadata service at 169.254.169.254), and the
# unprepared image is shown to fail on that same machine.
#   tests/e2e/run.sh            (root; run by `cargo test --test e2e`, i.e. by ./x.sh test)
# E2E_KEEP=1 keeps the work directory (disk images, console logs) for a post-mortem.
# Networking: every guest uses qemu user networking with restrict=on; the only ways in or out are the SSH
# port forwarded from 127.0.0.1 and the metadata service, a program qemu runs on this host per connection.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "e2e: needs root (loop devices, mounts)" >&2; exit 2; }
for t in qemu-system-x86_64 qemu-img ssh ssh-keygen setpriv /usr/bin/python3 mkfs.ext4; do
    command -v "$t" >/dev/null || { echo "e2e: $t is missing (./x.sh setup installs it)" >&2; exit 2; }
done

W=$(mktemp -d "${CLOUDPREP_SCRATCH:-/var/tmp}/cloudprep-e2e.XXXXXX")
MOUNTS=()
QEMU_PIDS=()
T0=$(date +%s)
TIMINGS=()

log() { echo "e2e [$(( $(date +%s) - T0 ))s] $*" >&2; }
fail() {
    echo "e2e: FAIL: $*" >&2
    for c in "$W"/*.console; do
        [ -s "$c" ] || continue
        echo "---- last lines of $(basename "$c") ----" >&2
        tail -n 40 "$c" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' >&2
    done
    exit 1
}
cleanup() {
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
    # Loop devices of this run (mount -o loop uses autoclear; these are the leftovers, if any).
    losetup -j "$W/export.img" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d 2>/dev/null
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "e2e: kept $W" >&2
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

stage_begin() { STAGE=$1; STAGE_T=$(date +%s); log "stage: $STAGE"; }
stage_end() {
    local s=$(( $(date +%s) - STAGE_T ))
    TIMINGS+=("$STAGE: ${s}s")
    echo "e2e: stage \"$STAGE\" took ${s} s"
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# qemu in the background, killed with this script even if the script itself is SIGKILLed (pdeathsig).
QEMU_COMMON=(-accel tcg -machine pc -m 1536 -smp 2 -display none -no-user-config -nodefaults -vga std)
start_qemu() { # NAME ARGS...
    local name=$1; shift
    : > "$W/$name.console"
    setpriv --pdeathsig KILL qemu-system-x86_64 "${QEMU_COMMON[@]}" -name "cloudprep-e2e-$name" \
        -serial "file:$W/$name.console" "$@" 2>"$W/$name.qemu-stderr" &
    QEMU_PID=$!
    QEMU_PIDS+=("$QEMU_PID")
    log "$name: qemu pid $QEMU_PID"
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

OLD_MAC=00:50:56:3a:10:01     # a VMware OUI, pinned by 70-persistent-net.rules
NEW_MAC=fa:16:3e:5c:21:07     # an OpenStack OUI
OLD_UUID=564d3a10-0001-4c2b-9e4f-0123456789ab
NEW_UUID=7f0c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f
HOSTNAME_MD=migrated-e2e
IID=i-0e2e5c2107

# ---------------------------------------------------------------------------------------------------
stage_begin "build the .deb and the legacy disk"
deb=$("$repo/packaging/build-deb.sh")
[ -f "$deb" ] || fail "build-deb.sh did not produce a .deb ($deb)"
ssh-keygen -q -t ed25519 -N '' -C e2e-operator -f "$W/operator_key"
ssh-keygen -q -t ed25519 -N '' -C e2e-cloud -f "$W/cloud_key"
"$repo/tests/e2e/mkdisk-legacy.sh" "$W/legacy.img" "$OLD_MAC" --root-key "$W/operator_key.pub" \
    --offline-cloud-init "$deb" >&2
ls -s --block-size=M "$W/legacy.img" >&2
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "the unprepared image on the cloud's virtio hardware (must fail)"
start_qemu neg -snapshot -uuid "$NEW_UUID" \
    -drive "file=$W/legacy.img,format=raw,if=virtio" \
    -netdev "user,id=n0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15" \
    -device "virtio-net-pci,netdev=n0,mac=$NEW_MAC"
# initramfs-tools gives up on the root device (no virtio_blk, and /dev/sda1 does not exist on virtio).
r=0; wait_console neg 'Gave up waiting for root|ALERT!.*does not exist|\(initramfs\)' 600 || r=$?
[ "$r" = 0 ] || fail "the unprepared image did not stop at the initramfs on virtio (wait status $r)"
console neg | grep -E 'login:' >/dev/null && fail "the unprepared image reached a login prompt on virtio"
console neg | grep -E 'Gave up waiting|ALERT!|does not exist' | head -n 3 >&2
kill -KILL "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "boot on the old hypervisor (IDE disk, e1000 NIC)"
truncate -s 4G "$W/export.img"
mkfs.ext4 -q -F -L e2e-export "$W/export.img"
P1=$(free_port)
# Only the system disk at boot: with two IDE disks the kernel's asynchronous probing names either one
# sda, which is exactly the hazard cloudprep removes, but the legacy guest must first boot as it always did.
start_qemu old -uuid "$OLD_UUID" -monitor "unix:$W/old.mon,server=on,wait=off" \
    -drive "file=$W/legacy.img,format=raw,if=ide,index=0" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$P1-10.0.2.15:22" \
    -device "e1000,netdev=n0,mac=$OLD_MAC"
OLD_PID=$QEMU_PID
r=0; wait_ssh "$W/operator_key" root "$P1" 600 || r=$?
[ "$r" = 0 ] || fail "no SSH to the legacy guest on its old hypervisor (status $r)"
old() { gssh "$W/operator_key" root "$P1" "$@"; }
[ "$(old findmnt -n -o SOURCE /)" = /dev/sda1 ] || fail "legacy guest: / is not on /dev/sda1"
old ip -4 -o addr show dev eth0 | grep 'inet 10.0.2.15/24' >/dev/null || fail "legacy guest: eth0 lacks its static 10.0.2.15"
[ "$(old cat /sys/class/net/eth0/address)" = "$OLD_MAC" ] || fail "legacy guest: eth0 is not the old NIC"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "install cloudprep, audit, arm with an export to the second disk, power off"
# The operator attaches a scratch disk for the export (PCI hot-plug; the running kernel has virtio_blk).
monitor old "drive_add 0 if=none,id=exp,file=$W/export.img,format=raw" || fail "drive_add refused"
monitor old "device_add virtio-blk-pci,drive=exp,id=expdisk" || fail "device_add refused"
old 'for i in $(seq 60); do [ -b /dev/vda ] && break; sleep 1; done; [ -b /dev/vda ]' \
    || fail "the hot-added export disk did not appear as /dev/vda in the legacy guest"
old "mkdir -p /mnt/export && mount /dev/vda /mnt/export"
old "apt-get install -y -q /root/$(basename "$deb")" >&2 || fail "apt install of the .deb failed in the guest"
set +e
old cloudprep audit --format json > "$W/old-audit.json"
rc=$?
set -e
[ "$rc" = 2 ] || fail "the audit on the legacy guest exited $rc, expected 2 (blockers)"
for id in fstab.device-names boot.virtio-initramfs boot.grub-uuid-disabled network.static-addressing \
          network.udev-persistent-net cloud-init.installed cloud-init.datasource; do
    grep -q "\"$id\"" "$W/old-audit.json" || fail "the legacy audit does not report $id"
done
old "sed -i 's|^cloud_init_deb = .*|cloud_init_deb = \"/root/offline-debs\"|' /etc/cloudprep/cloudprep.toml"
old "grep -q '^cloud_init_deb = \"/root/offline-debs\"' /etc/cloudprep/cloudprep.toml" || fail "config not set"
old cloudprep arm --export /mnt/export/migrated.qcow2 --format qcow2 >&2
old systemctl is-active cloudprep-premigrate.service >/dev/null || fail "the premigrate unit is not active after arm"
old systemctl poweroff || true
log "waiting for the pre-migration run and the power-off"
wait_exit "$OLD_PID" 2400 || fail "the legacy guest did not power itself off within 40 minutes"
console old | grep -E 'cloudprep premigrate' >&2 || true
console old | grep -E 'cloudprep premigrate: export finished \(exit [01]\)' >/dev/null \
    || fail "the pre-migration unit did not report a finished export"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "collect the exported image"
mkdir -p "$W/exp"
mount -o ro,loop "$W/export.img" "$W/exp"
MOUNTS+=("$W/exp")
[ -f "$W/exp/migrated.qcow2" ] || fail "no migrated.qcow2 on the export disk: $(ls -la "$W/exp")"
ls -la "$W/exp" >&2
cp --sparse=always "$W/exp/migrated.qcow2" "$W/migrated.qcow2"
umount "$W/exp"; unset 'MOUNTS[-1]'
qemu-img check "$W/migrated.qcow2" >&2 || fail "qemu-img check found problems in the exported image"
qemu-img info "$W/migrated.qcow2" >&2
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "boot the export in the cloud (virtio-blk, virtio-net, DHCP, metadata service)"
mkdir -p "$W/md"
echo "$IID" > "$W/md/instance-id"
echo "$HOSTNAME_MD" > "$W/md/hostname"
cp "$W/cloud_key.pub" "$W/md/openssh-key"
: > "$W/md/requests.log"
P2=$(free_port)
# No video device (the last -vga wins): GRUB's menu, the kernel and cloud-init must all use the serial
# console that cloudprep set up (boot.serial-terminal, boot.serial-console), as on a cloud whose images
# say hw_video_model=none.
start_qemu cloud -uuid "$NEW_UUID" -vga none \
    -drive "file=$W/migrated.qcow2,format=qcow2,if=virtio" \
    -netdev "user,id=n0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,hostfwd=tcp:127.0.0.1:$P2-:22,guestfwd=tcp:169.254.169.254:80-cmd:/usr/bin/python3 $here/metadata.py $W/md" \
    -device "virtio-net-pci,netdev=n0,mac=$NEW_MAC"
CLOUD_PID=$QEMU_PID
r=0; wait_ssh "$W/cloud_key" debian "$P2" 900 || r=$?
[ "$r" = 0 ] || fail "no SSH login as debian with the metadata key (status $r)"
stage_end

# ---------------------------------------------------------------------------------------------------
stage_begin "assert the migrated instance"
c() { gssh "$W/cloud_key" debian "$P2" "$@"; }
# cloud-init may still be running its final stage when sshd accepts the key.
c "sudo cloud-init status --wait >/dev/null 2>&1 || true"
c "sudo cloud-init status --long" >&2 || true
src=$(c findmnt -n -o SOURCE /)
[ "$src" = /dev/vda1 ] || fail "/ is on $src, not /dev/vda1"
uuid=$(c findmnt -n -o UUID /)
c cat /etc/fstab | grep -E "^UUID=$uuid[[:space:]]+/[[:space:]]" >/dev/null || fail "/etc/fstab does not mount / by UUID=$uuid"
c cat /proc/cmdline | grep "root=UUID=$uuid" >/dev/null || fail "the kernel did not get root=UUID=$uuid: $(c cat /proc/cmdline)"
[ "$(c cat /sys/class/net/eth0/address)" = "$NEW_MAC" ] || fail "eth0 is not the new virtio NIC"
c ip -4 -o addr show dev eth0 >&2
c ip -4 -o addr show dev eth0 | grep 'inet 169.254.0.15/16 .*dynamic' >/dev/null || fail "eth0 did not get its address by DHCP"
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
# The first-boot unit: ran once, GRUB on the new disk, a clean audit.
c 'for i in $(seq 150); do [ "$(systemctl is-active cloudprep-firstboot.service)" = activating ] || break; sleep 2; done'
c "sudo systemctl show -p Result -p ExecMainStatus cloudprep-firstboot.service" >&2
[ "$(c "sudo systemctl show -p Result --value cloudprep-firstboot.service")" = success ] \
    || fail "cloudprep-firstboot.service did not succeed"
c "sudo cat /var/lib/cloudprep/firstboot-steps.json" > "$W/firstboot-steps.json"
grep -q '"installed on /dev/vda"' "$W/firstboot-steps.json" || fail "firstboot did not install GRUB on /dev/vda: $(cat "$W/firstboot-steps.json")"
c "sudo cat /var/lib/cloudprep/firstboot-report.json" > "$W/firstboot-report.json"
fb=$(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["summary"]["exit_code"], " ".join(f["id"] + ":" + f["severity"] for f in r["findings"]))' "$W/firstboot-report.json")
log "first-boot audit: $fb"
[ "${fb%% *}" = 0 ] || fail "the first-boot audit is not clean: $fb"
c "sudo test ! -e /var/lib/cloudprep/firstboot-armed" || fail "the first-boot marker is still there"
console cloud | grep 'GNU GRUB' >/dev/null || fail "GRUB's menu did not reach the serial console (boot.serial-terminal)"
console cloud | grep -E 'Cloud-init v\. .* finished' >/dev/null || fail "the serial console shows no finished cloud-init"
console cloud | grep -E 'cloudprep firstboot: audit exit 0' >/dev/null || fail "the serial console shows no clean first-boot audit"
stage_end

stage_begin "power off the instance"
c "sudo systemctl poweroff" || true
wait_exit "$CLOUD_PID" 300 || fail "the instance did not power off"
stage_end

echo "e2e: PASS in $(( $(date +%s) - T0 )) s"
for t in "${TIMINGS[@]}"; do echo "  $t"; done
