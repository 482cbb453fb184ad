#!/usr/bin/python3
"""An EC2/OpenStack-style metadata service for the end-to-end test, one connection per process.

qemu's user networking runs it for every TCP connection the guest opens to 169.254.169.254:80
(`guestfwd=tcp:169.254.169.254:80-cmd:...`), with the connection on stdin/stdout. It answers the
requests of that connection (HTTP/1.1 keep-alive or not) and exits at EOF.

    metadata.py STATE_DIR
STATE_DIR holds instance-id, hostname and openssh-key (one value per file); every request is appended to
STATE_DIR/requests.log ("METHOD PATH STATUS").
"""
import os
import sys


def load(state, name):
    with open(os.path.join(state, name)) as f:
        return f.read().strip()


def meta_tree(state):
    iid = load(state, "instance-id")
    host = load(state, "hostname")
    key = load(state, "openssh-key")
    return {
        "ami-id": "ami-00000e2e",
        "ami-launch-index": "0",
        "hostname": host,
        "instance-id": iid,
        "instance-type": "m1.small",
        "local-hostname": host,
        "local-ipv4": "169.254.0.15",
        "placement/": {"availability-zone": "nova"},
        "public-keys/": {"0=e2e-key": None},
        "public-keys/0/": {"openssh-key": key},
        "reservation-id": "r-e2e00001",
        "security-groups": "default",
    }


def lookup(state, path):
    """Body for a GET of `path`, or None for 404."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) < 2:
        # "/" or "/latest": the versions, then the top-level categories.
        return "2009-04-04\nlatest\n" if parts == [""] else "meta-data/\nuser-data\n"
    _version, kind, rest = parts[0], parts[1], parts[2:]
    if kind != "meta-data":
        return None  # no user-data, no dynamic/ documents (those are for AWS itself)
    tree = meta_tree(state)
    if not rest or rest == [""]:
        return "\n".join(k for k in tree if k != "public-keys/0/") + "\n"
    sub = "/".join(rest)
    if sub == "public-keys":
        return "0=e2e-key\n"
    if sub in ("public-keys/0", "public-keys/0/"):
        return "openssh-key\n"
    if sub == "public-keys/0/openssh-key":
        return tree["public-keys/0/"]["openssh-key"] + "\n"
    if sub in ("placement", "placement/"):
        return "availability-zone\n"
    if sub == "placement/availability-zone":
        return "nova"
    v = tree.get(sub)
    return v if isinstance(v, str) else None


def main():
    state = sys.argv[1]
    rin, out = sys.stdin.buffer, sys.stdout.buffer
    log = open(os.path.join(state, "requests.log"), "a")
    while True:
        line = rin.readline()
        if not line:
            return
        try:
            method, path, _ = line.decode("latin-1").split(" ", 2)
        except ValueError:
            return
        length = 0
        close = False
        while True:
            h = rin.readline()
            if not h or h in (b"\r\n", b"\n"):
                break
            name, _, value = h.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
            if name.strip().lower() == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            rin.read(length)
        if method == "PUT" and path.startswith("/latest/api/token"):
            status, body = 200, "e2e-imds-token"
        elif method == "GET":
            body = lookup(state, path)
            status = 200 if body is not None else 404
            body = body if body is not None else "Not Found\n"
        else:
            status, body = 405, "Method Not Allowed\n"
        log.write(f"{method} {path} {status}\n")
        log.flush()
        data = body.encode()
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
        out.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode()
            + data
        )
        out.flush()
        if close:
            return


if __name__ == "__main__":
    main()
