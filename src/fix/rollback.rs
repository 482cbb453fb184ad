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
                &run_dir(root, &r.id)?,
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
        Some(r) => Some(rollback_dir(
            root,
            &r.id,
            &run_dir(root, &r.id)?,
            "requested",
        )?),
        None => None,
    };
    Ok((recovered, rep))
}

/// The bytes of a backup copy named by the journal: only `files/<digits>` or `files/bootcode-<digits>`
/// inside the run directory, a regular file read without following a symlink. (The journal is guest data:
/// `/etc/shadow`, `../../x` or `/dev/zero` there are refused.)
pub(super) fn backup_bytes(run: &Dir, rel: &str) -> Result<Vec<u8>> {
    let name = rel
        .strip_prefix("files/")
        .filter(|n| {
            let digits = n.strip_prefix("bootcode-").unwrap_or(n);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .ok_or_else(|| {
            anyhow::anyhow!("the journal names the backup copy {rel:?}: not one cloudprep writes")
        })?;
    match run.open_sub("files")?.read(name)? {
        Existing::File { bytes, .. } => Ok(bytes),
        Existing::Absent => bail!("backup copy {}/{rel} is missing", run.guest),
        _ => bail!("backup copy {}/{rel} is not a regular file", run.guest),
    }
}

/// Restore one backed-up path to its original state (idempotent).
pub(super) fn restore(root: &Root, run_dir: &Dir, e: &Entry) -> Result<()> {
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
            let bytes = backup_bytes(run_dir, rel)?;
            if sha256.as_deref() != Some(atomic::sha256(&bytes).as_str()) {
                bail!(
                    "backup {}/{rel} of {path} is damaged (checksum mismatch): not restoring it",
                    run_dir.guest
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

/// The whole disk (`/sys/class/block` name and `MAJ:MIN`) that holds the guest's root filesystem now.
fn root_disk(root: &Root) -> Result<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.base())
        .with_context(|| format!("inspecting {}", root.base().display()))?;
    // A root that is a plain directory (a copied tree) has no disk of its own: its st_dev is the host's.
    let base = root.base();
    if base != std::path::Path::new("/") {
        let parent = base.join("..");
        let pm = std::fs::metadata(&parent)
            .with_context(|| format!("inspecting {}", parent.display()))?;
        if pm.dev() == m.dev() {
            bail!(
                "the root {} is not a mount point: it has no disk of its own to write to",
                base.display()
            );
        }
    }
    let id = format!("{}:{}", libc::major(m.dev()), libc::minor(m.dev()));
    let disks = crate::lifecycle::disks_of_dev(std::path::Path::new("/sys"), &id)
        .with_context(|| format!("finding the disk of {} ({id})", root.base().display()))?;
    let [disk] = disks.as_slice() else {
        bail!(
            "the root {} is not on exactly one disk ({disks:?})",
            root.base().display()
        );
    };
    let dev = std::fs::read_to_string(format!("/sys/class/block/{disk}/dev"))
        .with_context(|| format!("reading /sys/class/block/{disk}/dev"))?;
    Ok((disk.clone(), dev.trim().to_string()))
}

/// Write saved boot code back. `Ok(Some(reason))` when it is left alone on purpose.
///
/// The journal is guest data, so nothing in it is trusted for the host: the device must be the block
/// device that holds the guest's root now, the areas must be exactly the MBR code area and the embedding
/// gap computed from that disk's current partition table (never the table itself), and the disk must still
/// have the partition table it had during the run.
fn restore_bootcode(root: &Root, run: &Dir, e: &Entry) -> Result<Option<String>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    let (disk_name, disk_id) = root_disk(root)?;
    let m = std::fs::metadata(device).with_context(|| format!("inspecting {device}"))?;
    let is_root_disk = m.file_type().is_block_device()
        && format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())) == disk_id;
    if !is_root_disk {
        bail!(
            "{device} is not the disk that holds the guest's root ({disk_name}, {disk_id}): its boot \
             code is not written"
        );
    }
    let data = backup_bytes(run, backup)?;
    if atomic::sha256(&data) != *sha256 {
        bail!("the saved copy {}/{backup} is damaged", run.guest);
    }
    let disk = bootcode::Disk::open(device, true)?;
    let (table, _, now) = disk.table()?;
    if now != *identity {
        return Ok(Some(format!(
            "{device} no longer has the partition table it had during the run (repartitioned, or another \
             disk under that name): its boot code was not restored"
        )));
    }
    let expected = bootcode::areas(&table, disk.size());
    if expected.as_deref() != Some(areas.as_slice()) {
        bail!(
            "the journal's boot code areas of {device} ({areas:?}) are not the ones its partition table \
             gives ({expected:?}): not written"
        );
    }
    if disk.read_areas(areas)? != data {
        disk.write_areas(areas, &data)?;
    }
    Ok(None)
}

