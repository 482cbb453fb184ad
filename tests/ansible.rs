//! The Ansible collection (ansible/, cloudprep.migrate) on a fleet of three real debootstrap guests reached
//! with Ansible's chroot connection (community.general.chroot), each with different problems: audit.yml
//! writes one report per host and a merged HTML/CSV/JSON whose counts match them; prepare.yml --check changes
//! nothing; prepare.yml fixes and arms every host; a second run changes nothing; a host that vanishes
//! mid-play is reported while the others finish. Also: the collection builds, installs, passes ansible-lint
//! (production profile) and every playbook passes --syntax-check.
//!
//! Ansible comes from PyPI in a venv cached under $CLOUDPREP_CACHE (scripts/ansible-venv.sh builds it when
//! absent). Needs root (chroot, dpkg inside the guests).

mod common;

use common::fleet::{assert_fleet_matches, chromium_dom, csv_rows, host_rows};
use common::{bin, is_root, repo, tree_state, Guest};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The venv's bin directory (built once, cached across runs).
fn venv_bin() -> &'static PathBuf {
    static V: OnceLock<PathBuf> = OnceLock::new();
    V.get_or_init(|| {
        let o = Command::new(repo().join("scripts/ansible-venv.sh"))
            .output()
            .expect("running scripts/ansible-venv.sh");
        assert!(
            o.status.success(),
            "scripts/ansible-venv.sh failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("bin");
        assert!(
            p.join("ansible-playbook").is_file(),
            "{} has no ansible-playbook",
            p.display()
        );
        p
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An Ansible environment: the collection built from ansible/ and installed into a private collections
/// path, everything Ansible writes kept under one temporary directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let e = Env { dir };
        let built = e.path().join("built");
        let o = e
            .cmd("ansible-galaxy")
            .args(["collection", "build", "--force", "--output-path"])
            .arg(&built)
            .arg(repo().join("ansible"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ansible-galaxy collection build:\n{}",
            text(&o)
        );
        let tarball = built.join("cloudprep-migrate-1.0.0.tar.gz");
        assert!(tarball.is_file(), "{}", text(&o));
        let o = e
            .cmd("ansible-galaxy")
            .args(["collection", "install", "--force", "-p"])
            .arg(e.path().join("collections"))
            .arg(&tarball)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ansible-galaxy collection install:\n{}",
            text(&o)
        );
        e
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(venv_bin().join(prog));
        let path = format!(
            "{}:{}",
            venv_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.current_dir(self.path())
            .env("PATH", path)
            .env("ANSIBLE_HOME", self.path().join("home"))
            .env("ANSIBLE_LOCAL_TEMP", self.path().join("tmp"))
            .env("ANSIBLE_COLLECTIONS_PATH", self.path().join("collections"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "0")
            .env_remove("ANSIBLE_CONFIG");
        c
    }
}

/// `host : ok=N changed=N unreachable=N failed=N ...` lines of the PLAY RECAP.
fn recap(out: &str) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut m = BTreeMap::new();
    let Some(tail) = out.rsplit("PLAY RECAP").next() else {
        return m;
    };
    for line in tail.lines().skip(1) {
        let Some((host, rest)) = line.split_once(" : ") else {
            continue;
        };
        let counts = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
            .collect();
        m.insert(host.trim().to_string(), counts);
    }
    m
}

#[test]
fn collection_builds_lints_and_every_playbook_parses() {
    let e = Env::new();
    // ansible-lint on a copy (it keeps a cache next to what it lints).
    let copy = e.path().join("lint/ansible");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let st = Command::new("cp")
        .args([
            "-a",
            repo().join("ansible").to_str().unwrap(),
            copy.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let o = e
        .cmd("ansible-lint")
        .args(["--profile", "production", "--offline", "--nocolor"])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ansible-lint --profile production:\n{}",
        text(&o)
    );
    assert!(
        text(&o).contains("Profile 'production' was required, and it passed"),
        "{}",
        text(&o)
    );

    let inv = e.path().join("inventory");
    std::fs::write(&inv, "[wave]\nvm1 ansible_host=/nonexistent\n").unwrap();
    for pb in ["audit", "prepare", "migrate"] {
        let o = e
            .cmd("ansible-playbook")
            .args([
                "--syntax-check",
                "-i",
                inv.to_str().unwrap(),
                &format!("cloudprep.migrate.{pb}"),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{pb}.yml --syntax-check:\n{}", text(&o));
    }
    // Every role documents its variables (argument specs) and gives each a default.
    for role in [
        "install", "audit", "fix", "rollback", "arm", "disarm", "upload", "report",
    ] {
        let o = e
            .cmd("ansible-doc")
            .args(["-t", "role", "--json", &format!("cloudprep.migrate.{role}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "ansible-doc {role}:\n{}", text(&o));
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        let opts = doc[format!("cloudprep.migrate.{role}")]["entry_points"]["main"]["options"]
            .as_object()
            .unwrap_or_else(|| panic!("{role}: no options documented: {doc}"))
            .clone();
        let defaults =
            std::fs::read_to_string(repo().join(format!("ansible/roles/{role}/defaults/main.yml")))
                .unwrap();
        for name in opts.keys() {
            assert!(name.starts_with(&format!("{role}_")), "{role}: {name}");
            assert!(
                defaults.contains(&format!("\n{name}:")),
                "{role}: {name} has no default in defaults/main.yml"
            );
        }
    }
}

struct Fleet {
    env: Env,
    guests: Vec<(&'static str, Guest)>,
    inventory: PathBuf,
    deb: PathBuf,
}

impl Fleet {
    fn playbook(&self, pb: &str, extra: &[&str]) -> Output {
        let t = std::time::Instant::now();
        eprintln!("ansible: {pb}.yml {extra:?}");
        let mut c = self.env.cmd("ansible-playbook");
        c.args([
            "-i",
            self.inventory.to_str().unwrap(),
            &format!("cloudprep.migrate.{pb}"),
        ])
        .args(["-e", &format!("cloudprep_deb={}", self.deb.display())])
        .args([
            "-e",
            &format!("cloudprep_controller_bin={}", bin().display()),
        ])
        // GRUB needs the guest's real disk (the e2e covers it), not a chroot of a directory.
        .args([
            "-e",
            r#"{"cloudprep_fix_args": ["--skip", "boot,network.interface-names"]}"#,
        ])
        .args(extra);
        let o = c.output().unwrap();
        eprintln!("ansible: {pb}.yml took {:?}", t.elapsed());
        o
    }

    fn guest(&self, name: &str) -> &Guest {
        &self.guests.iter().find(|g| g.0 == name).unwrap().1
    }

    fn trees(&self) -> Vec<BTreeMap<String, String>> {
        self.guests
            .iter()
            .map(|(_, g)| {
                tree_state(
                    g.root(),
                    &[
                        "/etc",
                        "/boot",
                        "/var/lib/cloudprep",
                        "/var/lib/dpkg",
                        "/usr/sbin",
                    ],
                    &[],
                )
            })
            .collect()
    }
}

/// /proc mounted in each guest root; lazily unmounted on drop (also when the test panics).
struct ProcMounts(Vec<PathBuf>);

impl ProcMounts {
    fn new(guests: &[&Guest]) -> ProcMounts {
        let mut m = ProcMounts(Vec::new());
        for g in guests {
            let p = g.path("/proc");
            std::fs::create_dir_all(&p).unwrap();
            let st = Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success(), "mount -t proc {}", p.display());
            // Kept by inode-independent path: the vanishing-host step renames the root and moves it back.
            m.0.push(p);
        }
        m
    }
}

impl Drop for ProcMounts {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn audit_in_guest(g: &Guest) -> Value {
    let o = Command::new("chroot")
        .arg(g.root())
        .args([
            "/usr/sbin/cloudprep",
            "audit",
            "--format",
            "json",
            "--color",
            "never",
        ])
        .output()
        .unwrap();
    assert!(o.status.code().unwrap() < 3, "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ids(r: &Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fleet_of_three_chroot_guests_audit_prepare_and_a_vanished_host() {
    assert!(is_root(), "tests/ansible.rs needs root (chroot guests)");
    let start = std::time::Instant::now();
    let env = Env::new();
    // Three cloud-variant bookworm guests (python3 is there for Ansible's modules), each broken differently.
    let web1 = Guest::release("bookworm", "cloud");
    let web2 = Guest::release("bookworm", "cloud");
    web2.write(
        "/etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
    );
    web2.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 10.1.2.3/24\n    gateway 10.1.2.1\n",
    );
    let db1 = Guest::release("bookworm", "cloud");
    db1.write("/etc/cloud/cloud-init.disabled", "");
    eprintln!("ansible: guests ready after {:?}", start.elapsed());
    let inventory = env.path().join("inventory");
    std::fs::write(
        &inventory,
        format!(
            "[wave]\nweb1 ansible_host={}\nweb2 ansible_host={}\ndb1 ansible_host={}\n\n[wave:vars]\n\
             ansible_connection=community.general.chroot\nansible_python_interpreter=/usr/bin/python3\n",
            web1.root().display(),
            web2.root().display(),
            db1.root().display()
        ),
    )
    .unwrap();
    let fleet = Fleet {
        deb: {
            let t = std::time::Instant::now();
            let d = common::build_deb();
            eprintln!("ansible: build-deb.sh took {:?}", t.elapsed());
            d
        },
        env,
        guests: vec![("web1", web1), ("web2", web2), ("db1", db1)],
        inventory,
    };
    // A running system has /proc (fix reads /proc/self/fd): mounted for the chroot guests, unmounted first
    // when the test ends, before the guests are removed (only proc: a bind mount of /dev would be deleted with the guest's directory).
    let guests: Vec<&Guest> = fleet.guests.iter().map(|g| &g.1).collect();
    let _proc = ProcMounts::new(&guests);
    let reports = fleet.env.path().join("reports");
    let fleet_dir = fleet.env.path().join("fleet");

    // audit.yml: installs cloudprep, one report per host on the controller, the merged report.
    let o = fleet.playbook(
        "audit",
        &[
            "-e",
            &format!("cloudprep_report_dir={}", reports.display()),
            "-e",
            &format!("cloudprep_fleet_dir={}", fleet_dir.display()),
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "audit.yml:\n{out}");
    let r = recap(&out);
    for h in ["web1", "web2", "db1"] {
        assert_eq!(r[h]["failed"], 0, "{out}");
        assert!(r[h]["changed"] > 0, "the install changed {h}:\n{out}");
    }
    let mut hosts: Vec<(String, Value)> = Vec::new();
    for h in ["db1", "web1", "web2"] {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(reports.join(format!("{h}.json"))).unwrap(),
        )
        .unwrap();
        common::validate_report(&v);
        hosts.push((h.to_string(), v));
    }
    assert_eq!(
        std::fs::read_dir(&reports).unwrap().count(),
        3,
        "one report per host"
    );
    // Different problems on each host.
    // (The udev rule is not flagged on a live system whose NICs do not have that MAC.)
    assert!(
        ids(&hosts[2].1).contains(&"network.static-addressing".into()),
        "{:?}",
        ids(&hosts[2].1)
    );
    assert!(
        ids(&hosts[0].1).contains(&"cloud-init.disabled".into()),
        "{:?}",
        ids(&hosts[0].1)
    );
    assert!(!ids(&hosts[1].1).contains(&"cloud-init.disabled".into()));
    let fj: Value =
        serde_json::from_str(&std::fs::read_to_string(fleet_dir.join("fleet.json")).unwrap())
            .unwrap();
    assert_fleet_matches(&fj, &csv_rows(&fleet_dir.join("fleet.csv")), &hosts);
    let dom = chromium_dom(&fleet_dir.join("fleet.html"), "");
    let rows: Vec<String> = host_rows(&dom).into_iter().map(|r| r.0).collect();
    assert_eq!(rows, ["db1", "web1", "web2"]);
    assert!(std::fs::read_to_string(fleet_dir.join("fleet.txt"))
        .unwrap()
        .contains("3 host(s)"));

    // prepare.yml --check: reports the planned fixes as changes, changes nothing.
    let before = fleet.trees();
    let o = fleet.playbook("prepare", &["--check"]);
    let out = text(&o);
    assert!(o.status.success(), "prepare.yml --check:\n{out}");
    let r = recap(&out);
    for h in ["web1", "web2", "db1"] {
        assert_eq!(r[h]["failed"], 0, "{out}");
        assert!(
            r[h]["changed"] > 0,
            "{h}: the dry-run plan is reported as changes:\n{out}"
        );
    }
    let after = fleet.trees();
    for (i, (name, _)) in fleet.guests.iter().enumerate() {
        let changed: Vec<&String> = before[i]
            .keys()
            .chain(after[i].keys())
            .filter(|k| before[i].get(*k) != after[i].get(*k))
            .collect();
        assert!(changed.is_empty(), "{name}: --check changed {changed:?}");
    }

    // prepare.yml: fixes and arms every host.
    let o = fleet.playbook("prepare", &["-e", "cloudprep_serial=2"]);
    let out = text(&o);
    assert!(o.status.success(), "prepare.yml:\n{out}");
    let r = recap(&out);
    for (name, g) in &fleet.guests {
        assert_eq!(
            (r[*name]["failed"], r[*name]["unreachable"]),
            (0, 0),
            "{out}"
        );
        assert!(
            r[*name]["changed"] >= 2,
            "{name}: fix and arm changed it:\n{out}"
        );
        let after = audit_in_guest(g);
        let left = ids(&after);
        for fixed in [
            "cloud-init.datasource",
            "cloud-init.disabled",
            "network.static-addressing",
        ] {
            assert!(
                !left.contains(&fixed.to_string()),
                "{name}: {fixed} still open after prepare: {left:?}"
            );
        }
        assert!(
            g.path("/var/lib/cloudprep/premigrate-armed").is_file(),
            "{name} armed"
        );
    }
    // web2's static eth0 is left to cloud-init (installed there), which configures it in the cloud.
    let ifaces = fleet.guest("web2").read("/etc/network/interfaces");
    assert!(
        ifaces.contains("# iface eth0 inet static")
            && ifaces.contains("source /etc/network/interfaces.d/*"),
        "{ifaces}"
    );

    // A second run changes nothing.
    let trees = fleet.trees();
    let o = fleet.playbook("prepare", &[]);
    let out = text(&o);
    assert!(o.status.success(), "prepare.yml again:\n{out}");
    let r = recap(&out);
    for h in ["web1", "web2", "db1"] {
        assert_eq!(
            (r[h]["changed"], r[h]["failed"]),
            (0, 0),
            "{h}: second run:\n{out}"
        );
    }
    assert_eq!(trees, fleet.trees(), "the second run changed files");
    // And check mode agrees: an empty plan (the JSON of `fix --dry-run --format json`) is no change.
    let o = fleet.playbook("prepare", &["--check"]);
    let out = text(&o);
    assert!(
        o.status.success(),
        "prepare.yml --check after the fix:\n{out}"
    );
    let r = recap(&out);
    for h in ["web1", "web2", "db1"] {
        assert_eq!(
            (r[h]["changed"], r[h]["failed"]),
            (0, 0),
            "{h}: check mode after the fix:\n{out}"
        );
    }

    // A host vanishes mid-play: db1's root is moved away after the install role ran on every host, right
    // before the audit task (`--step` lets the test act between tasks). The others finish, the merged report
    // covers them, and db1 is named.
    let reports2 = fleet.env.path().join("reports2");
    let fleet2 = fleet.env.path().join("fleet2");
    let db1_root = fleet.guest("db1").root().to_path_buf();
    let moved = db1_root.with_extension("gone");
    let mut child = {
        let mut c = fleet.env.cmd("ansible-playbook");
        c.args([
            "--step",
            "-i",
            fleet.inventory.to_str().unwrap(),
            "cloudprep.migrate.audit",
        ])
        .args(["-e", &format!("cloudprep_deb={}", fleet.deb.display())])
        .args([
            "-e",
            &format!("cloudprep_controller_bin={}", bin().display()),
        ])
        .args([
            "-e",
            &format!("cloudprep_report_dir={}", reports2.display()),
        ])
        .args(["-e", &format!("cloudprep_fleet_dir={}", fleet2.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut moved_at_step = false;
    loop {
        let n = stdout.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let s = String::from_utf8_lossy(&buf);
        if s.ends_with("(c)ontinue: ") {
            let task = s.rsplit("Perform task: TASK: ").next().unwrap().to_string();
            if task.starts_with("cloudprep.migrate.audit : Run cloudprep audit") && !moved_at_step {
                std::fs::rename(&db1_root, &moved).unwrap();
                moved_at_step = true;
            }
            stdin.write_all(b"y\n").unwrap();
            stdin.flush().unwrap();
        }
    }
    let status = child.wait().unwrap();
    eprintln!(
        "ansible: audit.yml --step with db1 vanishing done at {:?}",
        start.elapsed()
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&buf),
        err_thread.join().unwrap()
    );
    std::fs::rename(&moved, &db1_root).unwrap();
    assert!(moved_at_step, "never reached the audit task:\n{out}");
    assert!(!status.success(), "a vanished host fails the run:\n{out}");
    let r = recap(&out);
    assert!(
        r["db1"]["failed"] + r["db1"]["unreachable"] > 0,
        "db1 is reported failed or unreachable:\n{out}"
    );
    for h in ["web1", "web2"] {
        assert_eq!((r[h]["failed"], r[h]["unreachable"]), (0, 0), "{out}");
    }
    assert!(
        out.contains("no report from: db1"),
        "the report play names db1:\n{out}"
    );
    let fj: Value =
        serde_json::from_str(&std::fs::read_to_string(fleet2.join("fleet.json")).unwrap()).unwrap();
    let names: Vec<&str> = fj["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web1", "web2"]);
    eprintln!("ansible fleet test: {:?}", start.elapsed());
}
