//! The audit engine: gather facts, run every check (a failing or panicking check becomes an `error`
//! finding), apply waivers, and compose the plan that `fix` executes.

use crate::checks::{CheckInfo, EditOp, FileEdit, Finding, PlannedCommand, Severity, Status};
use crate::config::{matches_ids, Config};
use crate::guest::facts::Facts;
use crate::guest::root::Root;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::checks::all_checks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    #[serde(flatten)]
    pub info: CheckInfo,
    pub outcome: Outcome,
}

/// One file of the composed plan: every edit of every finding to that file, applied in order.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: String,
    pub edits: Vec<FileEdit>,
    /// Finding ids contributing.
    pub findings: Vec<String>,
    /// `rewrite`, `create` or `remove` (as computed against the current content).
    pub action: &'static str,
    pub diff: String,
    /// Error composing this file's change (it will be skipped by fix).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    pub commands: Vec<PlannedCommand>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.files
            .iter()
            .all(|f| f.diff.is_empty() && f.error.is_none())
            && self.commands.is_empty()
    }
}

pub struct Audit {
    pub facts: Facts,
    pub results: Vec<CheckResult>,
    pub findings: Vec<Finding>,
    /// Per finding (same index as `findings`), the per-file diffs of that finding's own fix.
    pub finding_diffs: Vec<Vec<(String, &'static str, String)>>,
    pub plan: Plan,
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl Selection {
    /// Refuse what would select nothing by mistake: an empty value, or an id, `area.` prefix or area name
    /// that matches no check (the error names it and the nearest known ids).
    pub fn validate(&self) -> Result<()> {
        check_patterns("--only", &self.only)?;
        check_patterns("--skip", &self.skip)
    }

    pub fn wants(&self, config: &Config, id: &str) -> bool {
        if !self.only.is_empty() && !matches_ids(&self.only, id) {
            return false;
        }
        !(matches_ids(&self.skip, id) || config.is_skipped(id))
    }
}

/// Check `patterns` (ids, `area.` prefixes, area names) against the registry of checks; `what` names
/// where they come from (`--only`, `[checks] skip`, ...).
pub fn check_patterns(what: &str, patterns: &[String]) -> Result<()> {
    let ids: Vec<&str> = all_checks().iter().map(|c| c.info.id).collect();
    for p in patterns {
        let p = p.trim();
        if p.is_empty() {
            anyhow::bail!("{what}: empty check id (known ids: `cloudprep checks`)");
        }
        if !ids.iter().any(|id| matches_ids(&[p.to_string()], id)) {
            anyhow::bail!(
                "{what}: `{p}` is not a check id, an `area.` prefix or an area name{}",
                nearest(p, &ids)
            );
        }
    }
    Ok(())
}

/// Check `ids` (exact ids only, as waivers are matched) against the registry.
pub fn check_ids(what: &str, given: &[&String]) -> Result<()> {
    let ids: Vec<&str> = all_checks().iter().map(|c| c.info.id).collect();
    for p in given {
        if p.trim().is_empty() {
            anyhow::bail!("{what}: empty check id");
        }
        if !ids.contains(&p.as_str()) {
            anyhow::bail!("{what}: `{p}` is not a check id{}", nearest(p, &ids));
        }
    }
    Ok(())
}

/// "; nearest: a, b, c" — the known ids (and area prefixes) closest to `p` by edit distance, those
/// containing it first.
fn nearest(p: &str, ids: &[&str]) -> String {
    let mut cands: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    for id in ids {
        if let Some((area, _)) = id.split_once('.') {
            let a = format!("{area}.");
            if !cands.contains(&a) {
                cands.push(a);
            }
        }
    }
    let mut scored: Vec<(usize, String)> = cands
        .into_iter()
        .map(|c| {
            // Against the whole id and against it without its area (`firewall.ssh` is near
            // `network.firewall-ssh`).
            let tail = c.split_once('.').map(|(_, t)| t).filter(|t| !t.is_empty());
            let d = if p.len() >= 3 && c.contains(p) {
                0
            } else {
                edit_distance(p, &c).min(tail.map_or(usize::MAX, |t| edit_distance(p, t) + 1))
            };
            (d, c)
        })
        .collect();
    scored.sort();
    let limit = (p.chars().count() / 2).max(3);
    let best: Vec<String> = scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(3)
        .map(|(_, c)| c)
        .collect();
    if best.is_empty() {
        " (list them with `cloudprep checks`)".to_string()
    } else {
        format!("; nearest: {}", best.join(", "))
    }
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn run(root: &Root, config: &Config, sel: &Selection) -> Audit {
    let facts = Facts::gather(root);
    run_with_facts(root, config, sel, facts)
}

pub fn run_with_facts(root: &Root, config: &Config, sel: &Selection, facts: Facts) -> Audit {
    let ctx = crate::checks::Ctx {
        root,
        config,
        facts: &facts,
    };
    let mut results = Vec::new();
    let mut findings = Vec::new();
    for check in all_checks() {
        if !sel.wants(config, check.info.id) {
            results.push(CheckResult {
                info: check.info,
                outcome: Outcome::Skipped,
            });
            continue;
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (check.run)(&ctx, &check.info)
        }));
        let found = match out {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => vec![Finding::error(&check.info, &e)],
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                vec![Finding::error(
                    &check.info,
                    &anyhow::anyhow!("internal error (panic): {msg}"),
                )]
            }
        };
        let outcome = if found.iter().any(|f| f.status == Status::Error) {
            Outcome::Error
        } else if found.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        results.push(CheckResult {
            info: check.info,
            outcome,
        });
        for mut f in found {
            if f.status == Status::Open && config.waivers.contains_key(&f.id) {
                f.status = Status::Waived;
            }
            findings.push(f);
        }
    }
    // Worst first, stable within a severity.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let finding_diffs = findings.iter().map(|f| finding_diffs(root, f)).collect();
    let plan = compose_plan(root, &findings);
    Audit {
        facts,
        results,
        findings,
        finding_diffs,
        plan,
    }
}

