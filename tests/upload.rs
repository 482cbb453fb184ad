//! `cloudprep upload` against a REAL Keystone + Glance (scripts/glance-fixture.sh: pip-installed keystone 30 /
//! glance 33 under gunicorn, sqlite, file store, on 127.0.0.1 only). One test drives every scenario in turn
//! because two of them kill and restart the Glance server.

mod common;

use cloudprep::upload::auth::Credentials;
use cloudprep::upload::http::Http;
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

struct Fixture {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    common::repo().join("scripts/glance-fixture.sh")
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-glance.")
            .tempdir_in(common::scratch())
            .unwrap();
        let st = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .status()
            .expect("running scripts/glance-fixture.sh");
        assert!(
            st.success(),
            "scripts/glance-fixture.sh start failed (see its output above)"
        );
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Fixture { dir, env }
    }
    fn var(&self, k: &str) -> String {
        self.env
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("fixture env has no {k}"))
    }
    fn ctl(&self, what: &str) {
        let st = Command::new(script())
            .arg(what)
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "glance-fixture.sh {what} failed");
    }
    fn openrc(&self) -> Vec<(String, String)> {
        [
            ("OS_AUTH_URL", self.var("AUTH_URL")),
            ("OS_USERNAME", "member".into()),
            ("OS_PASSWORD", self.var("MEMBER_PASSWORD")),
            ("OS_PROJECT_NAME", "demo".into()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
            ("OS_REGION_NAME", "RegionOne".into()),
            ("OS_INTERFACE", "public".into()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
    /// A Keystone token and the Glance base URL, obtained with the library's own client.
    fn session(&self) -> (Http, String, String) {
        let env: HashMap<String, String> = self.openrc().into_iter().collect();
        let creds = Credentials::from_env(&|k| env.get(k).cloned()).unwrap();
        let http = Http::new(None, false).unwrap();
        let (tok, _) = cloudprep::upload::authenticate(&http, &creds).unwrap();
        (
            http,
            tok.expose().to_string(),
            format!("{}/v2", self.var("GLANCE_URL")),
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Run cloudprep with only the given OS_* variables (none inherited).
fn cloudprep(root: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut c = Command::new(common::bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("upload")
        .args(args)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null());
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn image_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("image ").and_then(|r| r.split(' ').next()))
        .unwrap_or_else(|| panic!("no image id in: {stdout}"))
        .to_string()
}

fn sha512_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha512::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

fn get_image(s: &(Http, String, String), id: &str) -> Option<serde_json::Value> {
    let tok = cloudprep::upload::secret::Secret::new(s.1.clone());
    match s.0.get(&format!("{}/images/{id}", s.2), Some(&tok)) {
        Ok(r) => Some(serde_json::from_str(&r.body).unwrap()),
        Err(cloudprep::upload::http::HttpError::Status { code: 404, .. }) => None,
        Err(e) => panic!("GET image {id}: {e}"),
    }
}

/// SHA-512 of what Glance serves back for the image.
fn download_sha512(s: &(Http, String, String), id: &str) -> String {
    let r = ureq::get(&format!("{}/images/{id}/file", s.2))
        .set("X-Auth-Token", &s.1)
        .call()
        .unwrap();
    let mut h = Sha512::new();
    let mut rd = r.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rd.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Ids of the images the session's project sees, sorted.
fn list_images(s: &(Http, String, String)) -> Vec<String> {
    let tok = cloudprep::upload::secret::Secret::new(s.1.clone());
    let r =
        s.0.get(&format!("{}/images?limit=1000", s.2), Some(&tok))
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let mut ids: Vec<String> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn delete_image(s: &(Http, String, String), id: &str) {
    let tok = cloudprep::upload::secret::Secret::new(s.1.clone());
    let _ = s.0.delete(&format!("{}/images/{id}", s.2), Some(&tok));
}

/// A raw disk image with random data in a few places (sparse elsewhere), and its qcow2 conversion.
fn make_images(dir: &Path, mib: u64) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("disk{mib}.raw"));
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg(format!("{mib}M"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for off in [0u64, mib / 3, mib - 4] {
        use std::io::{Seek, SeekFrom, Write};
        let mut chunk = vec![0u8; 4 << 20];
        for b in chunk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        f.seek(SeekFrom::Start(off << 20)).unwrap();
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let qcow = dir.join(format!("disk{mib}.qcow2"));
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    (raw, qcow)
}

fn assert_no_secrets(what: &str, out: &str, fx: &Fixture) {
    for k in [
        "MEMBER_PASSWORD",
        "ADMIN_PASSWORD",
        "GLANCE_PASSWORD",
        "APP_CRED_SECRET",
    ] {
        assert!(!out.contains(&fx.var(k)), "{what}: {k} leaked:\n{out}");
    }
    // Keystone fernet tokens all start like this.
    assert!(!out.contains("gAAAAA"), "{what}: a token leaked:\n{out}");
}

/// Spawn an upload, kill Glance once the progress passes 10 %, optionally restart it; return the output.
fn upload_and_kill(
    fx: &Fixture,
    root: &Path,
    file: &Path,
    retries: &str,
    restart: bool,
) -> (i32, String, String) {
    let mut c = Command::new(common::bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .envs(fx.openrc())
        .args(["upload", "-vv", "--retries", retries, "--file"])
        .arg(file)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut err = String::new();
    let mut killed = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        err.push_str(&line);
        err.push('\n');
        if !killed
            && line.contains("cloudprep: upload: ")
            && line.contains('%')
            && !line.contains("100%")
        {
            fx.ctl("kill-glance");
            killed = true;
            if restart {
                fx.ctl("restart-glance");
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        killed,
        "the upload finished before Glance could be killed:\n{err}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        err,
    )
}

#[test]
fn upload_into_real_keystone_and_glance() {
    let t0 = Instant::now();
    let fx = Fixture::start();
    eprintln!(
        "figures: fixture venv {} s (0 when cached), Keystone+Glance start {} s",
        fx.var("FIXTURE_SETUP_SECONDS"),
        fx.var("FIXTURE_START_SECONDS")
    );
    let guest = common::Guest::bookworm();
    let root = guest.root();
    let work = tempfile::tempdir_in(common::scratch()).unwrap();
    let (raw, qcow) = make_images(work.path(), 64);
    let s = fx.session();

    // What the audit recommends for this guest.
    let facts =
        cloudprep::guest::facts::Facts::gather(&cloudprep::guest::root::Root::new(root).unwrap());
    let rec = cloudprep::recommend::recommend(&facts, facts.installed("qemu-guest-agent"));
    assert_eq!(
        rec.properties.get("os_distro").map(String::as_str),
        Some("debian")
    );

    // 1. openrc environment, raw, with overrides; -vv stderr must hold no secret.
    let t = Instant::now();
    let o = cloudprep(
        root,
        &fx.openrc(),
        &[
            "-vv",
            "--file",
            raw.to_str().unwrap(),
            "--name",
            "t-raw",
            "--property",
            "os_distro=custom",
            "--property",
            "cloudprep_test=yes",
        ],
    );
    let cloudprep_secs = t.elapsed().as_secs_f64();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_no_secrets("openrc raw upload -vv", &format!("{out}{err}"), &fx);
    assert!(
        err.contains("HTTP PUT") && err.contains("with the auth token"),
        "-vv shows requests:\n{err}"
    );
    let id = image_id(&out);
    let img = get_image(&s, &id).unwrap();
    assert_eq!(img["status"], "active");
    assert_eq!(img["name"], "t-raw");
    assert_eq!(img["disk_format"], "raw");
    assert_eq!(img["container_format"], "bare");
    assert_eq!(img["visibility"], "private");
    for (k, v) in &rec.properties {
        let want = if k == "os_distro" {
            "custom"
        } else {
            v.as_str()
        };
        assert_eq!(img[k].as_str(), Some(want), "property {k} in {img:#}");
    }
    assert_eq!(img["cloudprep_test"], "yes");
    // min_disk covers both the guest's root disk and the image's 64 MiB virtual size.
    assert!(img["min_disk"].as_u64().unwrap() >= 1, "{img:#}");
    assert_eq!(
        img["min_disk"].as_u64(),
        Some(rec.min_disk_gib.unwrap_or(1).max(1))
    );
    assert_eq!(
        img["os_hash_value"].as_str(),
        Some(sha512_file(&raw).as_str())
    );
    assert_eq!(
        download_sha512(&s, &id),
        sha512_file(&raw),
        "Glance serves back exactly the bytes"
    );

    // 2. clouds.yaml + secure.yaml (password only in secure.yaml), qcow2.
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".config/openstack")).unwrap();
    std::fs::write(
        home.join(".config/openstack/clouds.yaml"),
        format!(
            "# test cloud\nclouds:\n  testcloud:\n    auth:\n      auth_url: {}\n      username: member\n      \
             project_name: demo\n      user_domain_name: Default\n      project_domain_name: Default\n    \
             region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
            fx.var("AUTH_URL").trim_end_matches("/v3")
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".config/openstack/secure.yaml"),
        format!(
            "clouds:\n  testcloud:\n    auth:\n      password: \"{}\"\n",
            fx.var("MEMBER_PASSWORD")
        ),
    )
    .unwrap();
    let cenv = vec![
        ("OS_CLOUD".to_string(), "testcloud".to_string()),
        ("HOME".to_string(), home.display().to_string()),
    ];
    let o = cloudprep(
        root,
        &cenv,
        &["-vv", "--format", "qcow2", "--file", qcow.to_str().unwrap()],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("clouds.yaml") && err.contains("secure.yaml"),
        "{err}"
    );
    // The fixture's Keystone and Glance are plain http: said once each.
    assert_eq!(
        err.matches("is plain http").count(),
        2,
        "one warning per plain-http address:\n{err}"
    );
    assert_no_secrets("clouds.yaml qcow2 upload", &format!("{out}{err}"), &fx);
    let qid = image_id(&out);
    let img = get_image(&s, &qid).unwrap();
    assert_eq!(img["status"], "active");
    assert_eq!(img["disk_format"], "qcow2");
    assert_eq!(img["name"], "debian-12-migrated");
    assert_eq!(img["os_distro"], "debian");
    assert_eq!(img["hw_disk_bus"], "virtio");
    assert_eq!(img["virtual_size"].as_u64(), Some(64 << 20), "{img:#}");
    assert_eq!(download_sha512(&s, &qid), sha512_file(&qcow));

    // 3. Application credential (openrc style).
    let acenv = vec![
        ("OS_AUTH_URL".to_string(), fx.var("AUTH_URL")),
        (
            "OS_AUTH_TYPE".to_string(),
            "v3applicationcredential".to_string(),
        ),
        (
            "OS_APPLICATION_CREDENTIAL_ID".to_string(),
            fx.var("APP_CRED_ID"),
        ),
        (
            "OS_APPLICATION_CREDENTIAL_SECRET".to_string(),
            fx.var("APP_CRED_SECRET"),
        ),
    ];
    let o = cloudprep(
        root,
        &acenv,
        &["-vv", "--file", raw.to_str().unwrap(), "--name", "t-ac"],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_no_secrets("application credential upload", &format!("{out}{err}"), &fx);
    assert_eq!(
        get_image(&s, &image_id(&out)).unwrap()["owner"],
        fx.var("DEMO_PROJECT_ID")
    );

    // 4. Wrong password: a clear message naming user and URL, exit 3, nothing created, no secret shown.
    let mut bad = fx.openrc();
    bad.iter_mut().find(|(k, _)| k == "OS_PASSWORD").unwrap().1 = "not-the-password-42".into();
    let o = cloudprep(root, &bad, &["-vv", "--file", raw.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "authentication failed for user member at {}",
            fx.var("AUTH_URL")
        )),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password-42") && !out.contains("not-the-password-42"),
        "{err}"
    );
    // 4b. No image endpoint for the region.
    let mut noreg = fx.openrc();
    noreg
        .iter_mut()
        .find(|(k, _)| k == "OS_REGION_NAME")
        .unwrap()
        .1 = "Nowhere".into();
    let o = cloudprep(root, &noreg, &["--file", raw.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no image endpoint") && err.contains("region Nowhere"),
        "{err}"
    );

    // 4c. TLS: Keystone over https with a private CA. Unknown CA → refused; OS_CACERT → accepted;
    // OS_INSECURE → accepted with a warning. (Only authentication is over TLS: Glance stays http here, so the
    // region check makes each run stop right after the catalog lookup.)
    let mut tls = fx.openrc();
    tls.iter_mut().find(|(k, _)| k == "OS_AUTH_URL").unwrap().1 = fx.var("AUTH_URL_TLS");
    tls.iter_mut()
        .find(|(k, _)| k == "OS_REGION_NAME")
        .unwrap()
        .1 = "Nowhere".into();
    let o = cloudprep(root, &tls, &["--file", raw.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("cannot reach Keystone") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let mut with_ca = tls.clone();
    with_ca.push(("OS_CACERT".into(), fx.var("CA_FILE")));
    let o = cloudprep(root, &with_ca, &["--file", raw.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(
        err.contains("no image endpoint"),
        "authenticated through TLS with OS_CACERT:\n{err}"
    );
    let mut insecure = tls.clone();
    insecure.push(("OS_INSECURE".into(), "true".into()));
    let o = cloudprep(root, &insecure, &["--file", raw.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(
        err.contains("verification is OFF") && err.contains("no image endpoint"),
        "{err}"
    );

    // 4d. --source streams through the bundled export into the image: active, with exactly the disk's bytes.
    let o = cloudprep(
        root,
        &fx.openrc(),
        &[
            "--source",
            raw.to_str().unwrap(),
            "--name",
            "t-source",
            "--consistency",
            "none",
        ],
    );
    let (out, err) = text(&o);
    let tok = cloudprep::upload::secret::Secret::new(s.1.clone());
    let listed: serde_json::Value = serde_json::from_str(
        &s.0.get(&format!("{}/images?name=t-source", s.2), Some(&tok))
            .unwrap()
            .body,
    )
    .unwrap();
    let images = listed["images"].as_array().unwrap();
    assert_eq!(o.status.code(), Some(0), "upload --source failed: {err}");
    let id = image_id(&out);
    assert_eq!(images.len(), 1, "{listed:#}");
    assert_eq!(
        download_sha512(&s, &id),
        sha512_file(&raw),
        "export of a raw file is the file"
    );

    // 5. Throughput against the reference client on the same file.
    let venv = std::env::var("CLOUDPREP_CACHE")
        .unwrap_or_else(|_| "/var/cache/cloudprep-tests".into())
        + "/openstack-venv";
    let t = Instant::now();
    let g = Command::new(format!("{venv}/bin/glance"))
        .envs(fx.openrc())
        .args([
            "image-create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--name",
            "ref",
        ])
        .arg("--file")
        .arg(&raw)
        .output()
        .unwrap();
    let glance_secs = t.elapsed().as_secs_f64();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    eprintln!(
        "figures: 64 MiB raw over loopback: cloudprep upload {cloudprep_secs:.1} s ({:.1} MiB/s, dev build, \
         incl. auth, create, verify), glance image-create {glance_secs:.1} s ({:.1} MiB/s)",
        64.0 / cloudprep_secs,
        64.0 / glance_secs
    );

    // 6. Glance killed mid-upload and restarted: the upload is retried and the result is exact.
    let (big, _) = make_images(work.path(), 384);
    let (code, out, err) = upload_and_kill(&fx, root, &big, "8", true);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("upload attempt 1/9 failed"), "{err}");
    assert_no_secrets("kill+restart upload", &format!("{out}{err}"), &fx);
    let first = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("cloudprep: created image ")
                .and_then(|r| r.split(' ').next())
        })
        .unwrap()
        .to_string();
    let id = image_id(&out);
    if id != first {
        assert!(
            err.contains("deleting it and creating a new image"),
            "{err}"
        );
        assert!(
            get_image(&s, &first).is_none_or(|i| i["status"] == "deleted"),
            "the half-made image {first} is gone"
        );
    }
    assert_eq!(get_image(&s, &id).unwrap()["status"], "active");
    assert_eq!(download_sha512(&s, &id), sha512_file(&big));
    delete_image(&s, &id);

    // 7. Glance killed and NOT restarted: bounded retries, a clear error naming the image left behind.
    let (code, out, err) = upload_and_kill(&fx, root, &big, "1", false);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    let first = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("cloudprep: created image ")
                .and_then(|r| r.split(' ').next())
        })
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "upload into image {first} failed and the incomplete image could not be deleted"
        )) && err.contains(&format!("openstack image delete {first}")),
        "{err}"
    );
    assert_no_secrets("kill without restart", &format!("{out}{err}"), &fx);
    fx.ctl("restart-glance");
    let s = fx.session();
    let left = get_image(&s, &first).expect("the named image exists");
    assert_ne!(left["status"], "active");
    delete_image(&s, &first);

    // 6. An image above the service's size limit (image_size_cap = 512 MiB in the fixture). Glance
    // answers 413 and closes the connection while the body is still being sent, so the client mostly
    // sees a broken pipe: cloudprep may retry once, then recognises the same cut-off point, says it is
    // the size limit, stops, and deletes the half-made image.
    let images_before: Vec<String> = list_images(&s);
    let (huge, _) = make_images(work.path(), 640);
    let o = cloudprep(
        root,
        &fx.openrc(),
        &["--file", huge.to_str().unwrap(), "--name", "t-huge"],
    );
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        (err.contains("HTTP 413") && err.contains("too large"))
            || (err.contains("two attempts in a row") && err.contains("image_size_cap")),
        "stderr:\n{err}"
    );
    assert!(
        !err.contains("upload attempt 2/"),
        "retried more than once:\n{err}"
    );
    assert!(err.contains("the incomplete image was deleted"), "{err}");
    assert_no_secrets("413", &format!("{out}{err}"), &fx);
    eprintln!(
        "figures: image above image_size_cap: {}",
        if err.contains("HTTP 413") {
            "HTTP 413 read by the client"
        } else {
            "connection cut twice at the same point, recognised as the limit"
        }
    );
    assert_eq!(list_images(&s), images_before, "no image left behind");
    eprintln!("figures: whole upload test {} s", t0.elapsed().as_secs());
}
