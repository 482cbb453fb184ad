//! Consistency while copying a disk whose filesystems are mounted: FIFREEZE every filesystem of the
//! disk (or remount it read-only), and undo it on every exit path: the guard's Drop, SIGINT/SIGTERM
//! (a signal thread), a panic (the panic hook) and a watchdog that thaws after a timeout and aborts the
//! export. The same cleanup removes the partial output file.

use super::source::Mount;
use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

const FIFREEZE: libc::c_ulong = 0xC004_5877; // _IOWR('X', 119, int)
const FITHAW: libc::c_ulong = 0xC004_5878; // _IOWR('X', 120, int)

#[derive(Default)]
struct State {
    frozen: Vec<(PathBuf, OwnedFd)>,
    remounted: Vec<PathBuf>,
    temp: Option<PathBuf>,
    reason: String,
}

static STATE: Mutex<State> = Mutex::new(State {
    frozen: Vec::new(),
    remounted: Vec::new(),
    temp: None,
    reason: String::new(),
});
static ABORT: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn aborted() -> bool {
    ABORT.load(Ordering::SeqCst)
}

pub fn abort_reason() -> String {
    state().reason.clone()
}

fn abort(reason: &str) {
    state().reason = reason.to_string();
    ABORT.store(true, Ordering::SeqCst);
}

/// Thaw everything frozen, remount read-write what we remounted read-only. Idempotent.
pub fn restore() {
    let (frozen, remounted) = {
        let mut s = state();
        (
            std::mem::take(&mut s.frozen),
            std::mem::take(&mut s.remounted),
        )
    };
    for (mp, fd) in frozen.into_iter().rev() {
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), FITHAW as _, 0) };
        if r != 0 {
            eprintln!(
                "cloudprep: FITHAW {}: {}",
                mp.display(),
                std::io::Error::last_os_error()
            );
        } else {
            log::info!("thawed {}", mp.display());
        }
    }
    for mp in remounted.into_iter().rev() {
        let ok = Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&mp)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "cloudprep: could not remount {} read-write again",
                mp.display()
            );
        }
    }
}

/// The partial output to delete if we are interrupted.
pub fn set_temp(p: Option<PathBuf>) {
    state().temp = p;
}

fn cleanup_all() {
    restore();
    if let Some(t) = state().temp.take() {
        let _ = std::fs::remove_file(t);
    }
}

/// Route SIGINT/SIGTERM to a thread that cleans up, and clean up on panic. Call before spawning threads.
pub fn install_handlers() {
    INSTALL.call_once(|| {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        if set.thread_block().is_ok() {
            std::thread::spawn(move || {
                if let Ok(sig) = set.wait() {
                    eprintln!(
                        "\ncloudprep: {sig:?}: thawing filesystems and removing the partial output"
                    );
                    cleanup_all();
                    std::process::exit(128 + sig as i32);
                }
            });
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            cleanup_all();
            prev(info);
        }));
    });
}

/// Holds filesystems frozen / read-only until dropped.
pub struct Guard {
    watchdog: Option<std::sync::mpsc::Sender<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.watchdog.take();
        restore();
    }
}

fn remount_ro(mp: &PathBuf) -> Result<()> {
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(mp)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "could not remount {} read-only: {}",
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    state().remounted.push(mp.clone());
    Ok(())
}

/// Make the read-write filesystems in `mounts` consistent: freeze (`freeze = true`) or remount them
/// read-only. Filesystems that cannot be frozen (vfat) are remounted read-only instead.
pub fn hold(mounts: &[Mount], freeze: bool, timeout: Duration) -> Result<Guard> {
    let mut rw: Vec<&Mount> = mounts.iter().filter(|m| m.read_write).collect();
    // Children before parents: freezing / first would block opening mount points below it.
    rw.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    let mut seen = std::collections::BTreeSet::new();
    rw.retain(|m| seen.insert(m.devnum));
    let mut guard = Guard { watchdog: None };
    let fds: Vec<(PathBuf, std::fs::File)> = rw
        .iter()
        .map(|m| {
            std::fs::File::open(&m.mount_point)
                .map(|f| (m.mount_point.clone(), f))
                .with_context(|| format!("opening {}", m.mount_point.display()))
        })
        .collect::<Result<_>>()?;
    for (mp, f) in fds {
        if freeze {
            let r = unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE as _, 0) };
            if r == 0 {
                eprintln!("cloudprep: froze {}", mp.display());
                state().frozen.push((mp, f.into()));
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e).with_context(|| format!("FIFREEZE {}", mp.display()));
            }
            eprintln!(
                "cloudprep: {} cannot be frozen: remounting it read-only for the copy",
                mp.display()
            );
        }
        remount_ro(&mp)?;
        eprintln!("cloudprep: remounted {} read-only", mp.display());
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let any = !state().frozen.is_empty();
    if any {
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                eprintln!(
                    "\ncloudprep: filesystems frozen for longer than {}s: thawing and aborting the export",
                    timeout.as_secs()
                );
                abort("freeze timeout");
                restore();
            }
        });
    }
    guard.watchdog = Some(tx);
    Ok(guard)
}
