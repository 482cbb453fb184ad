//! `cloudprep upload --root DIR` exports the disk of the guest mounted at DIR (not the host's), and a
//! signal during a frozen upload thaws before the process ends, whichever thread the kernel gives it
//! to. Against a minimal Keystone + Glance stand-in on 127.0.0.1 (token, catalog, image create, PUT of
//! the data, GET): the real services are exercised by tests/upload.rs; here only what the client sends
//! and when matters. Needs root (loop devices, mounts, FIFREEZE): fails without it.
mod common;

use common::loopdev::LoopDisk;
use common::sh;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    /// (bytes, sha256) of each PUT body received in full.
    puts: Vec<(u64, String)>,
    /// A PUT has started (its headers arrived).
    put_started: bool,
}

/// What the stand-in does with the image data.
#[derive(Clone, Copy, PartialEq)]
enum Put {
    /// Read the whole body, answer 204.
    Take,
    /// Read nothing, never answer (the upload blocks: the export stays frozen).
    Stall,
}

struct Server {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

/// Method, path and headers (names lowercased) of one request.
type Head = (String, String, Vec<(String, String)>);

fn read_head(r: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.split_whitespace();
    let (method, path) = (it.next()?.to_string(), it.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Some((method, path, headers))
}

fn read_body(r: &mut BufReader<TcpStream>, headers: &[(String, String)]) -> Vec<u8> {
    let get = |k: &str| headers.iter().find(|h| h.0 == k).map(|h| h.1.clone());
    if let Some(n) = get("content-length") {
        let mut b = vec![0u8; n.parse().unwrap()];
        r.read_exact(&mut b).unwrap();
        return b;
    }
    let mut out = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            let n = usize::from_str_radix(l.trim().split(';').next().unwrap(), 16).unwrap();
            let mut c = vec![0u8; n + 2];
            r.read_exact(&mut c).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&c[..n]);
        }
    }
    out
}

fn respond(s: &mut TcpStream, code: u16, extra: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

impl Server {
    fn start(put: Put) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = s2.clone();
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    while let Some((method, path, headers)) = read_head(&mut r) {
                        match (method.as_str(), path.as_str()) {
                            ("POST", p) if p.ends_with("/auth/tokens") => {
                                read_body(&mut r, &headers);
                                let body = format!(
                                    r#"{{"token":{{"user":{{"name":"u"}},"project":{{"name":"p"}},"expires_at":"2099-01-01T00:00:00Z","catalog":[{{"type":"image","name":"glance","endpoints":[{{"interface":"public","region_id":"RegionOne","url":"http://127.0.0.1:{port}"}}]}}]}}}}"#
                                );
                                respond(&mut w, 201, "X-Subject-Token: t0k3n\r\n", &body);
                            }
                            ("POST", "/v2/images") => {
                                read_body(&mut r, &headers);
                                respond(&mut w, 201, "", r#"{"id":"img1","status":"queued"}"#);
                            }
                            ("PUT", "/v2/images/img1/file") => {
                                seen.lock().unwrap().put_started = true;
                                if put == Put::Stall {
                                    std::thread::sleep(Duration::from_secs(3600));
                                    return;
                                }
                                let b = read_body(&mut r, &headers);
                                let sha = hex::encode(Sha256::digest(&b));
                                seen.lock().unwrap().puts.push((b.len() as u64, sha));
                                respond(&mut w, 204, "", "");
                            }
                            ("GET", "/v2/images/img1") => {
                                respond(&mut w, 200, "", r#"{"id":"img1","status":"active"}"#)
                            }
                            ("DELETE", _) => respond(&mut w, 204, "", ""),
                            _ => respond(&mut w, 404, "", "{}"),
                        }
                    }
                });
            }
        });
        Server { port, seen }
    }

    fn env(&self, c: &mut Command) {
        for k in [
            "OS_CLOUD",
            "OS_CACERT",
            "OS_INSECURE",
            "OS_TOKEN",
            "OS_AUTH_TYPE",
        ] {
            c.env_remove(k);
        }
        c.env("OS_AUTH_URL", format!("http://127.0.0.1:{}/v3", self.port))
            .env("OS_USERNAME", "u")
            .env("OS_PASSWORD", "secret-password")
            .env("OS_PROJECT_NAME", "p")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_REGION_NAME", "RegionOne");
    }
}

