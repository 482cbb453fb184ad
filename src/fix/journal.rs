//! The run journal: an append-only JSON-lines log (`journal.jsonl`) in the run's directory, each entry
//! fsynced before the change it announces is made. Replaying it tells what a run did, how far it got, and
//! how to undo it.
//!
//! Fault injection for tests (builds with the `test-hooks` feature only, never the release binary): with
//! `CLOUDPREP_FAULT_STEP=N` the process SIGKILLs itself right after the N-th journal entry it wrote is
//! durable.

use super::atomic::{Dir, Existing};
use crate::checks::Phase;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const JOURNAL: &str = "journal.jsonl";
/// Where runs live, under the guest root.
pub const RUNS_DIR: &str = "/var/lib/cloudprep/runs";

/// What a path was before the run touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Symlink,
    Absent,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// Extended attributes (POSIX ACLs, SELinux labels, user.*): name and hex-encoded value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    /// The run starts: what it plans to do.
    Begin {
        id: String,
        time: String,
        unix: i64,
        root: String,
        version: String,
        files: Vec<String>,
        commands: Vec<Vec<String>>,
    },
    /// A path's original state is saved (backup copy durable) — written before the path is changed.
    Backup {
        seq: u64,
        /// Canonical guest path (symlinks in the parents resolved).
        path: String,
        kind: Kind,
        /// Backup copy, relative to the run directory (regular files).
        backup: Option<String>,
        sha256: Option<String>,
        /// Link target (symlinks).
        target: Option<String>,
        meta: Meta,
        reason: String,
    },
    /// Boot code areas of a disk (byte offset, length), saved before `grub-install` writes them; the
    /// backup holds their bytes concatenated. `identity` is the disk signature and partition table they
    /// belong to ([`super::bootcode::identity`]).
    BootCode {
        device: String,
        areas: Vec<(u64, u64)>,
        identity: String,
        backup: String,
        sha256: String,
    },
    /// Byte ranges (offset, length) of an unmounted EFI system partition that cloudprep's FAT writer is
    /// about to write (`cloudprep esp-install --device`): `backup` holds their old bytes and `written` the
    /// new ones, each concatenated in the order of `areas` (see [`super::esp::restore_decision`]).
    EspWrite {
        device: String,
        areas: Vec<(u64, u64)>,
        backup: String,
        sha256: String,
        written: String,
        written_sha256: String,
    },
    /// A directory is about to be created (removed again on rollback when empty).
    MkDir {
        path: String,
    },
    /// A planned file change is written (or the file removed).
    Applied {
        seq: u64,
        path: String,
        action: String,
        sha256: Option<String>,
        findings: Vec<String>,
    },
    Validated {
        seq: u64,
        path: String,
        validator: String,
        note: String,
    },
    /// The validator rejected the new content; the file is restored next.
    Invalid {
        seq: u64,
        path: String,
        validator: String,
        error: String,
    },
    /// A change was undone (restored from its backup).
    Undone {
        seq: u64,
        path: String,
    },
    /// Listing of a directory tree before a command that may add files to it (new ones are removed on
    /// rollback).
    Snapshot {
        dir: String,
        recursive: bool,
        entries: Vec<String>,
    },
    /// What a command added to a snapshotted tree (written when it finished; removed on rollback).
    Created {
        dir: String,
        entries: Vec<String>,
    },
    CommandStart {
        idx: usize,
        argv: Vec<String>,
        phase: Phase,
        /// Whether rollback can undo its effects (from the backups taken before it).
        reversible: bool,
        note: String,
    },
    CommandDone {
        idx: usize,
        argv: Vec<String>,
        status: Option<i32>,
        signal: Option<i32>,
        ok: bool,
        output: String,
        /// When the command had finished (ns since the epoch): what in its trees changed no later than
        /// this (inode change time) is the command's; anything newer was changed after it, and is kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ns: Option<i64>,
    },
    /// The forward run ended: `applied` or `failed` (a failed run is rolled back next).
    Finished {
        state: String,
        summary: String,
    },
    RollbackStart {
        reason: String,
    },
    RolledBack {
        irreversible: Vec<Vec<String>>,
        errors: Vec<String>,
        #[serde(default)]
        warnings: Vec<String>,
    },
}

static STEPS: AtomicU64 = AtomicU64::new(0);

