#!/usr/bin/env bash
# A real Keystone + Glance (v2 API) on 127.0.0.1 for the upload tests.
#
#   scripts/glance-fixture.sh setup            build the cached venv once (pip: keystone, glance, gunicorn,
#                                              python-glanceclient); later calls reuse it
#   scripts/glance-fixture.sh start DIR        start Keystone and Glance with all state under DIR; writes
#                                              DIR/env (shell vars: ports, users, passwords, app credential)
#   scripts/glance-fixture.sh stop DIR         stop both servers started under DIR
#
# Only 127.0.0.1 ports are used. State is sqlite + file store under DIR; nothing else on the host changes.
set -euo pipefail
CACHE=${CLOUDPREP_CACHE:-/var/cache/cloudprep-tests}
VENV=${CLOUDPREP_OPENSTACK_VENV:-$CACHE/openstack-venv}
HERE=$(cd "$(dirname "$0")" && pwd)
# Every package pinned (pip freeze of a working venv, Python 3.11) so CI builds the venv the tests were written
# against: Keystone 30 (2025.2), Glance 33, python-glanceclient 4.13, gunicorn.
CONSTRAINTS=$HERE/../tests/fixtures/upload/openstack-constraints.txt
PIP_PKGS=(keystone glance python-glanceclient gunicorn)

log() { echo "glance-fixture: $*" >&2; }

setup() {
    # Rebuilt when the pins change.
    local want; want=$(sha256sum < "$CONSTRAINTS" | cut -c1-16)
    if [ -f "$VENV/.complete" ] && [ "$(cat "$VENV/.complete")" = "$want" ] && [ -x "$VENV/bin/gunicorn" ]; then
        return 0
    fi
    local start=$SECONDS
    mkdir -p "$(dirname "$VENV")"
    # Build in a temporary directory and move into place, so an interrupted build is never taken as done.
    local tmp="$VENV.build.$$"
    rm -rf "$tmp"
    python3 -m venv "$tmp"
    "$tmp/bin/pip" install --quiet --upgrade pip setuptools wheel
    "$tmp/bin/pip" install --quiet -c "$CONSTRAINTS" "${PIP_PKGS[@]}"
    "$tmp/bin/pip" freeze > "$tmp/requirements.lock"
    echo "$want" > "$tmp/.complete"
    rm -rf "$VENV"
    mv "$tmp" "$VENV"
    # venv scripts carry the absolute interpreter path of the build directory: fix them up.
    grep -rlI --null "$tmp" "$VENV/bin" | xargs -0 -r sed -i "s#$tmp#$VENV#g"
    log "venv built in $((SECONDS - start))s at $VENV"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # URL SECONDS LOGFILE
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        if python3 -c 'import ssl, sys, urllib.request
try: urllib.request.urlopen(sys.argv[1], timeout=2, context=ssl._create_unverified_context())
except urllib.error.HTTPError: pass
' "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    log "no answer from $1 after $2 s; last log lines:"; tail -n 30 "$3" >&2; return 1
}

start_glance() { # DIR (config already written)
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/env"
    OS_GLANCE_CONFIG_DIR="$dir/glance" "$VENV/bin/gunicorn" --daemon --pid "$dir/glance.pid" \
        --bind "127.0.0.1:$GLANCE_PORT" --workers 1 --threads 4 --timeout 600 \
        --error-logfile "$dir/glance-gunicorn.log" --capture-output --chdir "$dir" \
        glance.wsgi.api:application
    wait_http "http://127.0.0.1:$GLANCE_PORT/versions" 90 "$dir/glance-gunicorn.log"
}