/// What the journal proves about the state a run left a path in.
enum Proof {
    /// The run wrote this content (sha256; None: it removed the path).
    Wrote(Option<String>),
    /// A command that finished at this time (ns) may have changed it: a change no later is the command's.
    CommandUntil(i64),
}

/// The last thing the run (entries after the backup at `at`) proves it did to `path`.
fn proof_of(entries: &[Entry], at: usize, path: &str, by_command: bool) -> Option<Proof> {
    let mut p = None;
    for e in &entries[at + 1..] {
        match e {
            Entry::Applied {
                path: q, sha256, ..
            } if q == path => p = Some(Proof::Wrote(sha256.clone())),
            Entry::Undone { path: q, .. } if q == path => p = None,
            Entry::CommandDone {
                time_ns: Some(t), ..
            } if by_command => p = Some(Proof::CommandUntil(*t)),
            _ => {}
        }
    }
    p
}

fn ctime_ns(st: &libc::stat) -> i64 {
    st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
}

/// Is the path now what the run left (so restoring its backup loses nothing)? `d`/`name`: where it is.
fn is_the_runs(d: &Dir, name: &str, cur: &Existing, proof: &Option<Proof>) -> Result<bool> {
    Ok(match (proof, cur) {
        (Some(Proof::Wrote(None)), Existing::Absent) => true,
        (Some(Proof::Wrote(Some(s))), Existing::File { bytes, .. }) => atomic::sha256(bytes) == *s,
        (Some(Proof::CommandUntil(t)), _) => d.stat(name)?.is_none_or(|st| ctime_ns(&st) <= *t),
        _ => false,
    })
}

/// Is `cur` the state the backup entry `e` recorded (restoring changes nothing that matters)?
fn is_original(cur: &Existing, e: &Entry) -> bool {
    let Entry::Backup {
        kind,
        sha256,
        target,
        ..
    } = e
    else {
        return false;
    };
    match (kind, cur) {
        (Kind::Absent, Existing::Absent) => true,
        (Kind::File, Existing::File { bytes, .. }) => {
            sha256.as_deref() == Some(atomic::sha256(bytes).as_str())
        }
        (Kind::Symlink, Existing::Symlink { target: t, .. }) => {
            target.as_deref() == Some(&*t.to_string_lossy())
        }
        _ => false,
    }
}

/// Before restoring `path` over a version the journal does not prove is the run's: keep that version in
/// the run directory (`later/<seq>`) and say where. Returns the warning.
fn keep_later(run: &Dir, seq: u64, path: &str, cur: &Existing) -> Result<String> {
    match cur {
        Existing::File { bytes, meta } => {
            run.mkdir_new("later", 0o700)?;
            let later = run.open_sub("later")?;
            let name = seq.to_string();
            if later.stat(&name)?.is_none() {
                let mut f = later.create_new(&name, meta.mode)?;
                std::io::Write::write_all(&mut f, bytes)
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("keeping {path} in {}/{name}", later.guest))?;
                later.sync()?;
            }
            Ok(format!(
                "{path} was changed after the run; the original from before the run is restored and \
                 the later version kept in {}/{name}",
                later.guest
            ))
        }
        Existing::Symlink { target, .. } => Ok(format!(
            "{path} was changed after the run (a link to {}); the original from before the run is restored",
            target.display()
        )),
        _ => Ok(format!(
            "{path} was changed after the run; the original from before the run is restored"
        )),
    }
}

