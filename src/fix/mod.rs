//! `cloudprep fix`, `rollback`, `runs`: the transactional executor of the audit's plan.
//!
//! A run: `Pre` commands, then every planned file (its edits re-applied to the content at that moment,
//! backed up, written atomically, validated — a rejected file is restored at once), then `Post` commands.
//! Everything is journaled under `/var/lib/cloudprep/runs/<id>/` in the guest before it happens, so a run
//! that is interrupted at any point (even by SIGKILL or a power cut) is rolled back by the next `fix` or
//! `rollback`. A failing command rolls the whole run back. `rollback` restores every file byte for byte
//! (mode, owner, mtime), removes what the run created, and names the commands it cannot undo.

mod apply;
pub mod atomic;
pub mod bootcode;
mod effects;
pub mod esp;
pub mod exec;
pub mod journal;
mod rollback;
pub mod validate;

pub use apply::execute;
use apply::guest_join;
use effects::{effects, list_tree};
pub use rollback::{recover, rollback};
use rollback::{recover_locked, restore, rollback_dir};

use crate::audit::{self, apply_edits, Plan, PlannedFile, Selection};
use crate::checks::{EditOp, Phase, PlannedCommand, Severity, Status};
use crate::config::Config;
use crate::exit::{EXIT_BLOCKERS, EXIT_FAILURE};
use crate::guest::root::Root;
use crate::guest::Target;
use crate::report::Format;
use anyhow::{bail, Context, Result};
use atomic::{split, Dir, Existing};
use journal::{Entry, Journal, Kind, Meta, RunInfo, RunState, RUNS_DIR};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, IsTerminal, Write};

/// Options of one execution.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Filesystems of the guest with their ids (from the facts), for `/dev/disk/by-*` links in the chroot.
    pub filesystems: Vec<crate::guest::facts::Filesystem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// Path as planned.
    pub path: String,
    /// Path actually written (symlinks followed).
    pub resolved: String,
    pub action: String,
    pub findings: Vec<String>,
    /// `applied`, `unchanged`, `undone` (validator rejected it), `error`, `rolled-back`.
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandResult {
    pub argv: Vec<String>,
    pub phase: Phase,
    pub status: Option<i32>,
    pub ok: bool,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: Option<String>,
    /// `nothing` (nothing to change), `applied`, `partial` (some files undone or not changed),
    /// `rolled-back` (a command failed: everything undone).
    pub state: String,
    pub files: Vec<FileResult>,
    pub commands: Vec<CommandResult>,
    pub errors: Vec<String>,
    /// Commands that rollback could not undo (when the run was rolled back).
    pub irreversible: Vec<Vec<String>>,
    pub journal_steps: u64,
}

impl RunReport {
    /// A change failed, was undone, or the run was rolled back.
    pub fn failed(&self) -> bool {
        self.state == "rolled-back"
            || !self.errors.is_empty()
            || self
                .files
                .iter()
                .any(|f| f.status == "undone" || f.status == "error")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub run_id: String,
    pub reason: String,
    pub restored: Vec<String>,
    pub removed: Vec<String>,
    pub irreversible: Vec<Vec<String>>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Exclusive lock on the runs directory: one fix/rollback at a time.
pub struct Lock {
    _f: std::fs::File,
}

/// The runs directory (created).
fn runs_dir(root: &Root) -> Result<Dir> {
    atomic::ensure_dir(root, RUNS_DIR, &mut |_| Ok(()))
}

/// Take the lock (`runs/.lock`, opened through the runs directory: a symlink, FIFO or device planted
/// there is refused, never opened).
pub fn lock(root: &Root) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    let d = runs_dir(root)?;
    let f = d
        .open_file(".lock", libc::O_RDWR | libc::O_CREAT, 0o600)?
        .ok_or_else(|| anyhow::anyhow!("{}/.lock vanished", d.guest))?;
    // SAFETY: valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another cloudprep fix or rollback is running on {} (lock {})",
            root.base().display(),
            root.display(format!("{RUNS_DIR}/.lock"))
        );
    }
    Ok(Lock { _f: f })
}

/// The directory of run `id`, opened without following a symlink (a run directory planted as a symlink
/// is not a run).
pub(crate) fn run_dir(root: &Root, id: &str) -> Result<Dir> {
    Dir::open(root, RUNS_DIR)?
        .open_sub(id)
        .with_context(|| format!("run {id}"))
}

