//! The forward run: Pre commands, every planned file (backed up, written atomically, validated), Post
//! commands; each step journaled before it happens.

use super::*;

struct Run<'a> {
    root: &'a Root,
    /// The run directory and its backup area `files/` (both 0700).
    dir: Dir,
    files: Dir,
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

pub(super) fn guest_join(dir: &str, rel: &str) -> String {
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
        let name = format!("bootcode-{idx}");
        self.write_backup_file(&name, &data, 0o600)?;
        let rel = format!("files/{name}");
        self.journal.append(&Entry::BootCode {
            device: dev.to_string(),
            areas,
            identity,
            backup: rel,
            sha256: atomic::sha256(&data),
        })
    }

    /// A backup copy `files/<name>` in the run directory, with the original's permission bits (never
    /// wider: a copy of a 0600 secret stays 0600), durable (file and directory synced) before it is
    /// journaled. A copy that cannot be written whole (a full disk) is removed again.
    fn write_backup_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let mut f = self.files.create_new(name, mode & 0o777)?;
        if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
            drop(f);
            let _ = self.files.unlink(name);
            return Err(e).with_context(|| {
                format!(
                    "writing the backup copy {}",
                    self.files.host.join(name).display()
                )
            });
        }
        self.files.sync()
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
                self.write_backup_file(&seq.to_string(), &bytes, meta.mode)?;
                Entry::Backup {
                    seq,
                    path: path.to_string(),
                    kind: Kind::File,
                    backup: Some(format!("files/{seq}")),
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
                crate::guest::root::text_from_bytes(bytes)
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
                // The edit was computed from one read, the backup made from another: on a live system
                // the file may have changed in between (M6). Then the edit is not written over it.
                if root.is_dir(&parent) {
                    let now = match Dir::open(root, &parent)?.read(&name)? {
                        Existing::File { bytes, .. } => Some(bytes),
                        _ => None,
                    };
                    if now.as_deref() != exists.then_some(content.as_bytes()) {
                        bail!(
                            "{} changed while it was being fixed: not changed (run fix again)",
                            root.display(&r.guest)
                        );
                    }
                }
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
                    .find(|v| *v != crate::checks::Validator::None)
                    .unwrap_or(crate::checks::Validator::None);
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
            time_ns: Some(now_ns()),
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

/// Now, in ns since the epoch (comparable with inode change times).
pub(super) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
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
            time_ns: Some(now_ns()),
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
        // Saved in the run's files/ (the journal names them with that prefix, as every backup copy).
        self.write_backup_file(&format!("esp-{idx}.old"), &old, 0o600)?;
        self.write_backup_file(&format!("esp-{idx}.new"), &new, 0o600)?;
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
        let v = crate::guest::fat::Volume::open(&file, offset, length)?;
        for (src, dst) in copies {
            let a = v.read_file(src, esp::MAX_FILE)?;
            let b = v.read_file(dst, esp::MAX_FILE)?;
            if a.is_none() || a != b {
                bail!(
                    "{} does not read back as a copy of {}",
                    crate::guest::fat::dos(dst),
                    crate::guest::fat::dos(src)
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
    let mut seq = runs
        .list()?
        .iter()
        .filter_map(|n| {
            n.to_str()?
                .rsplit_once('-')
                .and_then(|(_, s)| s.parse::<usize>().ok())
        })
        .max()
        .unwrap_or(0)
        + 1;
    // A new directory of its own: an existing entry of that name (planted, or a clock set back) is never
    // reused, the next sequence number is tried instead.
    let id = loop {
        let id = journal::new_run_id(now, seq);
        if runs.mkdir_new(&id, 0o700)? {
            break id;
        }
        seq += 1;
        if seq > 1_000_000 {
            bail!(
                "cannot create a run directory in {}",
                root.display(RUNS_DIR)
            );
        }
    };
    let dir = runs.open_sub(&id)?;
    if !dir.mkdir_new("files", 0o700)? {
        bail!("{}/files exists in a new run directory", dir.guest);
    }
    let files = dir.open_sub("files")?;
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
        dir,
        files,
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
        match rollback_dir(root, &id, &run.dir, "a step of the run failed") {
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
