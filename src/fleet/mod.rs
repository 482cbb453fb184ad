//! Fleet reports: `cloudprep report merge` folds the per-host audit reports (schema 1, one JSON file per host,
//! named `<host>.json` as the Ansible collection fetches them) into one fleet report for the change board
//! (text, JSON, CSV, self-contained HTML), with fleet waivers; `cloudprep report diff` compares two runs.
//!
//! Everything here is pure over parsed JSON and strings; [`load_inputs`] and the CLI handlers are the thin IO.

pub mod csv;
pub mod diff;
pub mod html;
pub mod text;
pub mod waivers;

use crate::checks::{Severity, Status};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use waivers::Waivers;

/// Version of the fleet report JSON (docs/fleet-report.schema.json).
pub const FLEET_SCHEMA_VERSION: u32 = 1;
/// The `kind` that tells a fleet report from a host report (which has none).
pub const FLEET_KIND: &str = "cloudprep-fleet-report";
/// The only host report schema `merge` reads.
pub const HOST_SCHEMA_VERSION: u64 = 1;

/// Output format of `report merge`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetFormat {
    Text,
    Json,
    Csv,
    Html,
}

/// Exit status of `report merge` when at least one input was skipped (the others are merged).
pub const EXIT_SKIPPED: i32 = 1;

// ---------------------------------------------------------------------------------------------------------
// The per-host audit report as merge reads it: only the fields it uses, extra fields ignored.