/// Every run recorded, oldest first. A run directory or journal that is not a real directory or
/// regular file (a symlink, a device) is skipped with a warning.
pub fn list_runs(root: &Root) -> Result<Vec<RunInfo>> {
    if !root.is_dir(RUNS_DIR) {
        return Ok(Vec::new());
    }
    let d = Dir::open(root, RUNS_DIR)?;
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for n in d.list()? {
        match n.into_string() {
            Ok(n) if n.starts_with('.') => {}
            Ok(n) => names.push(n),
            Err(n) => log::warn!("skipping {}/{n:?}: not a run id", d.guest),
        }
    }
    // Ids end in the run's sequence number: order by it (the time prefix has a one-second resolution).
    names.sort_by_key(|n| {
        (
            n.rsplit_once('-')
                .and_then(|(_, s)| s.parse::<usize>().ok())
                .unwrap_or(0),
            n.clone(),
        )
    });
    for n in names {
        let sub = match d.stat(&n)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => d.open_sub(&n),
            Some(_) => {
                log::warn!("skipping run {n}: {}/{n} is not a directory", d.guest);
                continue;
            }
            None => continue,
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => {
                log::warn!("skipping run {n}: {e:#}");
                continue;
            }
        };
        if sub.stat(journal::JOURNAL)?.is_none() {
            continue;
        }
        match journal::read(&sub) {
            Ok(entries) => out.push(journal::info(&n, &sub.host, &entries)),
            Err(e) => log::warn!("skipping run {n}: {e:#}"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Commands

/// The plan as text: the unified diffs exactly, then the commands.
/// The plan as JSON (`fix --dry-run --format json`, docs/fix-plan.schema.json): `changes` (would `fix`
/// change anything), `files` (each with its action, unified diff, the findings it fixes, and `error` when
/// the change cannot be made) and `commands` (argv, phase, reason, stdin when fed).
pub fn plan_json(plan: &Plan) -> serde_json::Value {
    let files: Vec<serde_json::Value> = plan
        .files
        .iter()
        .filter(|f| !f.diff.is_empty() || f.error.is_some())
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "action": f.action,
                "diff": f.diff,
                "findings": f.findings,
                "error": f.error,
            })
        })
        .collect();
    let commands: Vec<serde_json::Value> = plan
        .commands
        .iter()
        .map(|c| {
            serde_json::json!({
                "argv": c.argv,
                "phase": c.phase,
                "reason": c.reason,
                "stdin": c.stdin,
            })
        })
        .collect();
    serde_json::json!({
        "changes": !plan.is_empty(),
        "files": files,
        "commands": commands,
    })
}

pub fn render_plan(plan: &Plan) -> String {
    let mut s = String::new();
    for f in &plan.files {
        if let Some(e) = &f.error {
            s.push_str(&format!("# {}: cannot be changed: {e}\n", f.path));
            continue;
        }
        s.push_str(&f.diff);
        if !f.diff.is_empty() && !f.diff.ends_with('\n') {
            s.push('\n');
        }
    }
    for c in &plan.commands {
        let ph = match c.phase {
            Phase::Pre => "before the file changes",
            Phase::Post => "after the file changes",
        };
        s.push_str(&format!("# run ({ph}): {}\t# {}\n", c.display(), c.reason));
    }
    s
}

fn render_report(r: &RunReport) -> String {
    let mut s = String::new();
    if let Some(id) = &r.run_id {
        s.push_str(&format!("run {id}: {}\n", r.state));
    }
    for f in &r.files {
        let p = if f.resolved != f.path {
            format!("{} (-> {})", f.path, f.resolved)
        } else {
            f.path.clone()
        };
        s.push_str(&format!("  {:<12} {:<8} {p}", f.status, f.action));
        if !f.message.is_empty() {
            s.push_str(&format!("  — {}", f.message));
        }
        s.push('\n');
    }
    for c in &r.commands {
        s.push_str(&format!(
            "  {:<12} command  {}\n",
            if c.ok { "ok" } else { "FAILED" },
            c.argv.join(" ")
        ));
    }
    for e in &r.errors {
        s.push_str(&format!("  error: {e}\n"));
    }
    for c in &r.irreversible {
        s.push_str(&format!("  not undone: {}\n", c.join(" ")));
    }
    s
}

