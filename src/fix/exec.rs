//! Running commands inside the guest.
//!
//! On the live system (`--root /`) a command runs directly. Under `--root DIR` it runs chrooted into DIR
//! in a private mount namespace created for that one child (`unshare(CLONE_NEWNS)` between fork and
//! exec): `/proc` and `/sys` are bind-mounted, `/dev` is a private tmpfs holding copies of the host's
//! device nodes plus `/dev/disk/by-uuid|by-label|by-partuuid` links for the guest's filesystems (there is
//! no udev here, and without the by-uuid link `update-grub` writes `root=/dev/loopNpM`), `/dev/pts` a new
//! devpts instance and `/run` a tmpfs. Nothing is mounted in the host's namespace, so nothing can be left
//! mounted — not on error, panic, or SIGKILL — and nothing is created in the host's `/dev`.
//!
//! Commands are argv only (never a shell) with a fixed environment.

use crate::guest::root::Root;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Captured output kept per stream: head and tail.
const KEEP: usize = 16 * 1024;

/// A filesystem of the guest that gets `/dev/disk/by-*` links in the chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevLink {
    /// Host device node, e.g. `/dev/loop3p1`.
    pub device: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub partuuid: Option<String>,
}

/// How long a validator may run before it is stopped.
pub const VALIDATOR_TIMEOUT: Duration = Duration::from_secs(300);
/// After the timeout: SIGTERM, then SIGKILL this much later.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// After the command exits, how long to wait for the rest of its output (a daemon it started may hold the
/// pipes open for ever).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
    /// Stopped because it ran longer than this many seconds.
    pub timed_out: Option<u64>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Some(0) && self.timed_out.is_none()
    }
    pub fn describe(&self) -> String {
        let how = match (self.status, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        match self.timed_out {
            Some(t) => format!("timed out after {t} s, stopped: {how}"),
            None => how,
        }
    }
}

/// Keep the head and tail of long output.
pub fn truncate(s: &str) -> String {
    if s.len() <= 2 * KEEP {
        return s.to_string();
    }
    let mut h = KEEP;
    while !s.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = s.len() - KEEP;
    while !s.is_char_boundary(t) {
        t += 1;
    }
    format!(
        "{}\n[... {} bytes omitted ...]\n{}",
        &s[..h],
        t - h,
        &s[t..]
    )
}

/// Find `prog` in the guest's PATH (as the chrooted exec will); returns its guest path.
pub fn find_in_guest(root: &Root, prog: &str) -> Option<String> {
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.to_string()]
    } else {
        PATH.split(':').map(|d| format!("{d}/{prog}")).collect()
    };
    for c in candidates {
        if let Ok(r) = root.resolve(&c) {
            if let Ok(m) = std::fs::metadata(&r.host) {
                if m.is_file() && m.mode() & 0o111 != 0 {
                    return Some(c);
                }
            }
        }
    }
    None
}

/// One step of the chroot setup, precomputed so the child only makes plain syscalls between fork and exec.
#[derive(Clone)]
enum Op {
    Mount {
        src: CString,
        dst: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir(CString, libc::mode_t),
    Mknod(CString, libc::mode_t, libc::dev_t),
    Symlink(CString, CString),
    Chown(CString, libc::uid_t, libc::gid_t),
    /// Create an empty file (a bind-mount target) if absent.
    Touch(CString),
    /// Bind-mount src on dst if possible (failure is not fatal).
    BindOptional(CString, CString),
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// The setup of the chroot: what to mount and create, computed in the parent.
pub struct Chroot {
    base: PathBuf,
    ops: Vec<Op>,
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_dir())
        .unwrap_or(false)
}

/// Copy the host's /dev (nodes, symlinks, dirs) into ops under `dst`, skipping other filesystems.
fn copy_dev(src: &Path, dst: &Path, dev_id: u64, ops: &mut Vec<Op>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(src) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name == "pts" || name == "shm" || name == "ptmx" {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let t = m.file_type();
        let d = dst.join(&name);
        if t.is_symlink() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                ops.push(Op::Symlink(c(&target), c(&d)));
            }
        } else if t.is_dir() {
            if m.dev() != dev_id || depth > 4 {
                continue;
            }
            ops.push(Op::Mkdir(c(&d), (m.mode() & 0o7777) as libc::mode_t));
            copy_dev(&e.path(), &d, dev_id, ops, depth + 1);
        } else if t.is_block_device() || t.is_char_device() {
            ops.push(Op::Mknod(
                c(&d),
                m.mode() as libc::mode_t,
                m.rdev() as libc::dev_t,
            ));
            ops.push(Op::Chown(c(&d), m.uid(), m.gid()));
        }
    }
}