#[derive(Debug, Clone, Deserialize)]
pub struct HostReport {
    /// Only fleet reports have one.
    #[serde(default)]
    pub kind: Option<String>,
    pub schema: u64,
    pub tool: Tool,
    #[serde(default)]
    pub facts: HostFacts,
    #[serde(default)]
    pub recommendations: Recommendations,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostFacts {
    #[serde(default)]
    pub os: Option<Os>,
    #[serde(default)]
    pub boot_mode: Option<String>,
    #[serde(default)]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    pub routes: Option<Vec<Route>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Os {
    #[serde(default)]
    pub pretty_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub interface: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Recommendations {
    #[serde(default)]
    pub min_vcpus: Option<u64>,
    #[serde(default)]
    pub min_ram_mib: Option<u64>,
    #[serde(default)]
    pub min_disk_gib: Option<u64>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub path: String,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDiff {
    pub path: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub diff: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub remediation: String,
    #[serde(default)]
    pub fix: Option<FindingFix>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FindingFix {
    #[serde(default)]
    pub files: Vec<FileDiff>,
    #[serde(default)]
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Command {
    pub argv: Vec<String>,
}

/// Parse one host report, with a message that says what is wrong with it (the caller names the file).
pub fn parse_host_report(text: &str) -> std::result::Result<HostReport, String> {
    // One typed pass for the common case, a good report (a JSON tree first costs twice the time).
    if let Ok(r) = serde_json::from_str::<HostReport>(text) {
        if r.kind.is_none() && r.schema == HOST_SCHEMA_VERSION && r.tool.name == "cloudprep" {
            return Ok(r);
        }
    }
    // Anything else: read it as plain JSON to say what is wrong with it.
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            format!(
                "truncated JSON (ends at line {}, column {})",
                e.line(),
                e.column()
            )
        } else {
            format!("not valid JSON: {e}")
        }
    })?;
    check_host_header(&v)?;
    serde_json::from_value(v).map_err(|e| format!("not a cloudprep audit report: {e}"))
}

/// The header of a host report: a cloudprep audit report of a schema version merge knows.
fn check_host_header(v: &serde_json::Value) -> std::result::Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err("not a cloudprep audit report (not a JSON object)".into());
    };
    if obj.get("kind").and_then(|k| k.as_str()) == Some(FLEET_KIND) {
        return Err("a fleet report, not a host audit report".into());
    }
    let tool = obj
        .get("tool")
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str());
    if tool != Some("cloudprep") {
        return Err("not a cloudprep audit report (no \"tool\": {\"name\": \"cloudprep\"})".into());
    }
    match obj.get("schema") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(HOST_SCHEMA_VERSION) => Ok(()),
        Some(s) => Err(format!(
            "unknown report schema version {s} (this cloudprep reads schema {HOST_SCHEMA_VERSION})"
        )),
        None => Err("not a cloudprep audit report (no \"schema\" version)".into()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fleet report.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HostStatus {
    Ready,
    Warnings,
    AuditError,
    Blocked,
}

impl HostStatus {
    pub fn label(self) -> &'static str {
        match self {
            HostStatus::Ready => "ready",
            HostStatus::Warnings => "warnings",
            HostStatus::AuditError => "audit error",
            HostStatus::Blocked => "blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flavour {
    pub vcpus: Option<u64>,
    pub ram_mib: Option<u64>,
}

/// A NIC of the old VM: what the operator needs to create the Neutron port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFinding {
    pub id: String,
    pub severity: Severity,
    pub status: Status,
    pub title: String,
    pub message: String,
    pub evidence: Vec<Evidence>,
    pub remediation: String,
    /// Planned file changes (unified diffs) of the finding's fix.
    pub diffs: Vec<FileDiff>,
    /// Planned commands of the fix, argv joined for reading.
    pub commands: Vec<String>,
    /// Why it is waived: the fleet waiver's reason, or that the host's own config waived it.
    pub waiver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetHost {
    pub name: String,
    /// The report file it was read from.
    pub source: String,
    pub os: Option<String>,
    pub status: HostStatus,
    pub blockers: usize,
    pub warnings: usize,
    pub info: usize,
    pub errors: usize,
    pub waived: usize,
    pub blocker_ids: Vec<String>,
    pub flavour: Flavour,
    pub min_disk_gib: Option<u64>,
    /// `bios`, `uefi` or `unknown`.
    pub firmware: String,
    /// None when the report could not list them (offline root).
    pub nics: Option<Vec<Nic>>,
    pub image_properties: BTreeMap<String, String>,
    pub tool_version: String,
    pub findings: Vec<FleetFinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub id: String,
    pub title: String,
    /// The worst severity this check was found at.
    pub severity: Severity,
    /// Hosts with an open (or errored) finding of this check.
    pub hosts_failing: usize,
    pub hosts: Vec<String>,
    /// Hosts where it was found but waived.
    pub hosts_waived: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub hosts: usize,
    pub ready: usize,
    pub warnings: usize,
    pub blocked: usize,
    pub audit_error: usize,
    pub unreadable: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetTool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub schema: u32,
    pub kind: String,
    pub tool: FleetTool,
    pub totals: Totals,
    pub hosts: Vec<FleetHost>,
    pub checks: Vec<CheckSummary>,
    pub skipped: Vec<Skipped>,
}

impl Fleet {
    /// `report merge`'s exit status: 0 everything merged, [`EXIT_SKIPPED`] when an input was skipped.
    pub fn exit_code(&self) -> i32 {
        if self.skipped.is_empty() {
            0
        } else {
            EXIT_SKIPPED
        }
    }
}

/// One input of a merge: where it came from and its text, or why it could not be read.
#[derive(Debug, Clone)]
pub struct Input {
    pub source: String,
    pub content: std::result::Result<String, String>,
}

/// The host name of a report file: its name without `.json` (`<report_dir>/<inventory_hostname>.json`).
pub fn host_name(source: &str) -> String {
    let base = source.rsplit('/').next().unwrap_or(source);
    base.strip_suffix(".json").unwrap_or(base).to_string()
}

/// Merge host reports into a fleet report. Unreadable inputs and second reports of a host are skipped with
/// their reason; everything else is merged.
pub fn merge(inputs: &[Input], waivers: &Waivers) -> Fleet {
    let mut parsed = parse_all(inputs, waivers).into_iter();
    let mut hosts: Vec<FleetHost> = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for input in inputs {
        let host = parsed.next().flatten();
        if let Err(e) = &input.content {
            skipped.push(Skipped {
                source: input.source.clone(),
                reason: e.clone(),
            });
            continue;
        }
        let name = host_name(&input.source);
        if let Some(first) = seen.get(&name) {
            skipped.push(Skipped {
                source: input.source.clone(),
                reason: format!("a second report of host {name} (already merged from {first})"),
            });
            continue;
        }
        match host {
            Some(Ok(h)) => {
                seen.insert(name, input.source.clone());
                hosts.push(h);
            }
            Some(Err(reason)) => skipped.push(Skipped {
                source: input.source.clone(),
                reason,
            }),
            None => {}
        }
    }
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let checks = check_summaries(&hosts);
    let count = |s: HostStatus| hosts.iter().filter(|h| h.status == s).count();
    let totals = Totals {
        hosts: hosts.len(),
        ready: count(HostStatus::Ready),
        warnings: count(HostStatus::Warnings),
        blocked: count(HostStatus::Blocked),
        audit_error: count(HostStatus::AuditError),
        unreadable: skipped.len(),
    };
    Fleet {
        schema: FLEET_SCHEMA_VERSION,
        kind: FLEET_KIND.into(),
        tool: FleetTool {
            name: "cloudprep".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        totals,
        hosts,
        checks,
        skipped,
    }
}

/// Parse the readable inputs into fleet hosts, on every core (parsing is most of a merge's time).
fn parse_all(
    inputs: &[Input],
    waivers: &Waivers,
) -> Vec<Option<std::result::Result<FleetHost, String>>> {
    let one = |i: &Input| {
        i.content.as_ref().ok().map(|text| {
            let name = host_name(&i.source);
            parse_host_report(text).map(|r| fleet_host(&name, &i.source, &r, waivers))
        })
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if threads == 1 || inputs.len() < 16 {
        return inputs.iter().map(one).collect();
    }
    let chunk = inputs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = inputs
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn fleet_host(name: &str, source: &str, r: &HostReport, waivers: &Waivers) -> FleetHost {
    let findings: Vec<FleetFinding> = r
        .findings
        .iter()
        .map(|f| {
            let (status, waiver) = match f.status {
                Status::Open => match waivers.reason(name, &f.id) {
                    Some(reason) => (Status::Waived, Some(format!("fleet waiver: {reason}"))),
                    None => (Status::Open, None),
                },
                Status::Waived => (
                    Status::Waived,
                    Some("waived in the host's cloudprep.toml".into()),
                ),
                Status::Error => (Status::Error, None),
            };
            let fix = f.fix.clone().unwrap_or_default();
            FleetFinding {
                id: f.id.clone(),
                severity: f.severity,
                status,
                title: f.title.clone(),
                message: f.message.clone(),
                evidence: f.evidence.clone(),
                remediation: f.remediation.clone(),
                diffs: fix
                    .files
                    .into_iter()
                    .filter(|d| !d.diff.is_empty())
                    .collect(),
                commands: fix.commands.iter().map(|c| c.argv.join(" ")).collect(),
                waiver,
            }
        })
        .collect();
    let live = |sev: Severity| {
        findings
            .iter()
            .filter(|f| f.severity == sev && f.status != Status::Waived)
            .count()
    };
    let blockers = live(Severity::Blocker);
    let warnings = live(Severity::Warning);
    let errors = findings
        .iter()
        .filter(|f| f.status == Status::Error)
        .count();
    let status = if blockers > 0 {
        HostStatus::Blocked
    } else if errors > 0 {
        HostStatus::AuditError
    } else if warnings > 0 {
        HostStatus::Warnings
    } else {
        HostStatus::Ready
    };
    let mut blocker_ids: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker && f.status != Status::Waived)
        .map(|f| f.id.clone())
        .collect();
    blocker_ids.dedup();
    let nics = r.facts.interfaces.as_ref().map(|ifs| {
        ifs.iter()
            .filter(|i| i.name != "lo")
            .map(|i| Nic {
                name: i.name.clone(),
                mac: i.mac.clone(),
                addresses: i.addresses.clone(),
                gateway: r.facts.routes.as_ref().and_then(|rs| {
                    rs.iter()
                        .find(|rt| rt.interface == i.name && rt.gateway.is_some())
                        .and_then(|rt| rt.gateway.clone())
                }),
            })
            .collect()
    });
    FleetHost {
        name: name.to_string(),
        source: source.to_string(),
        os: r.facts.os.as_ref().map(|o| o.pretty_name.clone()),
        status,
        blockers,
        warnings,
        info: live(Severity::Info),
        errors,
        waived: findings
            .iter()
            .filter(|f| f.status == Status::Waived)
            .count(),
        blocker_ids,
        flavour: Flavour {
            vcpus: r.recommendations.min_vcpus,
            ram_mib: r.recommendations.min_ram_mib,
        },
        min_disk_gib: r.recommendations.min_disk_gib,
        firmware: match r.facts.boot_mode.as_deref() {
            Some("uefi") => "uefi",
            Some("bios") => "bios",
            _ => "unknown",
        }
        .into(),
        nics,
        image_properties: r.recommendations.properties.clone(),
        tool_version: r.tool.version.clone(),
        findings,
    }
}

/// Per check: how many hosts fail it, worst first (severity, then host count, then id).
fn check_summaries(hosts: &[FleetHost]) -> Vec<CheckSummary> {
    let mut by_id: BTreeMap<&str, CheckSummary> = BTreeMap::new();
    let mut failing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut waived: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for h in hosts {
        for f in &h.findings {
            let e = by_id.entry(&f.id).or_insert_with(|| CheckSummary {
                id: f.id.clone(),
                title: f.title.clone(),
                severity: f.severity,
                hosts_failing: 0,
                hosts: Vec::new(),
                hosts_waived: 0,
            });
            e.severity = e.severity.max(f.severity);
            let set = if f.status == Status::Waived {
                &mut waived
            } else {
                &mut failing
            };
            set.entry(&f.id).or_default().insert(&h.name);
        }
    }
    let mut out: Vec<CheckSummary> = by_id
        .into_values()
        .map(|mut c| {
            let fail = failing.get(c.id.as_str()).cloned().unwrap_or_default();
            let w = waived.get(c.id.as_str()).cloned().unwrap_or_default();
            c.hosts_failing = fail.len();
            c.hosts = fail.iter().map(|s| s.to_string()).collect();
            c.hosts_waived = w.difference(&fail).count();
            c
        })
        .collect();
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.hosts_failing.cmp(&a.hosts_failing))
            .then(a.id.cmp(&b.id))
    });
    out
}

// ---------------------------------------------------------------------------------------------------------
// IO: the inputs named on the command line.

/// Read the inputs: each path is a report file or a directory whose `*.json` files (sorted) are read. A
/// directory without any is an input that is skipped ("empty directory"); an unreadable file too.
pub fn load_inputs(paths: &[PathBuf]) -> Vec<Input> {
    let mut out = Vec::new();
    for p in paths {
        let shown = p.display().to_string();
        if p.is_dir() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|x| x == "json") && !f.is_dir())
                    .collect(),
                Err(e) => {
                    out.push(Input {
                        source: shown,
                        content: Err(format!("cannot read the directory: {e}")),
                    });
                    continue;
                }
            };
            files.sort();
            if files.is_empty() {
                out.push(Input {
                    source: shown,
                    content: Err("empty directory: no *.json report in it".into()),
                });
            }
            out.extend(files.iter().map(|f| read_input(f)));
        } else {
            out.push(read_input(p));
        }
    }
    out
}

