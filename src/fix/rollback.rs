//! Rollback and recovery: undo a run from its journal, newest step first.

use super::*;

/// Roll back every run that did not finish (interrupted, or interrupted while rolling back).
pub fn recover(root: &Root) -> Result<Vec<RollbackReport>> {
    if !root.is_dir(RUNS_DIR) {
        return Ok(Vec::new());
    }
    let _l = lock(root)?;
    recover_locked(root)
}

pub(super) fn recover_locked(root: &Root) -> Result<Vec<RollbackReport>> {
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

/// Restore one backed-up path to its original state (idempotent).
pub(super) fn restore(root: &Root, run_dir: &std::path::Path, e: &Entry) -> Result<()> {
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

pub(super) fn rollback_dir(
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