impl Audit {
    pub fn count(&self, sev: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == sev && f.status != Status::Waived)
            .count()
    }
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.status == Status::Error)
            .count()
    }
    /// 0 ready; 1 only warnings (or info-level errors); 2 at least one blocker.
    /// A check that errored counts at its own severity: its problem may be there.
    pub fn exit_code(&self) -> i32 {
        let live = self.findings.iter().filter(|f| f.status != Status::Waived);
        let mut code = 0;
        for f in live {
            let c = match f.severity {
                Severity::Blocker => 2,
                Severity::Warning => 1,
                Severity::Info => {
                    if f.status == Status::Error {
                        1
                    } else {
                        0
                    }
                }
            };
            code = code.max(c);
        }
        code
    }
}

/// Current content of a guest file as text ("" when absent).
fn current_text(root: &Root, path: &str) -> Result<(bool, String)> {
    match root.read_text(path)? {
        Some(t) => Ok((true, t)),
        None => Ok((false, String::new())),
    }
}

/// Apply a sequence of edits to `content`: `Ok(None)` means the file is removed.
pub fn apply_edits(edits: &[FileEdit], exists: bool, content: &str) -> Result<Option<String>> {
    let mut cur = if exists {
        Some(content.to_string())
    } else {
        None
    };
    for e in edits {
        match &e.op {
            EditOp::Remove => cur = None,
            EditOp::Rewrite { rewriter, .. } => {
                let input = cur.as_deref().unwrap_or("");
                // A rewriter that panics on odd input is an error for this file, not the end of the run
                // (exit codes stay 0-3, and a fix run in progress is finished and journaled).
                let out =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rewriter(input)))
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Err(anyhow::anyhow!(
                                "the rewrite failed (internal error: {msg})"
                            ))
                        });
                cur = Some(out?);
            }
        }
    }
    Ok(cur)
}

fn describe(
    path: &str,
    exists: bool,
    before: &str,
    after: &Option<String>,
) -> (&'static str, String) {
    match (exists, after) {
        (true, None) => ("remove", unified_diff(path, before, "")),
        (false, None) => ("remove", String::new()),
        (false, Some(a)) => ("create", unified_diff(path, "", a)),
        (true, Some(a)) => (
            "rewrite",
            if a == before {
                String::new()
            } else {
                unified_diff(path, before, a)
            },
        ),
    }
}

