//! `cloudprep report merge|diff` on reports of real debootstrap guests: the merged JSON (schema-valid, counts
//! matching the host reports), CSV (read by Python's csv module), the HTML page in a real headless Chromium
//! (rows, filter, sort, expanded findings, no console error, hostile strings inert), fleet waivers, every bad
//! input of the issue, and `report diff` of host and fleet reports across a `fix`.

mod common;

use common::fleet::{assert_fleet_matches, chromium_dom, csv_rows, host_rows, validate_fleet};
use common::{bin, is_root, Guest};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn cloudprep(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--color")
        .arg("never")
        .output()
        .expect("running cloudprep")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Three real host reports of one bookworm guest with different problems, written once per test binary:
/// `web1` as debootstrap left it, `web2` with a udev rule pinning the old MAC and a static eth0, `db1` with
/// cloud-init disabled. Returns the directory.
fn reports() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, Guest)> = OnceLock::new();
    let (dir, _) = DIR.get_or_init(|| {
        assert!(is_root(), "tests/fleet.rs needs root (debootstrap roots)");
        let g = Guest::release("bookworm", "vm");
        let dir = tempfile::tempdir().unwrap();
        let audit = |name: &str| {
            let (_, r) = g.audit_json(&[]);
            std::fs::write(dir.path().join(format!("{name}.json")), r.to_string()).unwrap();
        };
        audit("web1");
        g.write(
            "/etc/udev/rules.d/70-persistent-net.rules",
            "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
        );
        g.write(
            "/etc/network/interfaces",
            "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 10.1.2.3/24\n    gateway 10.1.2.1\n",
        );
        audit("web2");
        g.remove("/etc/udev/rules.d/70-persistent-net.rules");
        g.write("/etc/network/interfaces", "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n");
        g.write("/etc/cloud/cloud-init.disabled", "");
        audit("db1");
        (dir, g)
    });
    dir.path()
}