/// A 64 MiB guest disk: one ext4 partition with a guest's os-release, mounted at `mnt` read-write.
fn guest_disk(dir: &std::path::Path) -> (LoopDisk, std::path::PathBuf) {
    assert!(
        common::is_root(),
        "needs root (loop devices, mounts, FIFREEZE)"
    );
    let mut d = LoopDisk::new(64, "label: dos\nstart=2048, type=83\n");
    sh("mke2fs", &["-q", "-F", "-t", "ext4", &d.part(1)]);
    let mnt = dir.join("guest");
    d.mount(&d.part(1), &mnt, &[]);
    std::fs::create_dir_all(mnt.join("etc")).unwrap();
    std::fs::write(
        mnt.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n",
    )
    .unwrap();
    (d, mnt)
}

#[test]
fn upload_root_exports_the_guest_disk() {
    let dir = tempfile::Builder::new()
        .prefix("cloudprep-upload-root.")
        .tempdir_in(common::scratch())
        .unwrap();
    let (mut d, mnt) = guest_disk(dir.path());
    d.unmount_all();
    // Read-only: no consistency mode needed, and the content cannot change under the comparison.
    d.mount(&d.part(1), &mnt, &["-o", "ro"]);
    let srv = Server::start(Put::Take);
    let mut c = Command::new(common::bin());
    c.args(["upload", "--root", mnt.to_str().unwrap(), "--format", "raw"]);
    srv.env(&mut c);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The body is the guest's disk (the loop device), byte for byte: not the host's system disk.
    let mut f = std::fs::File::open(&d.dev).unwrap();
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).unwrap();
    let want = (n, hex::encode(h.finalize()));
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.puts, vec![want], "{err}");
}

fn frozen(mnt: &std::path::Path) -> bool {
    // A write blocks (uninterruptibly) while frozen: start one and look whether it finished.
    let mut probe = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo y > {}/probe && sync -f {}/probe",
                mnt.display(),
                mnt.display()
            ),
        ])
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if probe.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Leave it blocked; it completes once thawed.
    std::thread::spawn(move || probe.wait());
    true
}

#[test]
fn signals_during_a_frozen_upload_thaw() {
    for sig in ["INT", "TERM", "QUIT"] {
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-upload-sig.")
            .tempdir_in(common::scratch())
            .unwrap();
        let (d, mnt) = guest_disk(dir.path());
        let srv = Server::start(Put::Stall);
        let mut c = Command::new(common::bin());
        c.args([
            "upload",
            "--root",
            mnt.to_str().unwrap(),
            "--format",
            "raw",
            "--consistency",
            "freeze",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        srv.env(&mut c);
        let mut child = c.spawn().unwrap();
        // Wait for the PUT: by then the export is running and the guest filesystem frozen.
        let t = Instant::now();
        while !srv.seen.lock().unwrap().put_started {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "SIG{sig}: no upload started"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "SIG{sig}: upload ended early"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            frozen(&mnt),
            "SIG{sig}: the guest filesystem should be frozen during the upload"
        );
        sh("kill", &[&format!("-{sig}"), &child.id().to_string()]);
        let t = Instant::now();
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "SIG{sig}: still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let signum = match sig {
            "INT" => 2,
            "TERM" => 15,
            _ => 3,
        };
        assert_eq!(st.code(), Some(128 + signum), "SIG{sig}: {err}");
        assert!(
            !frozen(&mnt),
            "SIG{sig}: left frozen after the process ended\n{err}"
        );
        drop(d);
    }
}
