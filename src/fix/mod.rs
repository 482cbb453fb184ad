//! `cloudprep fix`, `rollback`, `runs`: the transactional executor of the audit's plan.
//!
//! A run: `Pre` commands, then every planned file (its edits re-applied to the content at that moment,
//! backed up, written atomically, validated — a rejected file is restored at once), then `Post` commands.
//! Everything is journaled under `/var/lib/cloudprep/runs/<id>/` in the guest before it happens, so a run
//! that is interrupted at any point (even by SIGKILL or a power cut) is rolled back by the next `fix` or
//! `rollback`. A failing command rolls the whole run back. `rollback` restores every file byte for byte
//! (mode, owner, mtime), removes what the run created, and names the commands it cannot undo.

pub mod atomic;
pub mod bootcode;
pub mod esp;
pub mod exec;
pub mod journal;
pub mod validate;

use crate::audit::{self, apply_edits, Plan, PlannedFile, Selection};
use crate::check::{EditOp, Phase, PlannedCommand, Severity, Status};
use crate::cli::{FixArgs, Format, Global, RollbackArgs, RunsArgs, EXIT_BLOCKERS, EXIT_FAILURE};
use crate::config::Config;
use crate::root::Root;
use anyhow::{bail, Context, Result};
use atomic::{split, Dir, Existing};
use journal::{Entry, Journal, Kind, Meta, RunInfo, RunState, RUNS_DIR};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Options of one execution.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Filesystems of the guest with their ids (from the facts), for `/dev/disk/by-*` links in the chroot.
    pub filesystems: Vec<crate::facts::Filesystem>,
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

/// Host path of the runs directory (created).
fn runs_dir(root: &Root) -> Result<Dir> {
    atomic::ensure_dir(root, RUNS_DIR, &mut |_| Ok(()))
}

pub fn lock(root: &Root) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    let d = runs_dir(root)?;
    let p = d.host.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    // SAFETY: valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another cloudprep fix or rollback is running on {} (lock {})",
            root.base().display(),
            p.display()
        );
    }
    Ok(Lock { _f: f })
}

/// Every run recorded, oldest first.
pub fn list_runs(root: &Root) -> Result<Vec<RunInfo>> {
    if !root.is_dir(RUNS_DIR) {
        return Ok(Vec::new());
    }
    let d = Dir::open(root, RUNS_DIR)?;
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&d.host)
        .with_context(|| format!("listing {}", root.display(RUNS_DIR)))?
        .flatten()
        .filter(|e| e.path().join(journal::JOURNAL).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
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
        let dir = d.host.join(&n);
        match journal::read(&dir) {
            Ok(entries) => out.push(journal::info(&n, &dir, &entries)),
            Err(e) => log::warn!("skipping run {n}: {e:#}"),
        }
    }
    Ok(out)
}

/// Roll back every run that did not finish (interrupted, or interrupted while rolling back).
pub fn recover(root: &Root) -> Result<Vec<RollbackReport>> {
    if !root.is_dir(RUNS_DIR) {
        return Ok(Vec::new());
    }
    let _l = lock(root)?;
    recover_locked(root)
}

fn recover_locked(root: &Root) -> Result<Vec<RollbackReport>> {
    let mut out = Vec::new();
    for r in list_runs(root)?.into_iter().rev() {
        if r.state.needs_recovery() {
            log::warn!("run {} is {}: rolling it back", r.id, r.state.as_str());
            out.push(rollback_dir(
                root,
                &r.id,
                &r.dir,
                &format!("the run was {} (interrupted)", r.state.as_str()),
            )?);
        }
    }
    Ok(out)
}

/// Roll back a run (by id, or the last applied one). Unfinished runs are rolled back first.
pub fn rollback(
    root: &Root,
    id: Option<&str>,
) -> Result<(Vec<RollbackReport>, Option<RollbackReport>)> {
    if !root.is_dir(RUNS_DIR) {
        if let Some(id) = id {
            bail!("no run {id} under {}", root.display(RUNS_DIR));
        }
        return Ok((Vec::new(), None));
    }
    let _l = lock(root)?;
    let recovered = recover_locked(root)?;
    let runs = list_runs(root)?;
    let target = match id {
        Some(id) => {
            let Some(pos) = runs.iter().position(|r| r.id == id) else {
                bail!("no run {id} under {}", root.display(RUNS_DIR));
            };
            if runs[pos].state == RunState::RolledBack {
                if recovered.iter().any(|r| r.run_id == id) {
                    return Ok((recovered, None));
                }
                bail!("run {id} is already rolled back");
            }
            if let Some(later) = runs[pos + 1..]
                .iter()
                .find(|r| r.state == RunState::Applied)
            {
                bail!(
                    "run {} was applied after {id}: roll it back first (`cloudprep rollback {}`)",
                    later.id,
                    later.id
                );
            }
            Some(&runs[pos])
        }
        None => runs.iter().rev().find(|r| r.state == RunState::Applied),
    };
    let rep = match target {
        Some(r) => Some(rollback_dir(root, &r.id, &r.dir, "requested")?),
        None => None,
    };
    Ok((recovered, rep))
}

// ---------------------------------------------------------------------------------------------------
// Command effects

struct Tree {
    dir: &'static str,
    recursive: bool,
    /// Which existing entries to back up (all entries are listed so new ones are removed on rollback).
    backup: fn(&str) -> bool,
}

struct Effects {
    trees: Vec<Tree>,
    reversible: bool,
    note: &'static str,
}

fn all(_: &str) -> bool {
    true
}

