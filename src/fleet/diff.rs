//! `cloudprep report diff OLD NEW`: which findings appeared, disappeared or changed between two runs, for
//! host reports (schema 1) or fleet reports, and how each host's status moved (e.g. blocked -> ready).

use super::{
    merge, push_line, waivers::Waivers, Fleet, FleetFinding, HostStatus, Input, FLEET_KIND,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Appeared,
    Disappeared,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    pub severity: String,
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingChange {
    pub host: String,
    pub id: String,
    /// The finding's first evidence path (findings of one check are told apart by it).
    pub path: Option<String>,
    pub change: Change,
    pub old: Option<State>,
    pub new: Option<State>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostChange {
    pub host: String,
    /// None: the host is not in that report.
    pub old: Option<HostStatus>,
    pub new: Option<HostStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub hosts: Vec<HostChange>,
    pub findings: Vec<FindingChange>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.findings.is_empty()
    }
}

/// Read either kind of report as a fleet (a host report becomes a fleet of one, named after its file).
pub fn as_fleet(source: &str, text: &str) -> Result<Fleet, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{source}: not valid JSON: {e}"))?;
    if v.get("kind").and_then(|k| k.as_str()) == Some(FLEET_KIND) {
        match v.get("schema").and_then(|s| s.as_u64()) {
            Some(1) => {}
            other => {
                return Err(format!(
                    "{source}: unknown fleet report schema version {}",
                    other
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "(none)".into())
                ))
            }
        }
        return serde_json::from_value(v)
            .map_err(|e| format!("{source}: not a cloudprep fleet report: {e}"));
    }
    let f = merge(
        &[Input {
            source: source.to_string(),
            content: Ok(text.to_string()),
        }],
        &Waivers::default(),
    );
    match f.skipped.first() {
        Some(k) => Err(format!("{}: {}", k.source, k.reason)),
        None => Ok(f),
    }
}

fn state(f: &FleetFinding) -> State {
    State {
        severity: f.severity.to_string(),
        status: format!("{:?}", f.status).to_lowercase(),
        message: f.message.clone(),
    }
}

/// Findings of a host keyed by (check id, first evidence path, ordinal among equal keys).
fn keyed(fs: &[FleetFinding]) -> BTreeMap<(String, Option<String>, usize), &FleetFinding> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for f in fs {
        let path = f.evidence.first().map(|e| e.path.clone());
        let n = seen.entry((f.id.clone(), path.clone())).or_insert(0);
        out.insert((f.id.clone(), path, *n), f);
        *n += 1;
    }
    out
}

/// Compare two fleets. When both are single host reports, they are compared as the same host whatever
/// their file names.
pub fn diff(old: &Fleet, new: &Fleet) -> Diff {
    let single = old.hosts.len() == 1 && new.hosts.len() == 1;
    let name_of = |h: &super::FleetHost, single_name: &str| {
        if single {
            single_name.to_string()
        } else {
            h.name.clone()
        }
    };
    let single_name = new
        .hosts
        .first()
        .map(|h| h.name.clone())
        .unwrap_or_default();
    let o: BTreeMap<String, &super::FleetHost> = old
        .hosts
        .iter()
        .map(|h| (name_of(h, &single_name), h))
        .collect();
    let n: BTreeMap<String, &super::FleetHost> = new
        .hosts
        .iter()
        .map(|h| (name_of(h, &single_name), h))
        .collect();
    let names: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = Diff {
        hosts: Vec::new(),
        findings: Vec::new(),
    };
    let empty = Vec::new();
    for name in names {
        let (oh, nh) = (o.get(name), n.get(name));
        let (os, ns) = (oh.map(|h| h.status), nh.map(|h| h.status));
        if os != ns {
            out.hosts.push(HostChange {
                host: name.clone(),
                old: os,
                new: ns,
            });
        }
        let ok = keyed(oh.map(|h| &h.findings).unwrap_or(&empty));
        let nk = keyed(nh.map(|h| &h.findings).unwrap_or(&empty));
        let keys: BTreeSet<_> = ok.keys().chain(nk.keys()).collect();
        for k in keys {
            let (a, b) = (ok.get(k).map(|f| state(f)), nk.get(k).map(|f| state(f)));
            let change = match (&a, &b) {
                (None, Some(_)) => Change::Appeared,
                (Some(_), None) => Change::Disappeared,
                (Some(x), Some(y)) if x != y => Change::Changed,
                _ => continue,
            };
            out.findings.push(FindingChange {
                host: name.clone(),
                id: k.0.clone(),
                path: k.1.clone(),
                change,
                old: a,
                new: b,
            });
        }
    }
    out
}

fn label(s: Option<HostStatus>) -> &'static str {
    s.map(|s| s.label()).unwrap_or("absent")
}