/// `/dev/disk/by-*` link name: udev escapes `/` and spaces in labels.
fn link_name(s: &str) -> String {
    s.chars()
        .map(|ch| match ch {
            '/' => "\\x2f".to_string(),
            ' ' => "\\x20".to_string(),
            c => c.to_string(),
        })
        .collect()
}

impl Chroot {
    pub fn new(root: &Root, links: &[DevLink]) -> Result<Chroot> {
        let base = root.base().to_path_buf();
        let mut ops = Vec::new();
        let bind = libc::MS_BIND | libc::MS_REC;
        for (src, dst) in [("/proc", "proc"), ("/sys", "sys")] {
            let d = base.join(dst);
            if is_real_dir(&d) {
                ops.push(Op::Mount {
                    src: cs(src),
                    dst: c(&d),
                    fstype: None,
                    flags: bind,
                    data: None,
                });
            }
        }
        let dev = base.join("dev");
        if !is_real_dir(&dev) {
            bail!(
                "{} has no /dev directory: cannot run commands in it",
                base.display()
            );
        }
        ops.push(Op::Mount {
            src: cs("tmpfs"),
            dst: c(&dev),
            fstype: Some(cs("tmpfs")),
            flags: libc::MS_NOSUID,
            data: Some(cs("mode=0755,size=64m")),
        });
        let host_dev = std::fs::metadata("/dev").context("inspecting /dev")?;
        copy_dev(Path::new("/dev"), &dev, host_dev.dev(), &mut ops, 0);
        for sub in ["pts", "shm"] {
            ops.push(Op::Mkdir(c(&dev.join(sub)), 0o755));
        }
        ops.push(Op::Mount {
            src: cs("devpts"),
            dst: c(&dev.join("pts")),
            fstype: Some(cs("devpts")),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(cs("newinstance,ptmxmode=0666,mode=0620")),
        });
        ops.push(Op::Symlink(cs("pts/ptmx"), c(&dev.join("ptmx"))));
        ops.push(Op::Mount {
            src: cs("tmpfs"),
            dst: c(&dev.join("shm")),
            fstype: Some(cs("tmpfs")),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(cs("mode=1777")),
        });
        // /dev/disk/by-* for the guest's filesystems (mkdir of an existing dir fails harmlessly).
        let disk = dev.join("disk");
        ops.push(Op::Mkdir(c(&disk), 0o755));
        for (kind, pick) in [("by-uuid", 0usize), ("by-label", 1), ("by-partuuid", 2)] {
            let dir = disk.join(kind);
            let mut made = false;
            for l in links {
                let v = match pick {
                    0 => &l.uuid,
                    1 => &l.label,
                    _ => &l.partuuid,
                };
                let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else {
                    continue;
                };
                let Some(devname) = l.device.strip_prefix("/dev/") else {
                    continue;
                };
                if !made {
                    ops.push(Op::Mkdir(c(&dir), 0o755));
                    made = true;
                }
                ops.push(Op::Symlink(
                    cs(&format!("../../{devname}")),
                    c(&dir.join(link_name(v))),
                ));
            }
        }
        let run = base.join("run");
        let run_tmpfs = is_real_dir(&run);
        if run_tmpfs {
            ops.push(Op::Mount {
                src: cs("tmpfs"),
                dst: c(&run),
                fstype: Some(cs("tmpfs")),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(cs("mode=0755")),
            });
        }
        // Name resolution for commands that download (apt-get): the host's resolv.conf is bind-mounted
        // where the guest's /etc/resolv.conf points — only in this namespace, the guest file is untouched.
        // A guest link into /run (systemd-resolved, resolvconf) gets its target created in the tmpfs.
        if Path::new("/etc/resolv.conf").exists() {
            if let Ok(r) = root.resolve("/etc/resolv.conf") {
                let in_run = r.guest.starts_with("/run/") && run_tmpfs;
                let target = r.host.clone();
                let regular = std::fs::symlink_metadata(&target)
                    .map(|m| m.is_file())
                    .unwrap_or(false);
                if in_run {
                    let mut p = PathBuf::from("/");
                    let comps: Vec<&str> = r.guest.trim_start_matches('/').split('/').collect();
                    for comp in &comps[..comps.len() - 1] {
                        p.push(comp);
                        if p != Path::new("/run") {
                            ops.push(Op::Mkdir(
                                c(&base.join(p.strip_prefix("/").unwrap_or(&p))),
                                0o755,
                            ));
                        }
                    }
                    ops.push(Op::Touch(c(&target)));
                }
                if in_run || regular {
                    ops.push(Op::BindOptional(cs("/etc/resolv.conf"), c(&target)));
                }
            }
        }
        Ok(Chroot { base, ops })
    }
}

