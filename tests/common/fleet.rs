//! Fleet report helpers shared by tests/fleet.rs and tests/ansible.rs: schema validation, the counts a fleet
//! report must have given its per-host reports, CSV read by Python's csv module, and the HTML page loaded
//! in a real headless Chromium.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

pub fn validate_fleet(v: &Value) {
    super::validate_schema("docs/fleet-report.schema.json", v);
}

/// The status a host must have in the fleet report, from its own report's summary (no fleet waivers).
pub fn expected_status(report: &Value) -> &'static str {
    let s = &report["summary"];
    if s["blockers"].as_u64().unwrap() > 0 {
        "blocked"
    } else if s["errors"].as_u64().unwrap() > 0 {
        "audit-error"
    } else if s["warnings"].as_u64().unwrap() > 0 {
        "warnings"
    } else {
        "ready"
    }
}

/// Assert that a merged fleet report (JSON) and CSV agree with the per-host reports (`<host>.json`).
pub fn assert_fleet_matches(fleet: &Value, csv_rows: &[Vec<String>], hosts: &[(String, Value)]) {
    validate_fleet(fleet);
    assert_eq!(fleet["totals"]["hosts"], hosts.len(), "{}", fleet["totals"]);
    let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
    let mut findings = 0;
    for (name, r) in hosts {
        let h = fleet["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name.as_str())
            .unwrap_or_else(|| panic!("host {name} not in the fleet report"));
        let st = expected_status(r);
        *by_status.entry(st).or_default() += 1;
        assert_eq!(h["status"], st, "{name}");
        assert_eq!(h["blockers"], r["summary"]["blockers"], "{name}");
        assert_eq!(h["warnings"], r["summary"]["warnings"], "{name}");
        assert_eq!(
            h["findings"].as_array().unwrap().len(),
            r["findings"].as_array().unwrap().len()
        );
        assert_eq!(
            h["min_disk_gib"], r["recommendations"]["min_disk_gib"],
            "{name}"
        );
        assert_eq!(
            h["flavour"]["vcpus"], r["recommendations"]["min_vcpus"],
            "{name}"
        );
        let n = r["findings"].as_array().unwrap().len();
        findings += n;
        assert_eq!(
            csv_rows
                .iter()
                .skip(1)
                .filter(|row| row[0] == *name)
                .count(),
            n,
            "CSV rows of {name}"
        );
    }
    for (k, key) in [
        ("ready", "ready"),
        ("warnings", "warnings"),
        ("blocked", "blocked"),
        ("audit-error", "audit_error"),
    ] {
        assert_eq!(
            fleet["totals"][key],
            by_status.get(k).copied().unwrap_or(0),
            "totals.{key}"
        );
    }
    assert_eq!(
        csv_rows.len(),
        findings + 1,
        "one CSV row per host × finding plus the header"
    );
}

/// The rows of a CSV file as Python's csv module (what spreadsheets follow) reads them.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.reader(open(sys.argv[1], newline='', encoding='utf-8'), strict=True))))",
        ])
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        o.status.success(),
        "python csv: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Load `file://PATH#FRAGMENT` in headless Chromium (Debian's `chromium`), let the page's script run, and
/// return the DOM. Fails on any console error or uncaught exception, and when the script did not finish.
pub fn chromium_dom(page: &Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}{}", page.display(), fragment);
    let o = Command::new("timeout")
        .args(["120", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("running chromium (Debian package chromium, in x.sh's APT_PKGS)");
    let dom = String::from_utf8_lossy(&o.stdout).to_string();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chromium failed on {url}:\n{log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Content Security Policy")
        })
        .collect();
    assert!(
        console.is_empty(),
        "console messages loading {url}:\n{}",
        console.join("\n")
    );
    assert!(
        !dom.contains("id=\"js-error\""),
        "script error in the page:\n{dom}"
    );
    assert!(
        dom.contains("<span id=\"js-status\">interactive</span>"),
        "the page's script did not finish:\n{dom}"
    );
    dom
}

/// The host rows of a dumped DOM in document order: (host, hidden).
pub fn host_rows(dom: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for part in dom.split("<tr class=\"host ").skip(1) {
        let tag = &part[..part.find('>').unwrap()];
        let host = tag
            .split("data-host=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        out.push((host, tag.contains(" hidden")));
    }
    out
}