pub fn render_text(d: &Diff) -> String {
    if d.is_empty() {
        return "no changes\n".into();
    }
    let mut s = String::new();
    let mut hosts: BTreeSet<&str> = d.hosts.iter().map(|h| h.host.as_str()).collect();
    hosts.extend(d.findings.iter().map(|f| f.host.as_str()));
    for host in hosts {
        match d.hosts.iter().find(|h| h.host == host) {
            Some(h) => push_line(
                &mut s,
                &format!("{host}: {} -> {}", label(h.old), label(h.new)),
            ),
            None => push_line(&mut s, &format!("{host}:")),
        }
        for f in d.findings.iter().filter(|f| f.host == host) {
            let at = f
                .path
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            let line = match (f.change, &f.old, &f.new) {
                (Change::Appeared, _, Some(n)) => {
                    format!("  + {}{at}: {} {}", f.id, n.severity, n.status)
                }
                (Change::Disappeared, Some(o), _) => {
                    format!("  - {}{at}: was {} {}", f.id, o.severity, o.status)
                }
                (_, Some(o), Some(n)) => format!(
                    "  ~ {}{at}: {} {} -> {} {}{}",
                    f.id,
                    o.severity,
                    o.status,
                    n.severity,
                    n.status,
                    if o.message != n.message {
                        " (message changed)"
                    } else {
                        ""
                    }
                ),
                _ => continue,
            };
            push_line(&mut s, &line);
        }
    }
    let count = |c: Change| d.findings.iter().filter(|f| f.change == c).count();
    s.push_str(&format!(
        "\n{} finding(s) appeared, {} disappeared, {} changed; {} host status change(s)\n",
        count(Change::Appeared),
        count(Change::Disappeared),
        count(Change::Changed),
        d.hosts.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, report};
    use super::*;
    use serde_json::json;

    fn fleet(hosts: &[(&str, serde_json::Value)]) -> Fleet {
        let inputs: Vec<Input> = hosts
            .iter()
            .map(|(n, f)| Input {
                source: format!("{n}.json"),
                content: Ok(report(f.clone(), "bios")),
            })
            .collect();
        merge(&inputs, &Waivers::default())
    }

    #[test]
    fn fleet_diff_tracks_blocked_to_ready() {
        let old = fleet(&[
            (
                "web1",
                json!([
                    finding("fstab.device-names", "blocker", "open"),
                    finding("net.x", "warning", "open")
                ]),
            ),
            ("gone", json!([])),
        ]);
        let mut changed = finding("net.x", "warning", "open");
        changed["message"] = json!("different now");
        let new = fleet(&[
            ("web1", json!([changed])),
            ("new1", json!([finding("grub.y", "warning", "open")])),
        ]);
        // Round trip through the JSON form, as `report diff` reads it.
        let old = as_fleet("old.json", &serde_json::to_string(&old).unwrap()).unwrap();
        let d = diff(&old, &new);
        let hosts: Vec<(&str, &str, &str)> = d
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), label(h.old), label(h.new)))
            .collect();
        assert_eq!(
            hosts,
            [
                ("gone", "ready", "absent"),
                ("new1", "absent", "warnings"),
                ("web1", "blocked", "warnings")
            ]
        );
        let f: Vec<(&str, &str, Change)> = d
            .findings
            .iter()
            .map(|f| (f.host.as_str(), f.id.as_str(), f.change))
            .collect();
        assert_eq!(
            f,
            [
                ("new1", "grub.y", Change::Appeared),
                ("web1", "fstab.device-names", Change::Disappeared),
                ("web1", "net.x", Change::Changed)
            ]
        );
        let t = render_text(&d);
        assert!(t.contains("web1: blocked -> warnings\n  - fstab.device-names (/etc/fstab): was blocker open\n  ~ net.x (/etc/fstab): warning open -> warning open (message changed)\n"), "{t}");
        assert!(
            t.contains("1 finding(s) appeared, 1 disappeared, 1 changed; 3 host status change(s)"),
            "{t}"
        );
        assert_eq!(render_text(&diff(&new, &new)), "no changes\n");
    }

    #[test]
    fn host_reports_compare_as_one_host_whatever_their_names() {
        let a = report(
            json!([finding("fstab.device-names", "blocker", "open")]),
            "bios",
        );
        let b = report(
            json!([finding("fstab.device-names", "blocker", "waived")]),
            "bios",
        );
        let d = diff(
            &as_fleet("before/web1.json", &a).unwrap(),
            &as_fleet("after.json", &b).unwrap(),
        );
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].new, Some(HostStatus::Ready));
        assert_eq!(d.findings[0].change, Change::Changed);
        assert_eq!(d.findings[0].new.as_ref().unwrap().status, "waived");
    }

    #[test]
    fn unreadable_inputs_name_the_file() {
        let e = as_fleet(
            "x/old.json",
            "{\"schema\": 7, \"tool\": {\"name\": \"cloudprep\"}}",
        )
        .unwrap_err();
        assert!(
            e.starts_with("x/old.json: unknown report schema version 7"),
            "{e}"
        );
        let e = as_fleet(
            "f.json",
            &format!("{{\"kind\": \"{FLEET_KIND}\", \"schema\": 9}}"),
        )
        .unwrap_err();
        assert!(e.contains("unknown fleet report schema version 9"), "{e}");
        assert!(as_fleet("t.json", "{\"a\":")
            .unwrap_err()
            .starts_with("t.json: not valid JSON"));
    }
}