/// The test hook: SIGKILL this process after the `n`-th journal step when `CLOUDPREP_FAULT_STEP=n`.
#[cfg(feature = "test-hooks")]
fn fault_injection(n: u64) {
    let step: Option<u64> = std::env::var("CLOUDPREP_FAULT_STEP")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    if step == Some(n) {
        log::warn!("CLOUDPREP_FAULT_STEP={n}: killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "test-hooks"))]
fn fault_injection(_n: u64) {}

/// Journal steps written by this process so far.
pub fn steps_written() -> u64 {
    STEPS.load(Ordering::SeqCst)
}

pub struct Journal {
    file: File,
    /// Bytes of complete lines in the file (a failed append is cut back to this).
    len: u64,
    pub dir: PathBuf,
}

/// Size limit of a journal read whole (a planted endless or huge file is an error, not an OOM).
pub const MAX_JOURNAL: u64 = 256 << 20;

impl Journal {
    /// Create the journal of a new run in the run directory `dir` (0600: it names every changed file).
    pub fn create(dir: &Dir) -> Result<Journal> {
        let file = dir.create_new(JOURNAL, 0o600)?;
        dir.sync()?;
        Ok(Journal {
            file,
            len: 0,
            dir: dir.host.clone(),
        })
    }

    /// Reopen an existing run's journal to append to it (never through a symlink). A torn last line (a
    /// crash or a full disk in the middle of a write) is cut off first, so the next entry starts a line of
    /// its own.
    pub fn open(dir: &Dir) -> Result<Journal> {
        let p = dir.host.join(JOURNAL);
        let mut file = dir
            .open_file(JOURNAL, libc::O_RDWR | libc::O_APPEND, 0)?
            .ok_or_else(|| anyhow!("{} does not exist", p.display()))?;
        let size = file.metadata()?.len();
        let bytes = super::atomic::read_capped(&mut file, size, MAX_JOURNAL)
            .with_context(|| format!("reading {}", p.display()))?;
        let len = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u64 + 1);
        if len != bytes.len() as u64 {
            log::warn!(
                "{}: cutting off a torn last line ({} bytes)",
                p.display(),
                bytes.len() as u64 - len
            );
            file.set_len(len)
                .and_then(|_| file.sync_all())
                .with_context(|| format!("trimming {}", p.display()))?;
        }
        Ok(Journal {
            file,
            len,
            dir: dir.host.clone(),
        })
    }

    /// Append one entry and make it durable before returning. When it cannot be written whole (a full
    /// disk), the partial line is cut off again and the error returned.
    pub fn append(&mut self, e: &Entry) -> Result<()> {
        let mut line = serde_json::to_string(e)?;
        line.push('\n');
        let p = self.dir.join(JOURNAL);
        if let Err(err) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
        {
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data());
            return Err(err).with_context(|| format!("writing {}", p.display()));
        }
        self.len += line.len() as u64;
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        fault_injection(n);
        Ok(())
    }
}

/// Read the journal of the run directory `dir` (a regular file, never followed through a symlink). A torn
/// final line (a crash in the middle of a write) is ignored; a bad line elsewhere is an error.
pub fn read(dir: &Dir) -> Result<Vec<Entry>> {
    let p = dir.host.join(JOURNAL);
    let bytes = match dir.read_limited(JOURNAL, MAX_JOURNAL)? {
        Existing::File { bytes, .. } => bytes,
        Existing::Absent => bail!("{} does not exist", p.display()),
        Existing::Symlink { .. } => bail!("{} is a symbolic link: not a journal", p.display()),
        Existing::Other(t) => bail!("{} is {t}: not a journal", p.display()),
    };
    let text = String::from_utf8(bytes).with_context(|| format!("reading {}", p.display()))?;
    parse(&text).with_context(|| format!("reading {}", p.display()))
}

fn parse(text: &str) -> Result<Vec<Entry>> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(l.trim_end()) {
            Ok(e) => out.push(e),
            Err(_) if last && !l.ends_with('\n') => break,
            Err(e) => {
                return Err(e).with_context(|| format!("line {}", i + 1));
            }
        }
    }
    Ok(out)
}

/// The state of a run, as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Started and never finished (interrupted): must be rolled back.
    Incomplete,
    /// A rollback started and did not finish: must be rolled back (again).
    RollingBack,
    Applied,
    /// Finished with a failure (rolled back right after).
    Failed,
    RolledBack,
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Incomplete => "incomplete",
            RunState::RollingBack => "rolling-back",
            RunState::Applied => "applied",
            RunState::Failed => "failed",
            RunState::RolledBack => "rolled-back",
        }
    }
    pub fn needs_recovery(&self) -> bool {
        matches!(
            self,
            RunState::Incomplete | RunState::RollingBack | RunState::Failed
        )
    }
}

pub fn state_of(entries: &[Entry]) -> RunState {
    let mut st = RunState::Incomplete;
    for e in entries {
        match e {
            Entry::Finished { state, .. } => {
                st = if state == "applied" {
                    RunState::Applied
                } else {
                    RunState::Failed
                }
            }
            Entry::RollbackStart { .. } => st = RunState::RollingBack,
            Entry::RolledBack { .. } => st = RunState::RolledBack,
            _ => {}
        }
    }
    st
}