fn effects(argv: &[String]) -> Effects {
    let prog = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default();
    let debconf = Tree {
        dir: "/var/cache/debconf",
        recursive: false,
        backup: all,
    };
    match prog.as_str() {
        "update-initramfs" | "mkinitramfs" => Effects {
            trees: vec![
                Tree {
                    dir: "/boot",
                    recursive: false,
                    backup: |n| n.starts_with("initrd.img"),
                },
                Tree {
                    dir: "/var/lib/initramfs-tools",
                    recursive: false,
                    backup: all,
                },
            ],
            reversible: true,
            note: "initramfs images backed up",
        },
        "update-grub" | "update-grub2" | "grub-mkconfig" => Effects {
            trees: vec![Tree {
                dir: "/boot/grub",
                recursive: false,
                backup: |n| matches!(n, "grub.cfg" | "grubenv"),
            }],
            reversible: true,
            note: "grub.cfg backed up",
        },
        "grub-install" => Effects {
            trees: vec![
                Tree {
                    dir: "/boot/grub",
                    recursive: true,
                    backup: all,
                },
                debconf,
            ],
            reversible: false,
            note: "files under /boot/grub are restored; the boot code on the disk too when it was saved",
        },
        "debconf-set-selections" => Effects {
            trees: vec![debconf],
            reversible: true,
            note: "debconf database backed up",
        },
        "dpkg-reconfigure" => Effects {
            trees: vec![debconf],
            reversible: false,
            note: "debconf database restored, but the package's maintainer scripts may have changed other files",
        },
        "systemctl" if matches!(argv.get(1).map(String::as_str), Some("enable" | "disable" | "mask" | "unmask")) => Effects {
            trees: vec![Tree {
                dir: "/etc/systemd/system",
                recursive: true,
                backup: all,
            }],
            reversible: true,
            note: "unit links under /etc/systemd/system backed up",
        },
        "true" => Effects {
            trees: vec![],
            reversible: true,
            note: "no effect",
        },
        "apt-get" | "apt" | "aptitude" | "dpkg" => Effects {
            trees: vec![debconf],
            reversible: false,
            note: "installed or removed packages are not undone by rollback",
        },
        _ => Effects {
            trees: vec![],
            reversible: false,
            note: "effects of this command are not tracked",
        },
    }
}