/// Roll back the run in `dir`: restore every backup (newest first, so the oldest copy wins), remove what
/// commands added to the watched trees, remove the directories the run created, and mark the run rolled
/// back.
///
/// Later work is never destroyed: a backed-up path whose current state the journal does not prove to be
/// the run's is restored only after that version is kept in the run directory (and named), and an entry
/// that appeared in a watched tree is removed only when the journal proves the run's command created it
/// (it finished, and the entry has not changed since); anything else is kept and named.
pub(super) fn rollback_dir(
    root: &Root,
    id: &str,
    dir: &Dir,
    reason: &str,
) -> Result<RollbackReport> {
    let entries = journal::read(dir)?;
    let mut rep = RollbackReport {
        run_id: id.to_string(),
        reason: reason.to_string(),
        restored: Vec::new(),
        removed: Vec::new(),
        irreversible: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    // On a full disk the journal may not take another line: the rollback is done all the same (it is
    // idempotent, and the run stays marked unfinished, so the next fix or rollback does it again).
    let mut j = match Journal::open(dir).and_then(|mut j| {
        j.append(&Entry::RollbackStart {
            reason: reason.to_string(),
        })?;
        Ok(j)
    }) {
        Ok(j) => Some(j),
        Err(e) => {
            rep.errors.push(format!(
                "the journal cannot be updated ({e:#}): rolling back anyway; run `cloudprep rollback` again once there is space"
            ));
            None
        }
    };
    // Where each path was first backed up: a file a command created and a later step backed up must end
    // up absent, not restored from that later backup.
    let mut first_backup: std::collections::HashMap<String, usize> = Default::default();
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Backup { path, .. } = e {
            first_backup.entry(path.clone()).or_insert(i);
        }
    }
    // 1. Backups, newest first. A path changed since the run (as far as the journal can tell) keeps that
    // later version in the run directory, named in a warning.
    for (i, e) in entries.iter().enumerate().rev() {
        let Entry::Backup {
            seq,
            path,
            kind,
            reason: why,
            ..
        } = e
        else {
            continue;
        };
        let r = (|| -> Result<()> {
            if first_backup.get(path) == Some(&i) {
                let (parent, name) = split(path)?;
                if root.is_dir(&parent) {
                    let d = Dir::open(root, &parent)?;
                    let cur = d.read(&name)?;
                    let proof = proof_of(&entries, i, path, why.starts_with("before "));
                    if !is_original(&cur, e)
                        && !is_the_runs(&d, &name, &cur, &proof)?
                        && !matches!(cur, Existing::Absent)
                    {
                        rep.warnings.push(keep_later(dir, *seq, path, &cur)?);
                    }
                }
            }
            restore(root, dir, e)
        })();
        match r {
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
    // 2. New entries in watched trees (files a command created), deepest first.
    for (pos, e) in entries.iter().enumerate().rev() {
        let Entry::Snapshot {
            dir: tdir,
            recursive,
            entries: before,
        } = e
        else {
            continue;
        };
        // The command the snapshot was taken for: when it finished, and what it created (recorded when
        // it finished). Interrupted during the command: whatever is new in the tree since the snapshot.
        let done = entries[pos..].iter().find_map(|x| match x {
            Entry::CommandDone { time_ns, .. } => Some(*time_ns),
            _ => None,
        });
        let recorded = entries[pos..].iter().find_map(|x| match x {
            Entry::Created { dir: d, entries } if d == tdir => Some(entries.clone()),
            _ => None,
        });
        let created = match &recorded {
            Some(c) => c.clone(),
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
            let r = (|| -> Result<Option<bool>> {
                let (p, n) = split(&g)?;
                if !root.is_dir(&p) {
                    return Ok(Some(false));
                }
                let d = Dir::open(root, &p)?;
                let Some(st) = d.stat(&n)? else {
                    return Ok(Some(false));
                };
                let fmt = st.st_mode & libc::S_IFMT;
                if fmt == libc::S_IFDIR {
                    // Removed only when empty: nothing in it is lost.
                    return d.rmdir(&n).map(Some);
                }
                if fmt != libc::S_IFREG && fmt != libc::S_IFLNK {
                    return Ok(Some(false));
                }
                let proven = match done {
                    // The command finished: the entry is its own when it has not changed since.
                    Some(Some(t)) => ctime_ns(&st) <= t,
                    // A journal from before the finish time was recorded: its record of what it created.
                    Some(None) => recorded.is_some(),
                    // Interrupted during the command: nothing proves who created it.
                    None => false,
                };
                if !proven {
                    return Ok(None);
                }
                d.unlink(&n)?;
                Ok(Some(true))
            })();
            match r {
                Ok(Some(true)) => rep.removed.push(g),
                Ok(Some(false)) => {}
                Ok(None) => rep.warnings.push(format!(
                    "{g} is new since the run's snapshot of {tdir}, but the journal does not prove the run \
                     created it (the command was interrupted, or it changed since): kept"
                )),
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
            // The journal is guest data: only a partition (or the whole) of the disk holding the root.
            let on_root_disk = root_disk(root).and_then(|(disk, _)| {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let m =
                    std::fs::metadata(device).with_context(|| format!("inspecting {device}"))?;
                if !m.file_type().is_block_device() {
                    bail!("{device} is not a block device");
                }
                let id = format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev()));
                let disks = crate::lifecycle::disks_of_dev(std::path::Path::new("/sys"), &id)?;
                if disks != [disk.clone()] {
                    bail!("{device} is not on the disk that holds the guest's root ({disk})");
                }
                Ok(())
            });
            if let Err(err) = on_root_disk {
                rep.errors.push(format!(
                    "the EFI system partition range on {device} is not written back: {err:#}"
                ));
                continue;
            }
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
            match restore_bootcode(root, dir, e) {
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
    if let Some(j) = &mut j {
        if let Err(e) = j.append(&Entry::RolledBack {
            irreversible: rep.irreversible.clone(),
            errors: rep.errors.clone(),
            warnings: rep.warnings.clone(),
        }) {
            rep.errors.push(format!(
                "the journal cannot be updated ({e:#}): run `cloudprep rollback` again once there is space"
            ));
        }
    }
    Ok(rep)
}