fn read_input(p: &Path) -> Input {
    Input {
        source: p.display().to_string(),
        content: std::fs::read(p)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| "not UTF-8 text (not a JSON report)".into())
            }),
    }
}

/// Append one line of text output: control characters from a guest's report (escape sequences, newlines)
/// are shown as `?`, never sent to the terminal raw.
pub(crate) fn push_line(out: &mut String, line: &str) {
    out.extend(line.chars().map(|c| if c.is_control() { '?' } else { c }));
    out.push('\n');
}

/// Read a fleet waiver file (TOML, see [`waivers`]).
pub fn load_waivers(path: &Path) -> Result<Waivers> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the waiver file {}", path.display()))?;
    Waivers::parse(&text).with_context(|| format!("waiver file {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A host report as `cloudprep audit --format json` writes it (the fields merge reads, plus extras).
    pub fn report(findings: serde_json::Value, boot: &str) -> String {
        json!({
            "schema": 1,
            "tool": {"name": "cloudprep", "version": "0.1.0"},
            "root": "/",
            "summary": {"blockers": 0, "warnings": 0, "info": 0, "errors": 0, "waived": 0, "exit_code": 0},
            "facts": {
                "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
                "boot_mode": boot,
                "interfaces": [
                    {"name": "lo", "mac": null, "addresses": ["127.0.0.1/8"]},
                    {"name": "eth0", "mac": "52:54:00:12:34:56", "driver": "e1000", "addresses": ["10.0.0.5/24"]}
                ],
                "routes": [{"destination": "default", "gateway": "10.0.0.1", "interface": "eth0"}],
                "extra_future_field": true
            },
            "recommendations": {"min_vcpus": 2, "min_ram_mib": 2048, "min_disk_gib": 10,
                "properties": {"hw_disk_bus": "virtio", "hw_vif_model": "virtio"}, "disk_format": "raw", "image_create": "x"},
            "checks": [],
            "findings": findings,
            "plan": {"files": [], "commands": []}
        })
        .to_string()
    }

    pub fn finding(id: &str, sev: &str, status: &str) -> serde_json::Value {
        json!({"id": id, "severity": sev, "status": status, "title": format!("title of {id}"),
               "message": "m", "evidence": [{"path": "/etc/fstab", "line": 3, "text": "/dev/sda1 / ext4"}],
               "remediation": "r", "fix": {"files": [{"path": "/etc/fstab", "action": "rewrite", "diff": "-a\n+b\n"}],
               "commands": [{"argv": ["update-grub"], "phase": "post", "order": 1, "reason": "r"}]}})
    }

    fn input(source: &str, text: &str) -> Input {
        Input {
            source: source.into(),
            content: Ok(text.into()),
        }
    }

    #[test]
    fn merge_counts_statuses_checks_and_nics() {
        let inputs = vec![
            input(
                "r/web1.json",
                &report(
                    json!([
                        finding("fstab.device-names", "blocker", "open"),
                        finding("network.static", "warning", "open")
                    ]),
                    "bios",
                ),
            ),
            input(
                "r/web2.json",
                &report(
                    json!([finding("fstab.device-names", "blocker", "open")]),
                    "uefi",
                ),
            ),
            input(
                "r/db1.json",
                &report(
                    json!([finding("network.static", "warning", "open")]),
                    "bios",
                ),
            ),
            input("r/ok.json", &report(json!([]), "bios")),
            input(
                "r/err.json",
                &report(json!([finding("grub.x", "warning", "error")]), "bios"),
            ),
        ];
        let f = merge(&inputs, &Waivers::default());
        assert_eq!(f.exit_code(), 0);
        assert_eq!(
            (
                f.totals.hosts,
                f.totals.ready,
                f.totals.warnings,
                f.totals.blocked,
                f.totals.audit_error
            ),
            (5, 1, 1, 2, 1)
        );
        let names: Vec<&str> = f.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1", "err", "ok", "web1", "web2"]);
        let web1 = &f.hosts[3];
        assert_eq!(web1.blocker_ids, ["fstab.device-names"]);
        assert_eq!((web1.blockers, web1.warnings), (1, 1));
        assert_eq!(
            web1.flavour,
            Flavour {
                vcpus: Some(2),
                ram_mib: Some(2048)
            }
        );
        assert_eq!(web1.min_disk_gib, Some(10));
        let nics = web1.nics.as_ref().unwrap();
        assert_eq!(nics.len(), 1, "lo is not a NIC to recreate");
        assert_eq!(nics[0].mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(nics[0].gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.hosts[4].firmware, "uefi");
        assert_eq!(web1.findings[0].diffs[0].diff, "-a\n+b\n");
        assert_eq!(web1.findings[0].commands, ["update-grub"]);
        // Per check, worst first: the blocker on 2 hosts, then the warnings (2 hosts before 1).
        let ids: Vec<(&str, usize)> = f
            .checks
            .iter()
            .map(|c| (c.id.as_str(), c.hosts_failing))
            .collect();
        assert_eq!(
            ids,
            [
                ("fstab.device-names", 2),
                ("network.static", 2),
                ("grub.x", 1)
            ]
        );
        assert_eq!(f.checks[0].hosts, ["web1", "web2"]);
    }

    #[test]
    fn bad_inputs_are_skipped_with_the_file_named_and_the_rest_merged() {
        let good = report(json!([]), "bios");
        let inputs = vec![
            input("a/good.json", &good),
            input("a/trunc.json", &good[..good.len() / 2]),
            input(
                "a/foreign.json",
                r#"{"name": "package.json", "version": "1.0"}"#,
            ),
            input(
                "a/future.json",
                &good.replace("\"schema\":1", "\"schema\":2"),
            ),
            input("b/good.json", &good),
            Input {
                source: "empty/".into(),
                content: Err("empty directory: no *.json report in it".into()),
            },
            input("a/list.json", "[1,2]"),
        ];
        let f = merge(&inputs, &Waivers::default());
        assert_eq!(f.totals.hosts, 1);
        assert_eq!(f.exit_code(), EXIT_SKIPPED);
        let reasons: BTreeMap<&str, &str> = f
            .skipped
            .iter()
            .map(|s| (s.source.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(
            reasons["a/trunc.json"].starts_with("truncated JSON"),
            "{reasons:?}"
        );
        assert!(reasons["a/foreign.json"].contains("not a cloudprep audit report"));
        assert!(reasons["a/future.json"].contains("unknown report schema version 2"));
        assert!(reasons["b/good.json"]
            .contains("second report of host good (already merged from a/good.json)"));
        assert!(reasons["empty/"].contains("empty directory"));
        assert!(reasons["a/list.json"].contains("not a JSON object"));
        assert_eq!(f.totals.unreadable, 6);
    }

    #[test]
    fn a_fleet_report_is_not_merged_as_a_host() {
        let f = merge(
            &[input("x/h.json", &report(json!([]), "bios"))],
            &Waivers::default(),
        );
        let text = serde_json::to_string(&f).unwrap();
        let g = merge(&[input("x/fleet.json", &text)], &Waivers::default());
        assert_eq!(g.totals.hosts, 0);
        assert!(
            g.skipped[0].reason.contains("fleet report"),
            "{:?}",
            g.skipped
        );
    }

    #[test]
    fn fleet_waivers_waive_by_check_and_host_glob() {
        let w = Waivers::parse(
            "[waivers]\n\"network.static\" = \"ports keep fixed IPs\"\n\n[[waiver]]\ncheck = \"fstab.device-names\"\nhosts = \"web*\"\nreason = \"fixed by hand in the wave\"\n",
        )
        .unwrap();
        let inputs = vec![
            input(
                "web1.json",
                &report(
                    json!([finding("fstab.device-names", "blocker", "open")]),
                    "bios",
                ),
            ),
            input(
                "db1.json",
                &report(
                    json!([
                        finding("fstab.device-names", "blocker", "open"),
                        finding("network.static", "warning", "open")
                    ]),
                    "bios",
                ),
            ),
        ];
        let f = merge(&inputs, &w);
        let web1 = f.hosts.iter().find(|h| h.name == "web1").unwrap();
        let db1 = f.hosts.iter().find(|h| h.name == "db1").unwrap();
        assert_eq!(web1.status, HostStatus::Ready);
        assert_eq!(web1.findings[0].status, Status::Waived);
        assert_eq!(
            web1.findings[0].waiver.as_deref(),
            Some("fleet waiver: fixed by hand in the wave")
        );
        assert_eq!(
            (db1.status, db1.blockers, db1.warnings, db1.waived),
            (HostStatus::Blocked, 1, 0, 1)
        );
        let c = f
            .checks
            .iter()
            .find(|c| c.id == "fstab.device-names")
            .unwrap();
        assert_eq!((c.hosts_failing, c.hosts_waived), (1, 1));
    }

    #[test]
    fn many_inputs_parse_in_parallel_in_input_order() {
        let good = report(
            json!([finding("fstab.device-names", "blocker", "open")]),
            "bios",
        );
        let mut inputs: Vec<Input> = (0..60)
            .map(|i| input(&format!("d/h{i:02}.json"), &good))
            .collect();
        inputs[7] = input("d/h07.json", "{");
        inputs.push(input("e/h03.json", &good));
        inputs.push(input("e/h07.json", &good));
        let f = merge(&inputs, &Waivers::default());
        assert_eq!(
            f.totals.hosts, 60,
            "h07 merged from e/, its truncated d/ copy skipped"
        );
        let skipped: Vec<(&str, &str)> = f
            .skipped
            .iter()
            .map(|s| (s.source.as_str(), &s.reason[..12]))
            .collect();
        assert_eq!(
            skipped,
            [
                ("d/h07.json", "truncated JS"),
                ("e/h03.json", "a second rep")
            ]
        );
        assert_eq!(
            f.hosts.iter().find(|h| h.name == "h07").unwrap().source,
            "e/h07.json"
        );
    }

    #[test]
    fn host_name_is_the_file_stem() {
        assert_eq!(
            host_name("reports/web-1.example.com.json"),
            "web-1.example.com"
        );
        assert_eq!(host_name("x"), "x");
    }
}