start() {
    local dir=$1 t0=$SECONDS
    setup
    local setup_s=$((SECONDS - t0))
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local kport gport
    kport=$(free_port); gport=$(free_port)
    local admin_pw member_pw glance_pw
    admin_pw=adm-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    member_pw=mem-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    glance_pw=gla-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mkdir -p "$dir/keystone" "$dir/glance" "$dir/images" "$dir/staging" "$dir/tasks" "$dir/locks"
    cat > "$dir/keystone/keystone.conf" <<CONF
[DEFAULT]
log_file = $dir/keystone.log
[database]
connection = sqlite:///$dir/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $dir/keystone/fernet-keys
[fernet_receipts]
key_repository = $dir/keystone/fernet-receipts
[credential]
key_repository = $dir/keystone/credential-keys
[oslo_concurrency]
lock_path = $dir/locks
CONF
    local km=("$VENV/bin/keystone-manage" --config-file "$dir/keystone/keystone.conf")
    "${km[@]}" db_sync 2>"$dir/keystone-manage.log" || { tail -n 20 "$dir/keystone-manage.log" >&2; return 1; }
    "${km[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    "${km[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    "${km[@]}" bootstrap --bootstrap-password "$admin_pw" --bootstrap-username admin \
        --bootstrap-project-name admin --bootstrap-role-name admin \
        --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "http://127.0.0.1:$kport/v3" \
        --bootstrap-internal-url "http://127.0.0.1:$kport/v3" \
        --bootstrap-public-url "http://127.0.0.1:$kport/v3"
    # Keystone's WSGI entry point parses sys.argv (gunicorn's) as its own options: hide them.
    printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n' \
        > "$dir/keystone/keystone_wsgi.py"
    OS_KEYSTONE_CONFIG_DIR="$dir/keystone" "$VENV/bin/gunicorn" --daemon --pid "$dir/keystone.pid" \
        --bind "127.0.0.1:$kport" --workers 1 --threads 4 --pythonpath "$dir/keystone" \
        --error-logfile "$dir/keystone-gunicorn.log" --capture-output --chdir "$dir" \
        keystone_wsgi:application
    wait_http "http://127.0.0.1:$kport/v3" 60 "$dir/keystone-gunicorn.log"
    # The same Keystone (same database and keys) over TLS, with a throw-away CA, for the certificate checks.
    local ktls; ktls=$(free_port)
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cloudprep test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$dir/tls.ext"
    openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
        -extfile "$dir/tls.ext" -out "$dir/tls.pem" 2>/dev/null
    OS_KEYSTONE_CONFIG_DIR="$dir/keystone" "$VENV/bin/gunicorn" --daemon --pid "$dir/keystone-tls.pid" \
        --bind "127.0.0.1:$ktls" --workers 1 --threads 2 --pythonpath "$dir/keystone" \
        --certfile "$dir/tls.pem" --keyfile "$dir/tls.key" \
        --error-logfile "$dir/keystone-tls-gunicorn.log" --capture-output --chdir "$dir" \
        keystone_wsgi:application
    # Service user, project, member user, image service endpoints, an application credential.
    KPORT=$kport KTLS=$ktls GPORT=$gport ADMIN_PW=$admin_pw MEMBER_PW=$member_pw GLANCE_PW=$glance_pw \
        "$VENV/bin/python" - "$dir/env" <<'PY'
import json, os, sys, urllib.request
K = "http://127.0.0.1:%s/v3" % os.environ["KPORT"]
def call(method, path, body=None, token=None, want=(200, 201, 204)):
    req = urllib.request.Request(K + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    with urllib.request.urlopen(req) as r:
        assert r.status in want, (path, r.status)
        data = r.read()
        return r.headers, (json.loads(data) if data else None)
def token(user, pw, project):
    h, _ = call("POST", "/auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": pw}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
    return h["X-Subject-Token"]
adm = token("admin", os.environ["ADMIN_PW"], "admin")
roles = {r["name"]: r["id"] for r in call("GET", "/roles", token=adm)[1]["roles"]}
def project(name):
    return call("POST", "/projects", {"project": {"name": name, "domain_id": "default"}}, adm)[1]["project"]["id"]
def user(name, pw, proj):
    return call("POST", "/users", {"user": {"name": name, "password": pw, "domain_id": "default",
                                           "default_project_id": proj}}, adm)[1]["user"]["id"]
service_p, demo_p = project("service"), project("demo")
glance_u = user("glance", os.environ["GLANCE_PW"], service_p)
member_u = user("member", os.environ["MEMBER_PW"], demo_p)
call("PUT", "/projects/%s/users/%s/roles/%s" % (service_p, glance_u, roles["admin"]), token=adm)
call("PUT", "/projects/%s/users/%s/roles/%s" % (demo_p, member_u, roles["member"]), token=adm)
svc = call("POST", "/services", {"service": {"name": "glance", "type": "image"}}, adm)[1]["service"]["id"]
for iface in ("public", "internal", "admin"):
    call("POST", "/endpoints", {"endpoint": {"service_id": svc, "interface": iface, "region_id": "RegionOne",
                                              "url": "http://127.0.0.1:%s" % os.environ["GPORT"]}}, adm)
mt = token("member", os.environ["MEMBER_PW"], "demo")
ac = call("POST", "/users/%s/application_credentials" % member_u,
          {"application_credential": {"name": "cloudprep-test"}}, mt)[1]["application_credential"]
with open(sys.argv[1], "w") as f:
    for k, v in {"KEYSTONE_PORT": os.environ["KPORT"], "GLANCE_PORT": os.environ["GPORT"],
                 "ADMIN_PASSWORD": os.environ["ADMIN_PW"], "MEMBER_PASSWORD": os.environ["MEMBER_PW"],
                 "GLANCE_PASSWORD": os.environ["GLANCE_PW"], "MEMBER_USER_ID": member_u,
                 "DEMO_PROJECT_ID": demo_p, "APP_CRED_ID": ac["id"], "APP_CRED_SECRET": ac["secret"],
                 "AUTH_URL": "http://127.0.0.1:%s/v3" % os.environ["KPORT"],
                 "GLANCE_URL": "http://127.0.0.1:%s" % os.environ["GPORT"],
                 "AUTH_URL_TLS": "https://127.0.0.1:%s/v3" % os.environ["KTLS"]}.items():
        f.write("%s=%s\n" % (k, v))
PY
    wait_http "https://127.0.0.1:$ktls/v3" 60 "$dir/keystone-tls-gunicorn.log"
    cat > "$dir/glance/glance-api.conf" <<CONF
[DEFAULT]
log_file = $dir/glance.log
enabled_backends = fs:file
# A size limit, as production clouds set one: uploads above 512 MiB are refused with HTTP 413.
image_size_cap = 536870912
worker_self_reference_url = http://127.0.0.1:$gport
[database]
connection = sqlite:///$dir/glance.db
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $dir/images
[os_glance_staging_store]
filesystem_store_datadir = $dir/staging
[os_glance_tasks_store]
filesystem_store_datadir = $dir/tasks
[oslo_concurrency]
lock_path = $dir/locks
[paste_deploy]
flavor = keystone
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$kport
auth_url = http://127.0.0.1:$kport
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = glance
password = $glance_pw
CONF
    cp "$VENV/etc/glance/glance-api-paste.ini" "$dir/glance/"
    "$VENV/bin/glance-manage" --config-file "$dir/glance/glance-api.conf" db_sync >"$dir/glance-manage.log" 2>&1 \
        || { tail -n 20 "$dir/glance-manage.log" >&2; return 1; }
    start_glance "$dir"
    echo "CA_FILE=$dir/ca.pem" >> "$dir/env"
    echo "FIXTURE_SETUP_SECONDS=$setup_s" >> "$dir/env"
    echo "FIXTURE_START_SECONDS=$((SECONDS - t0 - setup_s))" >> "$dir/env"
    log "Keystone on 127.0.0.1:$kport, Glance on 127.0.0.1:$gport (venv ${setup_s}s, start $((SECONDS - t0 - setup_s))s)"
}

stop_one() { # PIDFILE
    [ -f "$1" ] || return 0
    local pid; pid=$(cat "$1")
    # gunicorn's master stops its workers on TERM.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

# Kill Glance abruptly (master and workers), as a crash or a cut connection would.
kill_glance() {
    local dir=$1 pid
    [ -f "$dir/glance.pid" ] || return 0
    pid=$(cat "$dir/glance.pid")
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/glance.pid"
}

stop() {
    local dir=$1
    stop_one "$dir/glance.pid"
    stop_one "$dir/keystone.pid"
    stop_one "$dir/keystone-tls.pid"
}

case "${1:-}" in
    setup) setup ;;
    start) start "${2:?DIR}" ;;
    stop) stop "${2:?DIR}" ;;
    kill-glance) kill_glance "${2:?DIR}" ;;
    restart-glance) stop_one "${2:?DIR}/glance.pid"; start_glance "$2" ;;
    *) echo "usage: $0 setup|start DIR|stop DIR|kill-glance DIR|restart-glance DIR" >&2; exit 2 ;;
esac