fn finding_diffs(root: &Root, f: &Finding) -> Vec<(String, &'static str, String)> {
    let Some(fix) = &f.fix else { return Vec::new() };
    let mut by_path: BTreeMap<&str, Vec<FileEdit>> = BTreeMap::new();
    for e in &fix.edits {
        by_path.entry(e.path.as_str()).or_default().push(e.clone());
    }
    by_path
        .into_iter()
        .map(|(p, edits)| match current_text(root, p) {
            Ok((exists, before)) => match apply_edits(&edits, exists, &before) {
                Ok(after) => {
                    let (a, d) = describe(p, exists, &before, &after);
                    (p.to_string(), a, d)
                }
                Err(e) => (p.to_string(), "error", format!("cannot plan: {e:#}")),
            },
            Err(e) => (p.to_string(), "error", format!("cannot plan: {e:#}")),
        })
        .collect()
}

/// Compose every open finding's fix into one plan: edits grouped per file in finding order, commands
/// deduplicated and ordered by phase and order.
pub fn compose_plan(root: &Root, findings: &[Finding]) -> Plan {
    let mut files: Vec<PlannedFile> = Vec::new();
    let mut commands: Vec<PlannedCommand> = Vec::new();
    for f in findings.iter().filter(|f| f.status == Status::Open) {
        let Some(fix) = &f.fix else { continue };
        for e in &fix.edits {
            match files.iter_mut().find(|pf| pf.path == e.path) {
                Some(pf) => {
                    pf.edits.push(e.clone());
                    if !pf.findings.contains(&f.id) {
                        pf.findings.push(f.id.clone());
                    }
                }
                None => files.push(PlannedFile {
                    path: e.path.clone(),
                    edits: vec![e.clone()],
                    findings: vec![f.id.clone()],
                    action: "rewrite",
                    diff: String::new(),
                    error: None,
                }),
            }
        }
        for c in &fix.commands {
            if !commands
                .iter()
                .any(|x| x.argv == c.argv && x.phase == c.phase)
            {
                commands.push(c.clone());
            }
        }
    }
    for pf in &mut files {
        match current_text(root, &pf.path)
            .and_then(|(ex, before)| Ok((ex, before.clone(), apply_edits(&pf.edits, ex, &before)?)))
        {
            Ok((ex, before, after)) => {
                let (a, d) = describe(&pf.path, ex, &before, &after);
                pf.action = a;
                pf.diff = d;
            }
            Err(e) => {
                pf.action = "error";
                pf.error = Some(format!("{e:#}"));
            }
        }
    }
    commands.sort_by_key(|c| (c.phase, c.order));
    Plan { files, commands }
}

/// A unified diff (3 lines of context) between two texts, with `a/` and `b/` headers naming `path`.
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(before, after);
    let mut out = String::new();
    let old = if before.is_empty() {
        "/dev/null".to_string()
    } else {
        format!("a{path}")
    };
    let new = if after.is_empty() {
        "/dev/null".to_string()
    } else {
        format!("b{path}")
    };
    out.push_str(
        &diff
            .unified_diff()
            .context_radius(3)
            .missing_newline_hint(true)
            .header(&old, &new)
            .to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Validator;

    #[test]
    fn edits_compose_in_order() {
        let a = FileEdit::rewrite("/etc/x", Validator::None, |s| Ok(s.replace("a", "b")));
        let b = FileEdit::rewrite("/etc/x", Validator::None, |s| Ok(s.replace("b", "c")));
        assert_eq!(
            apply_edits(&[a.clone(), b.clone()], true, "a\n")
                .unwrap()
                .unwrap(),
            "c\n"
        );
        assert_eq!(
            apply_edits(&[FileEdit::remove("/etc/x")], true, "a\n").unwrap(),
            None
        );
    }

    #[test]
    fn a_panicking_rewriter_is_an_error_for_its_file() {
        let p = FileEdit::rewrite("/etc/x", Validator::None, |s| {
            Ok(s.lines().nth(5).expect("line 6").to_string())
        });
        let e = apply_edits(&[p], true, "a\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 6"), "{e:#}");
    }

    #[test]
    fn diff_has_headers_and_hunks() {
        let d = unified_diff("/etc/fstab", "a\nb\nc\n", "a\nB\nc\n");
        assert!(d.contains("--- a/etc/fstab"), "{d}");
        assert!(d.contains("+++ b/etc/fstab"));
        assert!(d.contains("-b\n+B\n"));
        assert!(unified_diff("/x", "same", "same").is_empty());
    }
}
