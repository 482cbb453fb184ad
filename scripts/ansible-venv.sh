#!/usr/bin/env bash
# The cached Python venv with Ansible (the full `ansible` package: ansible-core plus community.general, whose
# chroot connection the fleet tests use) and ansible-lint, for tests/ansible.rs.
#
#   scripts/ansible-venv.sh      build the venv once under $CLOUDPREP_CACHE (pip); print its path
#
# Built in a temporary directory and moved into place, so an interrupted build is never taken as done; rebuilt
# when the pins below change.
set -euo pipefail
CACHE=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
VENV=${CLOUDPREP_ANSIBLE_VENV:-$CACHE/ansible-venv}
PIP_PKGS=("ansible==11.*" "ansible-lint==25.*")
want=$(printf '%s\n' "${PIP_PKGS[@]}" | sha256sum | cut -c1-16)
if [ -f "$VENV/.complete" ] && [ "$(cat "$VENV/.complete")" = "$want" ] && [ -x "$VENV/bin/ansible-playbook" ]; then
    echo "$VENV"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$VENV/.complete" ] && [ "$(cat "$VENV/.complete")" = "$want" ] && [ -x "$VENV/bin/ansible-playbook" ]; then
    echo "$VENV"
    exit 0
fi
start=$SECONDS
tmp="$VENV.build.$$"
rm -rf "$tmp"
python3 -m venv "$tmp"
"$tmp/bin/pip" install --quiet --upgrade pip >&2
"$tmp/bin/pip" install --quiet "${PIP_PKGS[@]}" >&2
"$tmp/bin/pip" freeze > "$tmp/requirements.lock"
echo "$want" > "$tmp/.complete"
rm -rf "$VENV"
mv "$tmp" "$VENV"
# venv scripts carry the absolute interpreter path of the build directory: fix them up.
grep -rlI --null "$tmp" "$VENV/bin" | xargs -0 -r sed -i "s#$tmp#$VENV#g"
echo "ansible-venv: built in $((SECONDS - start))s at $VENV" >&2
echo "$VENV"