/// Run `argv` in the guest: directly when `chroot` is None (live root), else chrooted in a private mount
/// namespace. Output (stdout and stderr) is captured. Stopped after [`VALIDATOR_TIMEOUT`].
pub fn run(chroot: Option<&Chroot>, argv: &[String]) -> Result<Outcome> {
    run_with_input(chroot, argv, None, VALIDATOR_TIMEOUT)
}

/// [`run`] with `input` written to the command's standard input and a time limit: past `timeout` the
/// command and every process it started get SIGTERM, and SIGKILL 10 s later; the outcome says so.
pub fn run_with_input(
    chroot: Option<&Chroot>,
    argv: &[String],
    input: Option<&str>,
    timeout: Duration,
) -> Result<Outcome> {
    use std::sync::mpsc;
    let Some(prog) = argv.first() else {
        bail!("empty command");
    };
    let mut cmd = Command::new(prog);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .env("HOME", "/root")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ch) = chroot {
        let base = c(&ch.base);
        let ops = ch.ops.clone();
        // SAFETY: runs in the forked child before exec and only makes plain syscalls on precomputed C
        // strings (async-signal-safe; no allocation).
        unsafe {
            cmd.pre_exec(move || child_setup(&ops, &base));
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    let pid = child.id() as libc::pid_t;
    // Input and output go through threads: a command that writes much before reading its input, or never
    // reads it, cannot block us, and the time limit holds whatever the command does with its pipes.
    if let (Some(text), Some(mut sin)) = (input, child.stdin.take()) {
        let text = text.to_string();
        std::thread::spawn(move || {
            use std::io::Write;
            // A command that exits without reading its input is reported by its status.
            let _ = sin.write_all(text.as_bytes());
        });
    }
    let out_rx = drain(child.stdout.take());
    let err_rx = drain(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut timed_out = None;
    let status = match rx.recv_timeout(timeout) {
        Ok(st) => st,
        Err(_) => {
            timed_out = Some(timeout.as_secs());
            signal_tree(pid, libc::SIGTERM);
            match rx.recv_timeout(KILL_GRACE) {
                Ok(st) => st,
                Err(_) => {
                    signal_tree(pid, libc::SIGKILL);
                    rx.recv().context("waiting for a killed command")?
                }
            }
        }
    }
    .with_context(|| format!("running {}", argv.join(" ")))?;
    let mut text = collect(&out_rx);
    let err = collect(&err_rx);
    if !err.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&err);
    }
    if let Some(t) = timed_out {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "cloudprep: stopped after {t} s (time limit; [fix] command_timeout)\n"
        ));
    }
    Ok(Outcome {
        status: status.code(),
        signal: status.signal(),
        output: truncate(&text),
        timed_out,
    })
}