/// Entries (relative paths, parents before children) of a guest directory tree, not crossing filesystems.
fn list_tree(root: &Root, dir: &str, recursive: bool) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let r = root.resolve(dir)?;
    let Ok(top) = std::fs::symlink_metadata(&r.host) else {
        return Ok(Vec::new());
    };
    if !top.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let host = if rel.is_empty() {
            r.host.clone()
        } else {
            r.host.join(&rel)
        };
        let mut names: Vec<String> = std::fs::read_dir(&host)
            .with_context(|| format!("listing {}", host.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let relp = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            out.push(relp.clone());
            if recursive {
                if let Ok(m) = std::fs::symlink_metadata(host.join(&n)) {
                    if m.is_dir() && m.dev() == top.dev() {
                        stack.push(relp);
                    }
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// The forward run

struct Run<'a> {
    root: &'a Root,
    dir: PathBuf,
    journal: Journal,
    seq: u64,
    backed_up: HashSet<String>,
    /// Backup entries of this run by seq (for undo).
    backups: Vec<Entry>,
    chroot: Option<exec::Chroot>,
    /// Time limit of one command.
    command_timeout: std::time::Duration,
    report: RunReport,
}

fn guest_join(dir: &str, rel: &str) -> String {
    if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{}/{rel}", dir.trim_end_matches('/'))
    }
}

impl Run<'_> {
    /// Save the current state of the canonical guest path `path` (once per run) before it changes.
    /// Save the areas of `dev` that a BIOS grub-install writes, durably, and journal them.
    fn save_bootcode(&mut self, dev: &str, idx: usize) -> Result<()> {
        let disk = bootcode::Disk::open(dev, false)?;
        let (table, _, identity) = disk.table()?;
        let Some(areas) = bootcode::areas(&table, disk.size()) else {
            bail!("{dev} has no partition table");
        };
        let data = disk.read_areas(&areas)?;
        let rel = format!("files/bootcode-{idx}");
        self.write_backup_file(&rel, &data)?;
        self.journal.append(&Entry::BootCode {
            device: dev.to_string(),
            areas,
            identity,
            backup: rel,
            sha256: atomic::sha256(&data),
        })
    }

    /// A backup copy in the run directory, durable (file and directory synced) before it is journaled.
    fn write_backup_file(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let host = self.dir.join(rel);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&host)
            .with_context(|| format!("creating backup {}", host.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing backup {}", host.display()))?;
        atomic::fsync_dir(&self.dir.join("files"))
    }

    fn backup(&mut self, path: &str, reason: &str) -> Result<()> {
        if self.backed_up.contains(path) {
            return Ok(());
        }
        let (parent, name) = split(path)?;
        let existing = if self.root.is_dir(&parent) {
            Dir::open(self.root, &parent)?.read(&name)?
        } else {
            Existing::Absent
        };
        self.seq += 1;
        let seq = self.seq;
        let entry = match existing {
            Existing::File { bytes, meta } => {
                let rel = format!("files/{seq}");
                self.write_backup_file(&rel, &bytes)?;
                Entry::Backup {
                    seq,
                    path: path.to_string(),
                    kind: Kind::File,
                    backup: Some(rel),
                    sha256: Some(atomic::sha256(&bytes)),
                    target: None,
                    meta,
                    reason: reason.to_string(),
                }
            }
            Existing::Symlink { target, meta } => Entry::Backup {
                seq,
                path: path.to_string(),
                kind: Kind::Symlink,
                backup: None,
                sha256: None,
                target: Some(target.to_string_lossy().into_owned()),
                meta,
                reason: reason.to_string(),
            },
            Existing::Absent => Entry::Backup {
                seq,
                path: path.to_string(),
                kind: Kind::Absent,
                backup: None,
                sha256: None,
                target: None,
                meta: Meta::default(),
                reason: reason.to_string(),
            },
            Existing::Other(t) => bail!("{} is {t}: cloudprep only changes regular files", path),
        };
        self.journal.append(&entry)?;
        self.backups.push(entry);
        self.backed_up.insert(path.to_string());
        Ok(())
    }

    fn undo(&mut self, path: &str) -> Result<()> {
        let e = self
            .backups
            .iter()
            .rev()
            .find(|e| matches!(e, Entry::Backup { path: p, .. } if p == path))
            .cloned();
        if let Some(e) = e {
            restore(self.root, &self.dir, &e)?;
            if let Entry::Backup { seq, .. } = e {
                self.journal.append(&Entry::Undone {
                    seq,
                    path: path.to_string(),
                })?;
            }
        }
        Ok(())
    }

    fn file(&mut self, pf: &PlannedFile) -> FileResult {
        let mut fr = FileResult {
            path: pf.path.clone(),
            resolved: pf.path.clone(),
            action: pf.action.to_string(),
            findings: pf.findings.clone(),
            status: "error".into(),
            message: String::new(),
        };
        if let Some(e) = &pf.error {
            fr.message = format!("not changed: the plan could not be computed: {e}");
            return fr;
        }
        match self.file_inner(pf, &mut fr) {
            Ok(()) => {}
            Err(e) => {
                fr.status = "error".into();
                fr.message = format!("{e:#}");
            }
        }
        fr
    }

    fn file_inner(&mut self, pf: &PlannedFile, fr: &mut FileResult) -> Result<()> {
        let root = self.root;
        let r = root.resolve(&pf.path)?;
        fr.resolved = r.guest.clone();
        let (parent, name) = split(&r.guest)?;
        let existing = if root.is_dir(&parent) {
            Dir::open(root, &parent)?.read(&name)?
        } else {
            Existing::Absent
        };
        let (exists, content, meta) = match existing {
            Existing::File { bytes, meta } => (
                true,
                crate::root::text_from_bytes(bytes)
                    .with_context(|| format!("reading {}", root.display(&r.guest)))?,
                Some(meta),
            ),
            Existing::Absent => (false, String::new(), None),
            Existing::Symlink { .. } => bail!("{} changed while resolving it", r.guest),
            Existing::Other(t) => bail!("{} is {t}: not changing it", root.display(&r.guest)),
        };
        let after = apply_edits(&pf.edits, exists, &content)
            .with_context(|| format!("applying the planned edits to {}", pf.path))?;
        match after {
            None => {
                // Remove the path itself (a symlink is removed, not its target).
                let lp = root.resolve_parent(&pf.path)?;
                let (lparent, lname) = split(&lp.guest)?;
                if !root.is_dir(&lparent) {
                    fr.status = "unchanged".into();
                    fr.message = "already absent".into();
                    return Ok(());
                }
                let d = Dir::open(root, &lparent)?;
                if matches!(d.read(&lname)?, Existing::Absent) {
                    fr.status = "unchanged".into();
                    fr.message = "already absent".into();
                    return Ok(());
                }
                fr.resolved = lp.guest.clone();
                self.backup(&lp.guest, "remove")?;
                d.unlink(&lname)?;
                self.applied(&lp.guest, "remove", None, pf)?;
                fr.action = "remove".into();
                fr.status = "applied".into();
                Ok(())
            }
            Some(text) if exists && text == content => {
                fr.status = "unchanged".into();
                fr.message = "already in the planned state".into();
                Ok(())
            }
            Some(text) => {
                self.backup(&r.guest, if exists { "rewrite" } else { "create" })?;
                let journal = &mut self.journal;
                let mut made: Vec<String> = Vec::new();
                let d = atomic::ensure_dir(root, &parent, &mut |p| {
                    made.push(p.to_string());
                    journal.append(&Entry::MkDir {
                        path: p.to_string(),
                    })
                })?;
                let meta = meta.unwrap_or_else(|| Meta {
                    mode: pf
                        .edits
                        .iter()
                        .find_map(|e| match &e.op {
                            EditOp::Rewrite { create_mode, .. } => Some(*create_mode),
                            EditOp::Remove => None,
                        })
                        .unwrap_or(0o644),
                    uid: 0,
                    gid: 0,
                    ..Meta::default()
                });
                d.write(&name, text.as_bytes(), &meta, false)?;
                let action = if exists { "rewrite" } else { "create" };
                fr.action = action.into();
                self.applied(&r.guest, action, Some(atomic::sha256(text.as_bytes())), pf)?;
                // Validate the file in place.
                let validator = pf
                    .edits
                    .iter()
                    .map(|e| e.validator)
                    .find(|v| *v != crate::check::Validator::None)
                    .unwrap_or(crate::check::Validator::None);
                let vname = validate::name(validator).to_string();
                let verdict = validate::validate(
                    validator,
                    root,
                    self.chroot.as_ref(),
                    &r.guest,
                    &d.host.join(&name),
                )
                .unwrap_or_else(|e| {
                    validate::Verdict::Fail(format!("validator could not run: {e:#}"))
                });
                match verdict {
                    validate::Verdict::Pass(note) => {
                        self.journal.append(&Entry::Validated {
                            seq: self.seq,
                            path: r.guest.clone(),
                            validator: vname,
                            note: note.clone(),
                        })?;
                        fr.status = "applied".into();
                        fr.message = format!("validated: {note}");
                    }
                    validate::Verdict::Fail(err) => {
                        self.journal.append(&Entry::Invalid {
                            seq: self.seq,
                            path: r.guest.clone(),
                            validator: vname,
                            error: err.clone(),
                        })?;
                        self.undo(&r.guest)?;
                        // Directories made for the rejected file go too (when empty).
                        for m in made.iter().rev() {
                            if let Ok((p, n)) = split(m) {
                                let _ = Dir::open(root, &p).and_then(|d| d.rmdir(&n));
                            }
                        }
                        fr.status = "undone".into();
                        fr.message =
                            format!("the new content was rejected and the file restored: {err}");
                    }
                }
                Ok(())
            }
        }
    }

    fn applied(
        &mut self,
        path: &str,
        action: &str,
        sha: Option<String>,
        pf: &PlannedFile,
    ) -> Result<()> {
        self.journal.append(&Entry::Applied {
            seq: self.seq,
            path: path.to_string(),
            action: action.to_string(),
            sha256: sha,
            findings: pf.findings.clone(),
        })
    }

    /// Run one planned command with its backups taken first. `Ok(false)` when it failed.
    fn command(&mut self, idx: usize, c: &PlannedCommand) -> Result<bool> {
        if let Some(inst) = esp::Install::parse(&c.argv) {
            return self.esp_install(idx, c, inst);
        }
        let eff = effects(&c.argv);
        let mut watched: Vec<(String, bool, Vec<String>)> = Vec::new();
        for t in &eff.trees {
            let canon = self.root.resolve(t.dir)?.guest;
            let entries = list_tree(self.root, &canon, t.recursive)?;
            for rel in &entries {
                let name = rel.rsplit('/').next().unwrap_or(rel);
                if !(t.backup)(name) {
                    continue;
                }
                let g = guest_join(&canon, rel);
                let lr = self.root.resolve_parent(&g)?;
                let is_dir = std::fs::symlink_metadata(&lr.host)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    self.backup(&g, &format!("before {}", c.argv.join(" ")))?;
                }
            }
            self.journal.append(&Entry::Snapshot {
                dir: canon.clone(),
                recursive: t.recursive,
                entries: entries.clone(),
            })?;
            watched.push((canon, t.recursive, entries));
        }
        let (mut reversible, mut note) = (eff.reversible, eff.note.to_string());
        if let Some(dev) = bootcode::install_device(&c.argv) {
            match self.save_bootcode(&dev, idx) {
                Ok(()) => {
                    reversible = true;
                    note = format!(
                        "files under /boot/grub and the boot code on {dev} are restored (while its partition table is unchanged)"
                    );
                }
                Err(e) => note = format!("{note} (not saved: {e:#})"),
            }
        }
        self.journal.append(&Entry::CommandStart {
            idx,
            argv: c.argv.clone(),
            phase: c.phase,
            reversible,
            note,
        })?;
        let outcome = if !self.root.is_live() && self.chroot.is_none() {
            exec::Outcome {
                status: None,
                signal: None,
                output: "cannot run commands in this guest root".into(),
                ..Default::default()
            }
        } else if exec::find_in_guest(self.root, &c.argv[0]).is_none() {
            exec::Outcome {
                status: Some(127),
                signal: None,
                output: format!("{}: not found in the guest", c.argv[0]),
                ..Default::default()
            }
        } else {
            match exec::run_with_input(
                self.chroot.as_ref(),
                &c.argv,
                c.stdin.as_deref(),
                self.command_timeout,
            ) {
                Ok(o) => o,
                Err(e) => exec::Outcome {
                    status: None,
                    signal: None,
                    output: format!("{e:#}"),
                    ..Default::default()
                },
            }
        };
        self.journal.append(&Entry::CommandDone {
            idx,
            argv: c.argv.clone(),
            status: outcome.status,
            signal: outcome.signal,
            ok: outcome.ok(),
            output: outcome.output.clone(),
        })?;
        for (dir, recursive, before) in watched {
            let before: HashSet<String> = before.into_iter().collect();
            let new: Vec<String> = list_tree(self.root, &dir, recursive)?
                .into_iter()
                .filter(|e| !before.contains(e))
                .collect();
            self.journal.append(&Entry::Created { dir, entries: new })?;
        }
        self.report.commands.push(CommandResult {
            argv: c.argv.clone(),
            phase: c.phase,
            status: outcome.status,
            ok: outcome.ok(),
            output: outcome.output.clone(),
        });
        if !outcome.ok() {
            self.report.errors.push(format!(
                "`{}` failed ({}): {}",
                c.argv.join(" "),
                outcome.describe(),
                last_lines(&outcome.output, 5)
            ));
        }
        Ok(outcome.ok())
    }
}

impl Run<'_> {
    /// `cloudprep esp-install`: done by cloudprep itself, journaled like a command.
    fn esp_install(
        &mut self,
        idx: usize,
        c: &PlannedCommand,
        inst: Result<esp::Install>,
    ) -> Result<bool> {
        self.journal.append(&Entry::CommandStart {
            idx,
            argv: c.argv.clone(),
            phase: c.phase,
            reversible: true,
            note: "done by cloudprep itself: every file or byte range it writes is backed up first"
                .into(),
        })?;
        let res = inst.and_then(|i| match &i.target {
            esp::Target::Dir(d) => self.esp_copy_files(d, &i.copies),
            esp::Target::Device {
                device,
                offset,
                length,
            } => self.esp_write_fat(idx, device, *offset, *length, &i.copies),
        });
        let (ok, output) = match res {
            Ok(m) => (true, m),
            Err(e) => (false, format!("{e:#}")),
        };
        self.journal.append(&Entry::CommandDone {
            idx,
            argv: c.argv.clone(),
            status: Some(if ok { 0 } else { 1 }),
            signal: None,
            ok,
            output: output.clone(),
        })?;
        self.report.commands.push(CommandResult {
            argv: c.argv.clone(),
            phase: c.phase,
            status: Some(if ok { 0 } else { 1 }),
            ok,
            output: output.clone(),
        });
        if !ok {
            self.report
                .errors
                .push(format!("`{}` failed: {output}", c.argv.join(" ")));
        }
        Ok(ok)
    }

    /// Copies inside a mounted ESP: guest file writes (backed up, atomic, undone by rollback). The new
    /// file takes the source's mode and owner (what the vfat mount gives every file).
    fn esp_copy_files(&mut self, dir: &str, copies: &[(String, String)]) -> Result<String> {
        let mut done = Vec::new();
        for (src, dst) in copies {
            let sp = guest_join(dir, src);
            let (sparent, sname) = split(&self.root.resolve(&sp)?.guest)?;
            let Existing::File { bytes, mut meta } =
                Dir::open(self.root, &sparent)?.read(&sname)?
            else {
                bail!("{} is not a regular file", self.root.display(&sp));
            };
            if bytes.len() as u64 > esp::MAX_FILE {
                bail!(
                    "{} is larger than {} bytes",
                    self.root.display(&sp),
                    esp::MAX_FILE
                );
            }
            meta.xattrs.clear();
            let r = self.root.resolve(guest_join(dir, dst))?;
            let (parent, name) = split(&r.guest)?;
            if self.root.is_dir(&parent) {
                if let Existing::File { bytes: cur, .. } =
                    Dir::open(self.root, &parent)?.read(&name)?
                {
                    if cur == bytes {
                        continue;
                    }
                }
            }
            self.backup(&r.guest, "esp-install")?;
            let journal = &mut self.journal;
            let d = atomic::ensure_dir(self.root, &parent, &mut |p| {
                journal.append(&Entry::MkDir {
                    path: p.to_string(),
                })
            })?;
            d.write(&name, &bytes, &meta, false)?;
            self.journal.append(&Entry::Applied {
                seq: self.seq,
                path: r.guest.clone(),
                action: "create".into(),
                sha256: Some(atomic::sha256(&bytes)),
                findings: vec!["boot.grub-installed".into()],
            })?;
            done.push(format!("{} ({} bytes)", r.guest, bytes.len()));
        }
        Ok(if done.is_empty() {
            "already in place".into()
        } else {
            format!("wrote {}", done.join(", "))
        })
    }

    /// Copies inside an unmounted ESP, through cloudprep's FAT writer: the old bytes of every range are
    /// saved and journaled before anything is written; the result is read back and compared.
    fn esp_write_fat(
        &mut self,
        idx: usize,
        device: &str,
        offset: u64,
        length: u64,
        copies: &[(String, String)],
    ) -> Result<String> {
        if let Some(m) = esp::mounted_at(device)? {
            bail!("{device} is mounted at {m}: refusing to write its FAT behind the kernel's back");
        }
        let file = esp::open_device(device, true)?;
        let plan = esp::plan_fat(&file, offset, length, copies)
            .with_context(|| format!("the FAT filesystem on {device} at byte {offset}"))?;
        if plan.is_empty() {
            return Ok("already in place".into());
        }
        let areas = plan.areas();
        let old = esp::read_areas(&file, device, &areas)?;
        let new = plan.new_bytes();
        let (rel_old, rel_new) = (
            format!("files/esp-{idx}.old"),
            format!("files/esp-{idx}.new"),
        );
        self.write_backup_file(&rel_old, &old)?;
        self.write_backup_file(&rel_new, &new)?;
        self.journal.append(&Entry::EspWrite {
            device: device.to_string(),
            areas: areas.clone(),
            backup: rel_old,
            sha256: atomic::sha256(&old),
            written: rel_new,
            written_sha256: atomic::sha256(&new),
        })?;
        plan.apply(&file, device)?;
        // Read the result back through a fresh view of the filesystem.
        let v = crate::fat::Volume::open(&file, offset, length)?;
        for (src, dst) in copies {
            let a = v.read_file(src, esp::MAX_FILE)?;
            let b = v.read_file(dst, esp::MAX_FILE)?;
            if a.is_none() || a != b {
                bail!(
                    "{} does not read back as a copy of {}",
                    crate::fat::dos(dst),
                    crate::fat::dos(src)
                );
            }
        }
        Ok(format!(
            "{} ({} byte ranges, {} bytes, old bytes saved)",
            plan.changes.join(", "),
            areas.len(),
            new.len()
        ))
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.trim_end().lines().collect();
    v[v.len().saturating_sub(n)..].join(" | ")
}

/// Execute `plan` on `root` transactionally. Unfinished earlier runs are rolled back first.
pub fn execute(root: &Root, config: &Config, plan: &Plan, opts: &ExecOptions) -> Result<RunReport> {
    let _l = lock(root)?;
    recover_locked(root)?;
    let mut report = RunReport {
        run_id: None,
        state: "nothing".into(),
        files: Vec::new(),
        commands: Vec::new(),
        errors: Vec::new(),
        irreversible: Vec::new(),
        journal_steps: 0,
    };
    if plan.is_empty() {
        return Ok(report);
    }
    let runs = runs_dir(root)?;
    let now = std::time::SystemTime::now();
    let seq = std::fs::read_dir(&runs.host)
        .with_context(|| format!("listing {}", root.display(RUNS_DIR)))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.rsplit_once('-')
                .and_then(|(_, s)| s.parse::<usize>().ok())
        })
        .max()
        .unwrap_or(0)
        + 1;
    let id = journal::new_run_id(now, seq);
    runs.mkdir(&id)?;
    let dir = runs.host.join(&id);
    std::fs::create_dir(dir.join("files")).context("creating the backup area")?;
    atomic::fsync_dir(&dir)?;
    let mut journal = Journal::create(&dir)?;
    let unix = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    journal.append(&Entry::Begin {
        id: id.clone(),
        time: journal::rfc3339(unix),
        unix,
        root: root.base().display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        files: plan.files.iter().map(|f| f.path.clone()).collect(),
        commands: plan.commands.iter().map(|c| c.argv.clone()).collect(),
    })?;
    report.run_id = Some(id.clone());
    let chroot = if root.is_live() {
        None
    } else {
        let links = exec::guest_dev_links(root, &opts.filesystems);
        match exec::Chroot::new(root, &links) {
            Ok(c) => Some(c),
            // Without a chroot, commands cannot run (and must never run on the host instead).
            Err(e)
                if plan
                    .commands
                    .iter()
                    .all(|c| esp::Install::parse(&c.argv).is_some()) =>
            {
                log::warn!("{e:#}: validators that run guest programs are skipped");
                None
            }
            Err(e) => {
                let _ = journal.append(&Entry::Finished {
                    state: "failed".into(),
                    summary: format!("{e:#}"),
                });
                let _ = rollback_dir(root, &id, &dir, "the guest cannot run commands");
                return Err(e);
            }
        }
    };
    let mut run = Run {
        root,
        dir: dir.clone(),
        journal,
        seq: 0,
        backed_up: HashSet::new(),
        backups: Vec::new(),
        chroot,
        command_timeout: config.fix.command_limit(),
        report,
    };
    let res = forward(&mut run, plan);
    let failed = match &res {
        Ok(ok) => !ok,
        Err(e) => {
            run.report.errors.push(format!("{e:#}"));
            true
        }
    };
    let summary = format!(
        "{} file(s) applied, {} undone, {} command(s)",
        run.report
            .files
            .iter()
            .filter(|f| f.status == "applied")
            .count(),
        run.report
            .files
            .iter()
            .filter(|f| f.status == "undone")
            .count(),
        run.report.commands.len()
    );
    let fin = Entry::Finished {
        state: if failed { "failed" } else { "applied" }.into(),
        summary,
    };
    let mut report = if let Err(e) = run.journal.append(&fin) {
        run.report.errors.push(format!("{e:#}"));
        run.report
    } else {
        run.report
    };
    if failed {
        match rollback_dir(root, &id, &dir, "a step of the run failed") {
            Ok(rb) => {
                report.irreversible = rb.irreversible;
                report.errors.extend(rb.errors);
                for f in &mut report.files {
                    if f.status == "applied" {
                        f.status = "rolled-back".into();
                    }
                }
            }
            Err(e) => report.errors.push(format!("rollback failed: {e:#}")),
        }
        report.state = "rolled-back".into();
    } else if report
        .files
        .iter()
        .any(|f| f.status == "undone" || f.status == "error")
    {
        report.state = "partial".into();
    } else {
        report.state = "applied".into();
    }
    report.journal_steps = journal::steps_written();
    Ok(report)
}