fn host_reports(dir: &Path) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().to_string(),
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn merge_to(inputs: &[&Path], format: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&str> = vec!["report", "merge"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--format", format, "--output", out.to_str().unwrap()]);
    args.extend(extra);
    cloudprep(&args)
}

#[test]
fn merge_real_reports_json_csv_text_agree_with_the_hosts() {
    let dir = reports();
    let hosts = host_reports(dir);
    assert_eq!(hosts.len(), 3);
    // The three guests differ: web2 has the MAC and static-address blockers, db1 the disabled cloud-init.
    let ids = |h: &Value| -> Vec<String> {
        h["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        ids(&hosts[2].1).contains(&"network.udev-persistent-net".to_string()),
        "{:?}",
        ids(&hosts[2].1)
    );
    assert!(!ids(&hosts[1].1).contains(&"network.udev-persistent-net".to_string()));
    assert!(
        ids(&hosts[0].1).contains(&"cloud-init.disabled".to_string()),
        "{:?}",
        ids(&hosts[0].1)
    );

    let out = tempfile::tempdir().unwrap();
    let (j, c, t) = (
        out.path().join("f.json"),
        out.path().join("f.csv"),
        out.path().join("f.txt"),
    );
    for (fmt, p) in [("json", &j), ("csv", &c), ("text", &t)] {
        let o = merge_to(&[dir], fmt, p, &[]);
        assert_eq!(o.status.code(), Some(0), "{fmt}: {}", text(&o));
    }
    let fleet: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let rows = csv_rows(&c);
    assert_eq!(
        rows[0][..7],
        ["host", "check_id", "severity", "status", "path", "line", "text"]
    );
    assert_fleet_matches(&fleet, &rows, &hosts);
    // The udev rule's evidence, with its line, in the CSV.
    assert!(
        rows.iter().any(|r| r[0] == "web2"
            && r[1] == "network.udev-persistent-net"
            && r[4] == "/etc/udev/rules.d/70-persistent-net.rules"
            && r[5] == "1"),
        "{rows:?}"
    );
    // Per check, worst first: the cloud-init blockers fail on every host.
    let checks = fleet["checks"].as_array().unwrap();
    assert_eq!(checks[0]["severity"], "blocker");
    let sevs: Vec<u8> = checks
        .iter()
        .map(|c| match c["severity"].as_str().unwrap() {
            "blocker" => 2,
            "warning" => 1,
            _ => 0,
        })
        .collect();
    assert!(sevs.windows(2).all(|w| w[0] >= w[1]), "{sevs:?}");
    let installed = checks
        .iter()
        .find(|c| c["id"] == "cloud-init.installed")
        .unwrap();
    assert_eq!(installed["hosts_failing"], 3);
    let txt = std::fs::read_to_string(&t).unwrap();
    assert!(
        txt.starts_with("cloudprep fleet report: 3 host(s): 0 ready, 0 with warnings, 3 blocked"),
        "{txt}"
    );
    // Standard output when no --output.
    let o = cloudprep(&["report", "merge", dir.to_str().unwrap(), "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate_fleet(&v);
    assert_eq!(v["hosts"], fleet["hosts"]);
}

#[test]
fn html_loads_in_chromium_with_rows_filter_sort_and_findings() {
    let dir = reports();
    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("fleet.html");
    let o = merge_to(&[dir], "html", &page, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(
            !html.contains(fetch),
            "the page would fetch something: {fetch}"
        );
    }

    let dom = chromium_dom(&page, "");
    let rows = host_rows(&dom);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["db1", "web1", "web2"]);
    assert!(rows.iter().all(|r| !r.1), "all rows shown: {rows:?}");
    assert!(dom.contains("<span id=\"shown\">3</span>"), "{dom}");
    assert!(dom.contains("id=\"status-chart\""));
    assert!(dom.contains("data-total=\"blocked\"><b>3</b>"), "{dom}");

    // Filter (by a check id only web2 has) from the URL: one row left.
    let dom = chromium_dom(&page, "#q=udev-persistent");
    let rows = host_rows(&dom);
    assert_eq!(
        rows.iter()
            .filter(|r| !r.1)
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>(),
        ["web2"],
        "{rows:?}"
    );
    assert!(dom.contains("data-visible=\"1\""), "{dom}");

    // Sort by blockers, descending: web2 (most blockers) first.
    let dom = chromium_dom(&page, "#sort=-blockers");
    assert!(dom.contains("data-sorted=\"blockers:descending\""), "{dom}");
    assert_eq!(host_rows(&dom)[0].0, "web2");
    let dom = chromium_dom(&page, "#sort=name");
    assert_eq!(
        host_rows(&dom)
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>(),
        ["db1", "web1", "web2"]
    );

    // Expanded: findings with evidence and the planned diffs.
    let dom = chromium_dom(&page, "#open=all");
    assert!(
        !dom.contains("<tr class=\"details\" hidden"),
        "all details rows open"
    );
    assert!(dom.contains("aria-expanded=\"true\""));
    assert!(
        dom.contains(
            "/etc/udev/rules.d/70-persistent-net.rules:1: ATTR{address}==\"00:50:56:aa:bb:cc\""
        ),
        "evidence shown"
    );
    assert!(dom.contains("<pre class=\"diff\">"), "planned diffs shown");
    assert!(dom.contains("+datasource_list: [ Ec2, None ]"), "{dom}");
}

#[test]
fn hostile_report_strings_stay_inert_in_the_browser() {
    let dir = reports();
    let mut r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("web1.json")).unwrap()).unwrap();
    let f = &mut r["findings"][0];
    f["title"] = "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">".into();
    f["message"] =
        "</td></tr></table><script>document.body.setAttribute('data-pwned','2')</script>".into();
    f["evidence"] = serde_json::json!([{"path": "/etc/x", "line": 1, "text": "</pre><svg onload=\"document.body.setAttribute('data-pwned','3')\">"}]);
    r["facts"]["os"]["pretty_name"] =
        "<script>document.body.setAttribute('data-pwned','4')</script>".into();
    let hostile = tempfile::tempdir().unwrap();
    let name = "evil<b onmouseover=alert(1)>";
    std::fs::write(hostile.path().join(format!("{name}.json")), r.to_string()).unwrap();
    let page = hostile.path().join("fleet.html");
    let o = merge_to(&[hostile.path()], "html", &page, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dom = chromium_dom(&page, "#open=all");
    // The page's own <body> carries no attribute: none of the payloads ran.
    assert!(dom.contains("<body>"), "report text ran as markup:\n{dom}");
    assert!(!dom.contains("<body data-pwned"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.body.setAttribute"),
        "the text is shown, escaped"
    );
    assert_eq!(host_rows(&dom).len(), 1);
}

#[test]
fn fleet_waivers_show_as_waived_and_a_bad_waiver_file_is_exit_3() {
    let dir = reports();
    let w = tempfile::tempdir().unwrap();
    let file = w.path().join("waivers.toml");
    std::fs::write(
        &file,
        "[[waiver]]\ncheck = \"network.udev-persistent-net\"\nhosts = \"web*\"\nreason = \"ports keep the old MACs\"\n\n[waivers]\n\"cloud-init.\" = \"cloud-init is installed during the wave\"\n",
    )
    .unwrap();
    let out = w.path().join("f.json");
    let o = merge_to(&[dir], "json", &out, &["--waivers", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let fleet: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    validate_fleet(&fleet);
    let web2 = fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "web2")
        .unwrap();
    let udev = web2["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "network.udev-persistent-net")
        .unwrap();
    assert_eq!(udev["status"], "waived");
    assert_eq!(udev["waiver"], "fleet waiver: ports keep the old MACs");
    assert!(!web2["blocker_ids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i.as_str().unwrap().starts_with("cloud-init.")));
    let c = fleet["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "cloud-init.installed")
        .unwrap();
    assert_eq!(
        (c["hosts_failing"].as_u64(), c["hosts_waived"].as_u64()),
        (Some(0), Some(3))
    );

    // A waiver without a reason: the command cannot run, the file is named, nothing is written.
    std::fs::write(&file, "[[waiver]]\ncheck = \"network.sshd\"\n").unwrap();
    let out2 = w.path().join("g.json");
    let o = merge_to(
        &[dir],
        "json",
        &out2,
        &["--waivers", file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(file.to_str().unwrap()), "{}", text(&o));
    assert!(!out2.exists());
}

/// One bad input beside the good reports: exit 1, a message naming the file, the good hosts merged, the
/// input listed as skipped in the report.
fn merge_with_bad(bad: &Path, reason: &str) {
    let dir = reports();
    let out = tempfile::tempdir().unwrap();
    let j = out.path().join("f.json");
    let o = merge_to(&[dir, bad], "json", &j, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let shown = bad.display().to_string();
    assert!(
        err.lines()
            .any(|l| l.contains(&format!("skipped {shown}")) && l.contains(reason)),
        "stderr must name {shown} and say {reason:?}:\n{err}"
    );
    let fleet: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    validate_fleet(&fleet);
    assert_eq!(fleet["totals"]["hosts"], 3, "the good reports are merged");
    assert_eq!(fleet["totals"]["unreadable"], 1);
    assert_eq!(fleet["skipped"][0]["source"], shown.as_str());
    // Every format says so too.
    let h = out.path().join("f.html");
    assert_eq!(
        merge_to(&[dir, bad], "html", &h, &[]).status.code(),
        Some(1)
    );
    assert!(std::fs::read_to_string(&h)
        .unwrap()
        .contains("<ul id=\"skipped\">"));
}

fn bad_file(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    std::fs::write(&p, content).unwrap();
    (d, p)
}

#[test]
fn bad_input_truncated_json() {
    let good = std::fs::read(reports().join("web1.json")).unwrap();
    let (_d, p) = bad_file("trunc.json", &good[..good.len() / 3]);
    merge_with_bad(&p, "truncated JSON");
}

#[test]
fn bad_input_foreign_json() {
    let (_d, p) = bad_file(
        "package.json",
        br#"{"name": "left-pad", "version": "1.3.0"}"#,
    );
    merge_with_bad(&p, "not a cloudprep audit report");
}

#[test]
fn bad_input_not_json_at_all() {
    let (_d, p) = bad_file("notes.json", b"\x89PNG\r\n\x1a\n\0\0binary");
    merge_with_bad(&p, "not UTF-8");
}

#[test]
fn bad_input_unknown_schema_version() {
    let mut r: Value =
        serde_json::from_str(&std::fs::read_to_string(reports().join("web1.json")).unwrap())
            .unwrap();
    r["schema"] = 2.into();
    let (_d, p) = bad_file("future.json", r.to_string().as_bytes());
    merge_with_bad(&p, "unknown report schema version 2");
}

#[test]
fn bad_input_two_reports_of_the_same_host() {
    let good = std::fs::read(reports().join("web1.json")).unwrap();
    let (_d, p) = bad_file("web1.json", &good);
    merge_with_bad(&p, "second report of host web1");
}

#[test]
fn bad_input_empty_directory() {
    let d = tempfile::tempdir().unwrap();
    merge_with_bad(d.path(), "empty directory");
}

#[test]
fn bad_input_missing_file() {
    let d = tempfile::tempdir().unwrap();
    merge_with_bad(&d.path().join("absent.json"), "cannot read");
}

#[test]
fn nothing_mergeable_still_writes_an_empty_report_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let o = cloudprep(&[
        "report",
        "merge",
        d.path().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate_fleet(&v);
    assert_eq!(v["totals"]["hosts"], 0);
    // No input at all is a usage error.
    assert_eq!(cloudprep(&["report", "merge"]).status.code(), Some(3));
}

#[test]
fn diff_tracks_a_host_and_the_fleet_from_blocked_to_fixed() {
    assert!(is_root(), "needs root");
    let g = Guest::release("bookworm", "vm");
    let w = tempfile::tempdir().unwrap();
    let (before, after) = (w.path().join("before"), w.path().join("after"));
    std::fs::create_dir_all(&before).unwrap();
    std::fs::create_dir_all(&after).unwrap();
    g.write(
        "/etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
    );
    let (_, r) = g.audit_json(&[]);
    std::fs::write(before.join("vm1.json"), r.to_string()).unwrap();
    let o = g.cloudprep(&["fix", "--yes", "--only", "network.udev-persistent-net"]);
    assert!(o.status.code().unwrap() < 3, "{}", text(&o));
    let (_, r2) = g.audit_json(&[]);
    std::fs::write(after.join("vm1.json"), r2.to_string()).unwrap();
    // Another host unchanged in both runs.
    std::fs::copy(reports().join("db1.json"), before.join("db1.json")).unwrap();
    std::fs::copy(reports().join("db1.json"), after.join("db1.json")).unwrap();

    // Host reports.
    let b = before.join("vm1.json");
    let a = after.join("vm1.json");
    let o = cloudprep(&["report", "diff", b.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("  - network.udev-persistent-net (/etc/udev/rules.d/70-persistent-net.rules): was blocker open"),
        "{out}"
    );
    assert!(out.contains("1 disappeared"), "{out}");
    let o = cloudprep(&["report", "diff", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(0), "no changes\n")
    );

    // Fleet reports, as JSON.
    let (fb, fa) = (w.path().join("fb.json"), w.path().join("fa.json"));
    assert_eq!(
        merge_to(&[&before], "json", &fb, &[]).status.code(),
        Some(0)
    );
    assert_eq!(merge_to(&[&after], "json", &fa, &[]).status.code(), Some(0));
    let o = cloudprep(&[
        "report",
        "diff",
        fb.to_str().unwrap(),
        fa.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = d["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{d}");
    assert_eq!(
        (
            f[0]["host"].as_str(),
            f[0]["id"].as_str(),
            f[0]["change"].as_str()
        ),
        (
            Some("vm1"),
            Some("network.udev-persistent-net"),
            Some("disappeared")
        )
    );
    // Mixed or unreadable inputs cannot be compared: exit 3 naming the file.
    let bad = w.path().join("bad.json");
    std::fs::write(&bad, "{\"schema\": 1").unwrap();
    let o = cloudprep(&[
        "report",
        "diff",
        bad.to_str().unwrap(),
        fa.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains(bad.to_str().unwrap()), "{}", text(&o));
}