/// A child's stream, read to its end by a thread: what arrived so far, and a signal at the end.
struct Drain {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> Drain {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, done) = std::sync::mpsc::channel();
    if let Some(mut r) = r {
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => b
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    } else {
        let _ = tx.send(());
    }
    Drain { buf, done }
}

/// The output of a finished command: waits up to [`OUTPUT_GRACE`] for the end of the stream (a process it
/// left running may hold it open), then takes what arrived.
fn collect(d: &Drain) -> String {
    let ended = d.done.recv_timeout(OUTPUT_GRACE).is_ok();
    let b = d.buf.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = String::from_utf8_lossy(&b).into_owned();
    if !ended {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[a process the command started keeps this output open; not waited for]\n");
    }
    s
}

/// Parent pid of every process, from `/proc/<pid>/stat` (the host's process table, not the guest's).
fn process_parents() -> Vec<(libc::pid_t, libc::pid_t)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, parse_ppid(&stat)?))
        })
        .collect()
}

/// The parent pid in a `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
fn parse_ppid(stat: &str) -> Option<libc::pid_t> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and all its descendants, parents first.
fn descendants(pid: libc::pid_t, parents: &[(libc::pid_t, libc::pid_t)]) -> Vec<libc::pid_t> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(c, pp)| *pp == p && !out.contains(c))
                .map(|(c, _)| *c)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

/// Send `sig` to `pid` and every process below it.
fn signal_tree(pid: libc::pid_t, sig: libc::c_int) {
    for p in descendants(pid, &process_parents()) {
        // SAFETY: kill(2) with a pid we started (or one of its children) and a valid signal.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

fn child_setup(ops: &[Op], base: &CString) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(err());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err());
        }
        // Device nodes and directories get exactly the host's modes (mknod/mkdir apply the umask: a 0644
        // /dev/null breaks every non-root writer, e.g. apt's _apt user); the command keeps its umask.
        let saved_umask = libc::umask(0);
        for op in ops {
            match op {
                Op::Mount {
                    src,
                    dst,
                    fstype,
                    flags,
                    data,
                } => {
                    let r = libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
                        *flags,
                        data.as_ref()
                            .map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void),
                    );
                    if r != 0 {
                        return Err(err());
                    }
                }
                Op::Mkdir(p, m) => {
                    libc::mkdir(p.as_ptr(), *m);
                }
                Op::Mknod(p, m, d) => {
                    libc::mknod(p.as_ptr(), *m, *d);
                }
                Op::Symlink(t, p) => {
                    libc::symlink(t.as_ptr(), p.as_ptr());
                }
                Op::Chown(p, u, g) => {
                    libc::lchown(p.as_ptr(), *u, *g);
                }
                Op::BindOptional(src, dst) => {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    );
                }
                Op::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o644 as libc::c_uint,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
            }
        }
        libc::umask(saved_umask);
        if libc::chroot(base.as_ptr()) != 0 {
            return Err(err());
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(err());
        }
    }
    Ok(())
}

/// Filesystems of the guest (mounted at or below the root) with their identifiers, for `/dev/disk/by-*`
/// links: from the facts when the probe found them, else read from the mounted devices' superblocks.
pub fn guest_dev_links(root: &Root, facts_fs: &[crate::guest::facts::Filesystem]) -> Vec<DevLink> {
    let mut out: Vec<DevLink> = facts_fs
        .iter()
        .filter(|f| f.uuid.is_some() || f.label.is_some() || f.partuuid.is_some())
        .map(|f| DevLink {
            device: f.device.clone(),
            uuid: f.uuid.clone(),
            label: f.label.clone(),
            partuuid: f.partuuid.clone(),
        })
        .collect();
    if root.is_live() {
        return out;
    }
    if let Ok(mounts) = crate::guest::facts::read_mounts(root) {
        for m in mounts {
            if !m.source.starts_with("/dev/") || out.iter().any(|l| l.device == m.source) {
                continue;
            }
            if let Some((uuid, label)) = read_fs_ids(Path::new(&m.source)) {
                out.push(DevLink {
                    device: m.source.clone(),
                    uuid,
                    label,
                    partuuid: None,
                });
            }
        }
    }
    out
}