/// Pre commands, files, Post commands. `Ok(false)` when a command failed (the run is rolled back).
fn forward(run: &mut Run, plan: &Plan) -> Result<bool> {
    let mut idx = 0;
    for c in plan.commands.iter().filter(|c| c.phase == Phase::Pre) {
        idx += 1;
        if !run.command(idx, c)? {
            return Ok(false);
        }
    }
    for pf in &plan.files {
        let fr = run.file(pf);
        run.report.files.push(fr);
    }
    for c in plan.commands.iter().filter(|c| c.phase == Phase::Post) {
        idx += 1;
        if !run.command(idx, c)? {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------------
// Rollback

/// Restore one backed-up path to its original state (idempotent).
fn restore(root: &Root, run_dir: &std::path::Path, e: &Entry) -> Result<()> {
    let Entry::Backup {
        path,
        kind,
        backup,
        sha256,
        target,
        meta,
        ..
    } = e
    else {
        return Ok(());
    };
    let (parent, name) = split(path)?;
    match kind {
        Kind::Absent => {
            if !root.is_dir(&parent) {
                return Ok(());
            }
            let d = Dir::open(root, &parent)?;
            match d.read(&name)? {
                Existing::Absent => Ok(()),
                Existing::File { .. } | Existing::Symlink { .. } => d.unlink(&name),
                Existing::Other(t) => bail!("{path} is {t} now: not removing it"),
            }
        }
        Kind::File => {
            let rel = backup.as_deref().unwrap_or_default();
            let bp = run_dir.join(rel);
            let bytes =
                std::fs::read(&bp).with_context(|| format!("reading backup {}", bp.display()))?;
            if sha256.as_deref() != Some(atomic::sha256(&bytes).as_str()) {
                bail!(
                    "backup {} of {path} is damaged (checksum mismatch): not restoring it",
                    bp.display()
                );
            }
            let d = atomic::ensure_dir(root, &parent, &mut |_| Ok(()))?;
            if let Existing::File {
                bytes: cur,
                meta: m,
            } = d.read(&name)?
            {
                if cur == bytes && &m == meta {
                    return Ok(());
                }
            }
            d.write(&name, &bytes, meta, true)
        }
        Kind::Symlink => {
            let t = target.as_deref().unwrap_or_default();
            let d = atomic::ensure_dir(root, &parent, &mut |_| Ok(()))?;
            if let Existing::Symlink { target: cur, .. } = d.read(&name)? {
                if cur == std::path::Path::new(t) {
                    return Ok(());
                }
            }
            d.symlink(&name, std::path::Path::new(t), meta)
        }
    }
}

/// Roll back the run in `dir`: restore every backup (newest first, so the oldest copy wins), remove what
/// commands added to the watched trees, remove the directories the run created, and mark the run rolled
/// back.
/// Write saved boot code back. `Ok(Some(reason))` when it is left alone on purpose.
fn restore_bootcode(dir: &std::path::Path, e: &Entry) -> Result<Option<String>> {
    let Entry::BootCode {
        device,
        areas,
        identity,
        backup,
        sha256,
    } = e
    else {
        return Ok(None);
    };
    let host = dir.join(backup);
    let data = std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
    if atomic::sha256(&data) != *sha256 {
        bail!("the saved copy {} is damaged", host.display());
    }
    let disk = bootcode::Disk::open(device, true)?;
    let (_, _, now) = disk.table()?;
    if now != *identity {
        return Ok(Some(format!(
            "{device} no longer has the partition table it had during the run (repartitioned, or another \
             disk under that name): its boot code was not restored"
        )));
    }
    if disk.read_areas(areas)? != data {
        disk.write_areas(areas, &data)?;
    }
    Ok(None)
}

fn rollback_dir(
    root: &Root,
    id: &str,
    dir: &std::path::Path,
    reason: &str,
) -> Result<RollbackReport> {
    let entries = journal::read(dir)?;
    let mut j = Journal::open(dir)?;
    j.append(&Entry::RollbackStart {
        reason: reason.to_string(),
    })?;
    let mut rep = RollbackReport {
        run_id: id.to_string(),
        reason: reason.to_string(),
        restored: Vec::new(),
        removed: Vec::new(),
        irreversible: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    // Where each path was first backed up: a file a command created and a later step backed up must end
    // up absent, not restored from that later backup.
    let mut first_backup: std::collections::HashMap<String, usize> = Default::default();
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Backup { path, .. } = e {
            first_backup.entry(path.clone()).or_insert(i);
        }
    }
    // 1. Backups, newest first. A file changed since the run wrote it loses that later change: say so.
    let mut written: std::collections::BTreeMap<&str, Option<&str>> = Default::default();
    for e in &entries {
        match e {
            Entry::Applied { path, sha256, .. } => {
                written.insert(path, sha256.as_deref());
            }
            Entry::Undone { path, .. } => {
                written.remove(path.as_str());
            }
            _ => {}
        }
    }
    let finished = entries.iter().any(|e| matches!(e, Entry::Finished { .. }));
    for (path, sha) in written.iter().filter(|_| finished) {
        let cur = root.read(path).ok().flatten().map(|b| atomic::sha256(&b));
        if cur.as_deref() != *sha {
            rep.warnings.push(format!(
                "{path} was changed after the run; the original from before the run is restored"
            ));
        }
    }
    for e in entries.iter().rev() {
        if let Entry::Backup { path, kind, .. } = e {
            match restore(root, dir, e) {
                Ok(()) => {
                    if *kind == Kind::Absent {
                        rep.removed.push(path.clone())
                    } else {
                        rep.restored.push(path.clone())
                    }
                }
                Err(err) => rep.errors.push(format!("restoring {path}: {err:#}")),
            }
        }
    }
    // 2. New entries in watched trees (files a command created), deepest first.
    for e in entries.iter().rev() {
        let Entry::Snapshot {
            dir: tdir,
            recursive,
            entries: before,
        } = e
        else {
            continue;
        };
        // What the command created, as recorded when it finished; when it never finished (the run was
        // interrupted during the command), whatever is new in the tree since the snapshot.
        let pos = entries.iter().position(|x| std::ptr::eq(x, e)).unwrap_or(0);
        let recorded = entries[pos..].iter().find_map(|x| match x {
            Entry::Created { dir: d, entries } if d == tdir => Some(entries.clone()),
            _ => None,
        });
        let created = match recorded {
            Some(c) => c,
            None => {
                let before: HashSet<&String> = before.iter().collect();
                match list_tree(root, tdir, *recursive) {
                    Ok(n) => n.into_iter().filter(|x| !before.contains(x)).collect(),
                    Err(err) => {
                        rep.errors.push(format!("{err:#}"));
                        continue;
                    }
                }
            }
        };
        let mut new: Vec<&String> = created.iter().collect();
        new.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
        for rel in new {
            let g = guest_join(tdir, rel);
            if first_backup.get(&g).is_some_and(|&q| q < pos) {
                continue; // it existed before this command: restored from its backup above
            }
            let r = (|| -> Result<bool> {
                let (p, n) = split(&g)?;
                let d = Dir::open(root, &p)?;
                match d.read(&n)? {
                    Existing::File { .. } | Existing::Symlink { .. } => {
                        d.unlink(&n)?;
                        Ok(true)
                    }
                    Existing::Other("a directory") => d.rmdir(&n),
                    _ => Ok(false),
                }
            })();
            match r {
                Ok(true) => rep.removed.push(g),
                Ok(false) => {}
                Err(err) => rep.errors.push(format!("removing {g}: {err:#}")),
            }
        }
    }
    // 3. Directories the run created.
    for e in entries.iter().rev() {
        if let Entry::MkDir { path } = e {
            let r = split(path).and_then(|(p, n)| {
                if root.is_dir(&p) {
                    Dir::open(root, &p)?.rmdir(&n)
                } else {
                    Ok(false)
                }
            });
            match r {
                Ok(true) => rep.removed.push(path.clone()),
                Ok(false) => {}
                Err(err) => rep.errors.push(format!("removing {path}: {err:#}")),
            }
        }
    }
    // 4. Boot code written to disks, when the disk still has the same partition table; ESP ranges
    // written by the FAT writer, when they still hold what the run wrote.
    for e in entries.iter().rev() {
        if let Entry::EspWrite { device, .. } = e {
            match esp::restore(dir, e) {
                Ok(None) => rep
                    .restored
                    .push(format!("{device} (EFI system partition)")),
                Ok(Some(why)) => rep.warnings.push(why),
                Err(err) => rep.errors.push(format!(
                    "restoring the EFI system partition on {device}: {err:#}"
                )),
            }
        }
        if let Entry::BootCode { device, .. } = e {
            match restore_bootcode(dir, e) {
                Ok(None) => rep.restored.push(format!("{device} (boot code)")),
                Ok(Some(why)) => rep.warnings.push(why),
                Err(err) => rep
                    .errors
                    .push(format!("restoring the boot code of {device}: {err:#}")),
            }
        }
    }
    for e in &entries {
        if let Entry::CommandStart {
            argv,
            reversible: false,
            ..
        } = e
        {
            rep.irreversible.push(argv.clone());
        }
    }
    j.append(&Entry::RolledBack {
        irreversible: rep.irreversible.clone(),
        errors: rep.errors.clone(),
        warnings: rep.warnings.clone(),
    })?;
    Ok(rep)
}

// ---------------------------------------------------------------------------------------------------
// Commands

/// The plan as text: the unified diffs exactly, then the commands.
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

fn render_rollback(r: &RollbackReport) -> String {
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

pub fn cmd_fix(g: &Global, a: &FixArgs) -> Result<i32> {
    // An unreadable root or config is an error of the command: exit 3, reported once by cli::main.
    let (root, config) = crate::report::open(g)?;
    let sel = Selection {
        only: a.select.only.clone(),
        skip: a.select.skip.clone(),
    };
    let interactive = !a.yes && std::io::stdin().is_terminal();
    let may_change = !a.dry_run && (a.yes || interactive);
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

pub fn cmd_rollback(g: &Global, a: &RollbackArgs) -> Result<i32> {
    let root = match Root::new(&g.root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cloudprep: error: {e:#}");
            return Ok(EXIT_FAILURE);
        }
    };
    let (recovered, rep) = rollback(&root, a.run_id.as_deref())?;
    let mut errors = 0;
    for r in recovered.iter().chain(rep.iter()) {
        print!("{}", render_rollback(r));
        errors += r.errors.len();
    }
    if recovered.is_empty() && rep.is_none() {
        println!("nothing to roll back");
    }
    Ok(if errors > 0 { EXIT_BLOCKERS } else { 0 })
}

pub fn cmd_runs(g: &Global, a: &RunsArgs) -> Result<i32> {
    let root = match Root::new(&g.root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cloudprep: error: {e:#}");
            return Ok(EXIT_FAILURE);
        }
    };
    let runs = list_runs(&root)?;
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&runs)? + "\n",
        Format::Text => {
            let mut s = format!(
                "{:<26} {:<21} {:<13} {:>5} {:>8}\n",
                "ID", "TIME", "STATE", "FILES", "COMMANDS"
            );
            for r in &runs {
                s.push_str(&format!(
                    "{:<26} {:<21} {:<13} {:>5} {:>8}\n",
                    r.id,
                    r.time,
                    r.state.as_str(),
                    r.files.len(),
                    r.commands.len()
                ));
            }
            s
        }
    };
    crate::report::emit(None, &out)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_effects() {
        let e = effects(&argv(&["update-initramfs", "-u", "-k", "all"]));
        assert!(e.reversible);
        assert!(e
            .trees
            .iter()
            .any(|t| t.dir == "/boot" && (t.backup)("initrd.img-6.1.0-9-amd64")));
        assert!(!e
            .trees
            .iter()
            .any(|t| t.dir == "/boot" && (t.backup)("vmlinuz-6.1.0-9-amd64")));
        let e = effects(&argv(&["/usr/sbin/update-grub"]));
        assert!(e.reversible && e.trees.iter().any(|t| (t.backup)("grub.cfg")));
        assert!(!effects(&argv(&["grub-install", "/dev/vda"])).reversible);
        let e = effects(&argv(&["apt-get", "install", "-y", "cloud-init"]));
        assert!(!e.reversible);
        assert!(e.trees.iter().any(|t| t.dir == "/var/cache/debconf"));
        assert!(!effects(&argv(&["some-tool"])).reversible);
        assert!(effects(&argv(&["systemctl", "enable", "x.service"])).reversible);
        assert!(!effects(&argv(&["systemctl", "start", "x.service"])).reversible);
    }

    #[test]
    fn plan_text_is_the_diffs_then_the_commands() {
        let root_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root_dir.path().join("etc")).unwrap();
        std::fs::write(root_dir.path().join("etc/x"), "a\n").unwrap();
        let root = Root::new(root_dir.path()).unwrap();
        let info = crate::check::CheckInfo {
            id: "t.x",
            title: "t",
            area: crate::check::Area::Boot,
            severity: Severity::Warning,
            fixable: true,
        };
        let f = crate::check::Finding::new(&info, "m").fix(
            crate::check::Fix::default()
                .edit(crate::check::FileEdit::rewrite(
                    "/etc/x",
                    crate::check::Validator::None,
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