pub fn render_rollback(r: &RollbackReport) -> String {
    let mut s = format!("rolled back run {} ({})\n", r.run_id, r.reason);
    for p in &r.restored {
        s.push_str(&format!("  restored {p}\n"));
    }
    for p in &r.removed {
        s.push_str(&format!("  removed  {p}\n"));
    }
    for c in &r.irreversible {
        s.push_str(&format!(
            "  cannot undo: {} (its effects outside the backed-up files remain)\n",
            c.join(" ")
        ));
    }
    for w in &r.warnings {
        s.push_str(&format!("  warning: {w}\n"));
    }
    for e in &r.errors {
        s.push_str(&format!("  error: {e}\n"));
    }
    s
}

fn ask(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// Execute the plan of `before`, then audit again. Returns the run, the new audit, and the ids of findings
/// whose fix was applied but that still fire. (`cmd_fix` without the asking; for unattended callers.)
pub fn apply_and_reaudit(
    root: &Root,
    config: &Config,
    sel: &Selection,
    before: &audit::Audit,
) -> Result<(RunReport, audit::Audit, Vec<String>)> {
    let opts = ExecOptions {
        filesystems: before.facts.filesystems.clone(),
    };
    let report = execute(root, config, &before.plan, &opts)?;
    let after = audit::run(root, config, sel);
    let applied: BTreeSet<&String> = report
        .files
        .iter()
        .filter(|f| f.status == "applied")
        .flat_map(|f| f.findings.iter())
        .collect();
    let still: Vec<String> = after
        .findings
        .iter()
        .filter(|f| f.status == Status::Open && applied.contains(&f.id))
        .map(|f| f.id.clone())
        .collect();
    Ok((report, after, still))
}

/// What `cloudprep fix` is asked to do.
#[derive(Debug, Clone)]
pub struct FixOptions {
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Apply without asking.
    pub yes: bool,
    /// Format of the final summary.
    pub format: Format,
    pub select: Selection,
}

/// The `fix` command: recover interrupted runs, audit, show the plan, ask (on a terminal, without `yes`),
/// apply, audit again. Returns the exit code.
/// The filesystems of the guest's fstab that a fix touches and that are not mounted under an offline root.
fn offline_unmounted(root: &Root) -> Result<Vec<crate::checks::storage::Unmounted>> {
    if root.is_live() {
        return Ok(Vec::new());
    }
    let mounts = crate::guest::facts::read_mounts(root)?;
    crate::checks::storage::offline_unmounted(root, &mounts)
}

/// Refuse to change an offline root when a filesystem the change touches is not mounted under it: /var
/// always (the journal and backups), any of them when the plan runs commands (they write /boot, /usr and
/// /var), and the filesystem of every file the plan edits. Without a plan (before the audit): /var only.
fn refuse_unmounted(
    root: &Root,
    missing: &[crate::checks::storage::Unmounted],
    plan: Option<&audit::Plan>,
) -> Result<()> {
    // Which commands may write under a mount point. Under /boot/efi only GRUB's EFI installation does
    // (grub-install, or a grub-efi package whose postinst runs it); cloudprep's own write of an unmounted
    // ESP (`esp-install --device`) goes to the partition itself and needs no mount.
    let writes_under = |c: &PlannedCommand, mp: &str| {
        if mp != "/boot/efi" {
            return true;
        }
        let prog = c.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        prog == Some("grub-install") || c.argv.iter().any(|a| a.contains("grub-efi"))
    };
    let touches = |mp: &str| {
        mp == "/var"
            || plan.is_some_and(|p| {
                p.commands.iter().any(|c| writes_under(c, mp))
                    || p.files
                        .iter()
                        .any(|f| f.path == mp || f.path.starts_with(&format!("{mp}/")))
            })
    };
    if let Some(u) = missing.iter().find(|u| touches(&u.mountpoint)) {
        bail!(
            "refusing to fix {}: the guest's /etc/fstab (line {}) mounts {} on {}, but nothing is mounted at {}; \
             mount it there (and every other filesystem the guest mounts) and run cloudprep again",
            root.base().display(),
            u.line,
            u.spec,
            u.mountpoint,
            root.display(&u.mountpoint)
        );
    }
    Ok(())
}

pub fn run(target: &Target, a: &FixOptions) -> Result<i32> {
    // A wrong selection, an unreadable root or config is an error of the command: exit 3, reported once by
    // cli::main.
    a.select.validate()?;
    let (root, config) = target.open()?;
    let sel = a.select.clone();
    let interactive = !a.yes && std::io::stdin().is_terminal();
    let may_change = !a.dry_run && (a.yes || interactive);
    // An offline root with a guest filesystem left unmounted: the journal (/var) and the plan would land
    // in the empty mount-point directory on the root filesystem.
    let unmounted = offline_unmounted(&root)?;
    if may_change {
        refuse_unmounted(&root, &unmounted, None)?;
    }
    if may_change {
        // An interrupted run is rolled back before anything else (and before the audit looks).
        for r in recover(&root)? {
            eprint!("{}", render_rollback(&r));
        }
    } else {
        for r in list_runs(&root)?
            .iter()
            .filter(|r| r.state.needs_recovery())
        {
            eprintln!(
                "cloudprep: warning: run {} is {}: `fix` or `rollback` will roll it back first, so the plan may change",
                r.id,
                r.state.as_str()
            );
        }
    }
    let before = audit::run(&root, &config, &sel);
    let plan = &before.plan;
    if may_change {
        refuse_unmounted(&root, &unmounted, Some(plan))?;
    }
    if a.dry_run && a.format == Format::Json {
        crate::report::emit(
            None,
            &(serde_json::to_string_pretty(&plan_json(plan))? + "\n"),
        )?;
        return Ok(before.exit_code());
    }
    if plan.is_empty() {
        let msg = "nothing to do: no planned change";
        match a.format {
            Format::Json => crate::report::emit(
                None,
                &(serde_json::to_string_pretty(&serde_json::json!({
                    "run": serde_json::Value::Null,
                    "audit": crate::report::to_json(&before),
                }))? + "\n"),
            )?,
            Format::Text => println!("{msg}"),
        }
        return Ok(before.exit_code());
    }
    if a.dry_run {
        crate::report::emit(None, &render_plan(plan))?;
        return Ok(before.exit_code());
    }
    if !a.yes {
        if !interactive {
            eprintln!(
                "cloudprep: refusing to change the system without confirmation (standard input is not a terminal): \
                 review the plan with `cloudprep fix --dry-run`, then run `cloudprep fix --yes`"
            );
            return Ok(EXIT_FAILURE);
        }
        eprint!("{}", render_plan(plan));
        if !ask("Apply these changes?") {
            eprintln!("cloudprep: nothing changed");
            return Ok(before.exit_code());
        }
    }
    if a.yes && a.format == Format::Text {
        crate::report::emit(None, &render_plan(plan))?;
    }
    let (report, after, still) = apply_and_reaudit(&root, &config, &sel, &before)?;
    match a.format {
        Format::Json => crate::report::emit(
            None,
            &(serde_json::to_string_pretty(&serde_json::json!({
                "run": report,
                "still_open_after_fix": still,
                "audit": crate::report::to_json(&after),
            }))? + "\n"),
        )?,
        Format::Text => {
            let mut s = render_report(&report);
            for id in &still {
                s.push_str(&format!("  still present after its fix: {id}\n"));
            }
            s.push_str(&format!(
                "after the fix: {} blocker(s), {} warning(s)\n",
                after.count(Severity::Blocker),
                after.count(Severity::Warning)
            ));
            crate::report::emit(None, &s)?;
        }
    }
    Ok(if report.failed() {
        EXIT_BLOCKERS
    } else {
        after.exit_code()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_text_is_the_diffs_then_the_commands() {
        let root_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root_dir.path().join("etc")).unwrap();
        std::fs::write(root_dir.path().join("etc/x"), "a\n").unwrap();
        let root = Root::new(root_dir.path()).unwrap();
        let info = crate::checks::CheckInfo {
            id: "t.x",
            title: "t",
            area: crate::checks::Area::Boot,
            severity: Severity::Warning,
            fixable: true,
        };
        let f = crate::checks::Finding::new(&info, "m").fix(
            crate::checks::Fix::default()
                .edit(crate::checks::FileEdit::rewrite(
                    "/etc/x",
                    crate::checks::Validator::None,
                    |s| Ok(s.replace('a', "b")),
                ))
                .command(PlannedCommand::new(
                    Phase::Post,
                    70,
                    &["update-grub"],
                    "why",
                )),
        );
        let plan = audit::compose_plan(&root, &[f]);
        let t = render_plan(&plan);
        assert!(t.starts_with(&plan.files[0].diff), "{t}");
        assert!(t.contains("-a\n+b\n"));
        assert!(t.ends_with("update-grub\t# why\n"), "{t}");
    }
}