/// UUID and label of the filesystem on `dev`, read from its superblock (the probe's parsers).
pub fn read_fs_ids(dev: &Path) -> Option<(Option<String>, Option<String>)> {
    let head = crate::guest::probe::read_head(dev.to_str()?)?;
    let p = crate::guest::probe::probe_superblock(&head)?;
    Some((p.uuid, p.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_head_and_tail() {
        let s = "a".repeat(KEEP) + &"b".repeat(KEEP * 3) + "END";
        let t = truncate(&s);
        assert!(t.starts_with("aaa"));
        assert!(t.ends_with("END"));
        assert!(t.contains("bytes omitted"));
        assert!(t.len() < s.len());
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn link_names_are_escaped_like_udev() {
        assert_eq!(link_name("my disk/1"), "my\\x20disk\\x2f1");
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// State letter of a process (None when it is gone).
    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }

    #[test]
    fn ppid_is_read_after_the_last_parenthesis() {
        assert_eq!(parse_ppid("42 (a) b (c)) S 17 42 42 0"), Some(17));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
        let tree = [(2, 1), (3, 2), (4, 3), (5, 1), (6, 4)];
        assert_eq!(descendants(2, &tree), vec![2, 3, 4, 6]);
        assert_eq!(descendants(5, &tree), vec![5]);
    }

    #[test]
    fn a_command_past_its_time_limit_is_stopped_with_what_it_started() {
        let t0 = std::time::Instant::now();
        // The shell ignores SIGTERM, so the SIGKILL that follows is needed too.
        let o = run_with_input(
            None,
            &argv(&["sh", "-c", "trap '' TERM; sleep 300 & echo child $!; wait"]),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let took = t0.elapsed();
        assert!(!o.ok(), "{o:?}");
        assert_eq!(o.timed_out, Some(1));
        assert!(
            o.describe().starts_with("timed out after 1 s"),
            "{}",
            o.describe()
        );
        assert!(o.output.contains("stopped after 1 s"), "{}", o.output);
        assert!(took < Duration::from_secs(60), "took {took:?}");
        let child: i32 = o
            .output
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no child pid in {:?}", o.output));
        // The background sleep got the signals too (gone, or a zombie awaiting its new parent).
        let mut state = proc_state(child);
        for _ in 0..100 {
            if matches!(state, None | Some('Z')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            state = proc_state(child);
        }
        assert!(
            matches!(state, None | Some('Z')),
            "sleep {child} still runs: {state:?}"
        );
    }

    #[test]
    fn a_command_within_its_limit_reports_status_and_input_round_trips() {
        let o = run_with_input(
            None,
            &argv(&["sh", "-c", "cat; echo err >&2; exit 3"]),
            Some("hello\n"),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!((o.status, o.timed_out), (Some(3), None));
        assert_eq!(o.output, "hello\nerr\n");
        assert_eq!(o.describe(), "exit status 3");
        // An input larger than a pipe buffer, to a command that never reads it, does not block.
        let big = "x".repeat(1 << 20);
        let o =
            run_with_input(None, &argv(&["true"]), Some(&big), Duration::from_secs(60)).unwrap();
        assert!(o.ok(), "{o:?}");
    }

    #[test]
    fn a_daemon_holding_the_output_open_does_not_hold_the_run() {
        let t0 = std::time::Instant::now();
        // The background sleep inherits stdout and outlives the shell.
        let o = run_with_input(
            None,
            &argv(&["sh", "-c", "echo started; sleep 60 & exit 0"]),
            None,
            Duration::from_secs(120),
        )
        .unwrap();
        assert!(o.ok(), "{o:?}");
        assert!(o.output.starts_with("started\n"), "{}", o.output);
        assert!(o.output.contains("keeps this output open"), "{}", o.output);
        assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
    }
}