/// Summary of one run for `cloudprep runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub time: String,
    pub unix: i64,
    pub state: RunState,
    /// Paths changed (applied and not undone).
    pub files: Vec<String>,
    pub commands: Vec<Vec<String>>,
    #[serde(skip)]
    pub dir: PathBuf,
}

pub fn info(id: &str, dir: &Path, entries: &[Entry]) -> RunInfo {
    let mut r = RunInfo {
        id: id.to_string(),
        time: String::new(),
        unix: 0,
        state: state_of(entries),
        files: Vec::new(),
        commands: Vec::new(),
        dir: dir.to_path_buf(),
    };
    for e in entries {
        match e {
            Entry::Begin { time, unix, .. } => {
                r.time = time.clone();
                r.unix = *unix;
            }
            Entry::Applied { path, .. } if !r.files.contains(path) => r.files.push(path.clone()),
            Entry::Undone { path, .. } => r.files.retain(|p| p != path),
            Entry::CommandStart { argv, .. } => r.commands.push(argv.clone()),
            _ => {}
        }
    }
    r
}

/// A new run id: UTC time plus the run's sequence number, so ids sort in run order even within a second.
pub fn new_run_id(now: std::time::SystemTime, seq: usize) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{seq:04}")
}

/// RFC 3339 UTC time.
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Unix seconds to (year, month, day, hour, minute, second), UTC (Howard Hinnant's days-to-civil).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1795650243), "2026-11-25T23:44:03Z");
    }

    fn dir_of(d: &tempfile::TempDir) -> (crate::guest::root::Root, Dir) {
        let root = crate::guest::root::Root::new(d.path()).unwrap();
        let dir = Dir::open(&root, "/").unwrap();
        (root, dir)
    }

    #[test]
    fn a_full_disk_never_leaves_a_torn_line() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs: run it as root"
        );
        let d = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            d.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=8k"),
        )
        .unwrap();
        struct Umount(std::path::PathBuf);
        impl Drop for Umount {
            fn drop(&mut self) {
                let _ = nix::mount::umount(&self.0);
            }
        }
        let _u = Umount(d.path().to_path_buf());
        let (_root, dir) = dir_of(&d);
        let mut j = Journal::create(&dir).unwrap();
        let reason = "x".repeat(3000);
        let mut written = 0;
        let err = loop {
            match j.append(&Entry::RollbackStart {
                reason: reason.clone(),
            }) {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 10, "the 8 KiB filesystem never filled up");
        };
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        let text = std::fs::read_to_string(d.path().join(JOURNAL)).unwrap();
        assert!(text.ends_with('\n'), "a torn line was left behind");
        assert_eq!(read(&dir).unwrap().len(), written);
        // A short entry still fits in what is left, as a line of its own.
        let mut j = Journal::open(&dir).unwrap();
        j.append(&Entry::RollbackStart { reason: "y".into() })
            .unwrap();
        assert_eq!(read(&dir).unwrap().len(), written + 1);
    }

    #[test]
    fn torn_last_line_is_ignored_and_state_replays() {
        let d = tempfile::tempdir().unwrap();
        let (_root, dir) = dir_of(&d);
        let mut j = Journal::create(&dir).unwrap();
        j.append(&Entry::RollbackStart { reason: "x".into() })
            .unwrap();
        assert_eq!(state_of(&read(&dir).unwrap()), RunState::RollingBack);
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join(JOURNAL))
            .unwrap()
            .write_all(b"{\"event\":\"rolled-b")
            .unwrap();
        let e = read(&dir).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(state_of(&e), RunState::RollingBack);
        // Reopened: the torn text is cut off, so the next entry is a line of its own (M1).
        let mut j = Journal::open(&dir).unwrap();
        j.append(&Entry::RollbackStart { reason: "y".into() })
            .unwrap();
        let e = read(&dir).unwrap();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(!std::fs::read_to_string(d.path().join(JOURNAL))
            .unwrap()
            .contains("rolled-b"));
        // A bad line in the middle is an error, not silently skipped.
        std::fs::write(
            d.path().join(JOURNAL),
            "garbage\n{\"event\":\"rollback-start\",\"reason\":\"x\"}\n",
        )
        .unwrap();
        assert!(read(&dir).is_err());
        // A journal that is a symlink (to a host file) is not read, nor opened for appending.
        let host = tempfile::NamedTempFile::new().unwrap();
        std::fs::remove_file(d.path().join(JOURNAL)).unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join(JOURNAL)).unwrap();
        assert!(read(&dir).is_err());
        assert!(Journal::open(&dir).is_err());
        assert_eq!(std::fs::metadata(host.path()).unwrap().len(), 0);
    }
}
