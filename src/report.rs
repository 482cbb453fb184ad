//! The audit report: text for people (grouped by area, worst first, colour on a TTY) and versioned JSON
//! (`"schema": 1`, described by docs/report.schema.json).

use crate::audit::{self, Audit};
use crate::checks::{Area, Finding, Severity, Status};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Write;

pub const SCHEMA_VERSION: u32 = 1;

/// Output format of a command's report.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// When to use colour in text output.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Colour on or off, given whether the output is a terminal.
    pub fn enabled(self, to_tty: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => to_tty,
        }
    }
}

/// Write to a file (atomically) or stdout.
pub fn emit(path: Option<&std::path::Path>, text: &str) -> Result<()> {
    match path {
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            tmp.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("writing {}", p.display()))?;
            tmp.persist(p)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            let mut so = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) is not an error worth a stack of messages.
            match so.write_all(text.as_bytes()).and_then(|_| so.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.context("writing to standard output")?,
            }
        }
    }
    Ok(())
}

fn finding_json(f: &Finding, diffs: &[(String, &'static str, String)]) -> Value {
    let fix = f.fix.as_ref().map(|fx| {
        json!({
            "files": diffs.iter().map(|(p, a, d)| json!({"path": p, "action": a, "diff": d})).collect::<Vec<_>>(),
            "commands": fx.commands,
        })
    });
    json!({
        "id": f.id,
        "severity": f.severity,
        "status": f.status,
        "title": f.title,
        "message": f.message,
        "evidence": f.evidence,
        "remediation": f.remediation,
        "fix": fix,
    })
}

pub fn to_json(a: &Audit) -> Value {
    let rec = crate::recommend::recommend(&a.facts, a.facts.installed("qemu-guest-agent"));
    json!({
        "schema": SCHEMA_VERSION,
        "tool": {"name": "cloudprep", "version": env!("CARGO_PKG_VERSION")},
        "root": a.facts.root,
        "summary": {
            "blockers": a.count(Severity::Blocker),
            "warnings": a.count(Severity::Warning),
            "info": a.count(Severity::Info),
            "errors": a.errors(),
            "waived": a.findings.iter().filter(|f| f.status == Status::Waived).count(),
            "exit_code": a.exit_code(),
        },
        "facts": a.facts,
        "recommendations": rec,
        "checks": a.results,
        "findings": a.findings.iter().zip(&a.finding_diffs).map(|(f, d)| finding_json(f, d)).collect::<Vec<_>>(),
        "plan": {
            "files": a.plan.files.iter().filter(|f| !f.diff.is_empty() || f.error.is_some()).map(|f| json!({
                "path": f.path, "action": f.action, "diff": f.diff, "findings": f.findings, "error": f.error,
            })).collect::<Vec<_>>(),
            "commands": a.plan.commands,
        },
    })
}

struct Paint(bool);
impl Paint {
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn sev(&self, s: Severity) -> String {
        let code = match s {
            Severity::Blocker => "1;31",
            Severity::Warning => "33",
            Severity::Info => "36",
        };
        self.c(code, &s.to_string().to_uppercase())
    }
}

fn area_of(a: &Audit, id: &str) -> Area {
    a.results
        .iter()
        .find(|r| r.info.id == id)
        .map(|r| r.info.area)
        .unwrap_or(Area::Platform)
}

pub fn render_text(a: &Audit, color: bool) -> String {
    let p = Paint(color);
    let mut s = String::new();
    let os = a
        .facts
        .os
        .as_ref()
        .map(|o| o.pretty_name.clone())
        .unwrap_or_else(|| "unknown OS".into());
    s.push_str(&format!("cloudprep audit of {} ({})\n\n", a.facts.root, os));
    let mut areas: Vec<Area> = a.findings.iter().map(|f| area_of(a, &f.id)).collect();
    areas.sort();
    areas.dedup();
    // Areas ordered by their worst finding.
    areas.sort_by_key(|ar| {
        std::cmp::Reverse(
            a.findings
                .iter()
                .filter(|f| area_of(a, &f.id) == *ar)
                .map(|f| f.severity)
                .max(),
        )
    });
    for ar in areas {
        s.push_str(&p.c("1", &format!("== {} ==", ar.to_string().to_uppercase())));
        s.push('\n');
        for (f, diffs) in a
            .findings
            .iter()
            .zip(&a.finding_diffs)
            .filter(|(f, _)| area_of(a, &f.id) == ar)
        {
            let status = match f.status {
                Status::Open => String::new(),
                Status::Error => p.c("1;35", " [CHECK ERROR]"),
                Status::Waived => p.c("2", " [waived]"),
            };
            s.push_str(&format!(
                "{} {}{}: {}\n",
                p.sev(f.severity),
                p.c("1", &f.id),
                status,
                f.title
            ));
            for line in wrap(&f.message, 96) {
                s.push_str(&format!("    {line}\n"));
            }
            for e in &f.evidence {
                let loc = match e.line {
                    Some(l) => format!("{}:{}", e.path, l),
                    None => e.path.clone(),
                };
                s.push_str(&format!(
                    "    {} {}\n",
                    p.c("2", &format!("{loc}:")),
                    e.text
                ));
            }
            if !f.remediation.is_empty() {
                let mut first = true;
                for line in wrap(&f.remediation, 90) {
                    s.push_str(&format!(
                        "    {} {}\n",
                        if first { "fix:" } else { "    " },
                        line
                    ));
                    first = false;
                }
            }
            if let Some(fx) = &f.fix {
                for (path, action, diff) in diffs {
                    if diff.is_empty() {
                        continue;
                    }
                    s.push_str(&format!("    planned ({action} {path}):\n"));
                    for l in diff.lines() {
                        let l2 = if l.starts_with('+') && !l.starts_with("+++") {
                            p.c("32", l)
                        } else if l.starts_with('-') && !l.starts_with("---") {
                            p.c("31", l)
                        } else {
                            l.to_string()
                        };
                        s.push_str(&format!("      {l2}\n"));
                    }
                }
                for c in &fx.commands {
                    s.push_str(&format!("    planned command: {}\n", c.display()));
                }
            }
            s.push('\n');
        }
    }
    let rec = crate::recommend::recommend(&a.facts, a.facts.installed("qemu-guest-agent"));
    s.push_str(&p.c("1", "== RECOMMENDATIONS =="));
    s.push('\n');
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown (offline root)".into());
    s.push_str(&format!(
        "    flavour: at least {} vCPU, {} RAM; image min_disk {}\n",
        opt(rec.min_vcpus.map(|c| c.to_string())),
        opt(rec.min_ram_mib.map(|m| format!("{m} MiB"))),
        opt(rec.min_disk_gib.map(|d| format!("{d} GiB")))
    ));
    s.push_str(&format!("    upload:  {}\n\n", rec.image_create));
    s.push_str(&summary_line(a, &p));
    s
}

fn summary_line(a: &Audit, p: &Paint) -> String {
    let b = a.count(Severity::Blocker);
    let w = a.count(Severity::Warning);
    let i = a.count(Severity::Info);
    let e = a.errors();
    let waived = a
        .findings
        .iter()
        .filter(|f| f.status == Status::Waived)
        .count();
    let verdict = match a.exit_code() {
        0 => p.c("1;32", "READY"),
        1 => p.c("1;33", "READY WITH WARNINGS"),
        _ => p.c("1;31", "NOT READY"),
    };
    let fixable = a
        .findings
        .iter()
        .filter(|f| f.status == Status::Open && f.fix.is_some())
        .count();
    format!(
        "{verdict}: {b} blocker(s), {w} warning(s), {i} info, {e} check error(s), {waived} waived; {} check(s) run, {fixable} finding(s) fixable by `cloudprep fix`\n",
        a.results.iter().filter(|r| r.outcome != audit::Outcome::Skipped).count()
    )
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for w in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + w.len() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(w);
        }
        out.push(line);
    }
    out
}
