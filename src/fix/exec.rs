//! Running commands inside the guest.
//!
//! On the live system (`--root /`) a command runs directly: it is the system's own program on the system
//! itself, with the system's `/dev`, `/proc` and network (package installs and boot-loader updates need
//! them; see docs/security.md).
//!
//! Under `--root DIR` the guest is untrusted input and its programs are confined. Between fork and exec the
//! child unshares a mount and a PID namespace and forks twice:
//! * the first child stays in the host's PID namespace and only waits, so the caller sees one process whose
//!   exit status is the command's;
//! * the second is PID 1 of the new namespace. It bind-mounts DIR onto itself, mounts a fresh `/proc` (only
//!   the command's own processes are visible; `/proc/sys`, `/proc/sysrq-trigger` and friends read-only), a
//!   read-only sysfs, a tmpfs `/dev` holding only `null zero full random urandom tty`, the guest's own
//!   disks and their partitions (the devices of the filesystems mounted at or below DIR) and
//!   `/dev/disk/by-uuid|by-label|by-partuuid` links for them (there is no udev here, and without the by-uuid
//!   link `update-grub` writes `root=/dev/loopNpM`), a new devpts instance and a tmpfs `/run`; then
//!   `pivot_root`s into DIR and detaches the host's tree, so no path (not `..`, not a second chroot) leads
//!   back to the host. It makes itself non-dumpable (`/proc/1/*` of the namespace is closed to the
//!   command), sets `no_new_privs`, reaps orphans and exits with the command's status;
//! * the third, PID 2, drops the capabilities that reach past the guest's tree (mount, mknod, raw I/O,
//!   module loading, `open_by_handle_at`, ptrace, network administration, ...) from its bounding and
//!   inheritable sets, and execs the command.
//!
//! When the command ends, its PID 1 ends, and the kernel kills whatever the command left running in the
//! namespace. Nothing is mounted in the host's namespace, so nothing can be left mounted — not on error,
//! panic, or SIGKILL — and nothing is created in the host's `/dev`.
//!
//! Commands are argv only (never a shell) with a fixed environment.

use crate::guest::root::Root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
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
    /// Bind `p` onto itself read-only (skipped when `p` does not exist; an error when it cannot be made
    /// read-only).
    ReadOnly(CString),
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

/// The setup of the confined guest: what to mount and create, computed in the parent.
pub struct Chroot {
    base: PathBuf,
    ops: Vec<Op>,
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_dir())
        .unwrap_or(false)
}

/// The character devices a guest program gets: (name, major, minor).
const CHAR_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `/proc` entries that stay read-only for a guest program: kernel settings (`core_pattern` would run a
/// program as host root), the SysRq trigger, interrupt affinities and bus/filesystem controls.
const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Capabilities a guest program never gets: each reaches past the guest's tree (mounts, device nodes, raw
/// I/O and modules, file handles that ignore the root, other processes, the host's network, clock, audit,
/// BPF, and the right to change capability sets). Numbers from linux/capability.h.
const DROPPED_CAPS: [libc::c_int; 21] = [
    2,  // CAP_DAC_READ_SEARCH: open_by_handle_at escapes a chroot on the same filesystem
    12, // CAP_NET_ADMIN
    16, // CAP_SYS_MODULE
    17, // CAP_SYS_RAWIO
    19, // CAP_SYS_PTRACE
    20, // CAP_SYS_PACCT
    21, // CAP_SYS_ADMIN: mount, umount, remount /sys read-write, setns, ...
    22, // CAP_SYS_BOOT
    25, // CAP_SYS_TIME
    27, // CAP_MKNOD: device nodes of host disks
    30, // CAP_AUDIT_CONTROL
    32, // CAP_MAC_OVERRIDE
    33, // CAP_MAC_ADMIN
    34, // CAP_SYSLOG
    35, // CAP_WAKE_ALARM
    36, // CAP_BLOCK_SUSPEND
    37, // CAP_AUDIT_READ
    38, // CAP_PERFMON
    39, // CAP_BPF
    40, // CAP_CHECKPOINT_RESTORE
    8,  // CAP_SETPCAP (last: dropping the others needs it)
];

/// A block device node for the guest's `/dev`: path below `/dev`, mode (with the type bits), number,
/// owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskNode {
    pub name: String,
    pub mode: u32,
    pub rdev: u64,
    pub uid: u32,
    pub gid: u32,
}

/// `major:minor` of a block device from its sysfs entry (`/sys/class/block/NAME/dev`).
fn sys_devnum(name: &str) -> Option<(u32, u32)> {
    let t = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).ok()?;
    let (a, b) = t.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A node for the block device `rel` (below `/dev`) numbered `num`, with the host node's mode and owner
/// when the host has one with that number (else 0660 root:disk).
fn disk_node(rel: &str, num: (u32, u32)) -> DiskNode {
    let rdev = libc::makedev(num.0, num.1);
    let host = std::fs::symlink_metadata(Path::new("/dev").join(rel))
        .ok()
        .filter(|m| m.file_type().is_block_device() && m.rdev() == rdev);
    DiskNode {
        name: rel.to_string(),
        mode: host.as_ref().map_or(libc::S_IFBLK | 0o660, |m| {
            libc::S_IFBLK | (m.mode() & 0o7777)
        }),
        rdev,
        uid: host.as_ref().map_or(0, |m| m.uid()),
        gid: host.as_ref().map_or(6, |m| m.gid()),
    }
}

/// The block devices the guest's programs may use: for every filesystem mounted at or below the root
/// (never the host filesystem a root directory merely lies on), its device, the whole disks under it and
/// every partition of those disks (grub-install writes the disk, update-grub probes the partition);
/// `extra` names more devices of the guest (`/dev/...` paths from the facts).
pub fn guest_disk_nodes(root: &Root, extra: &[&str]) -> Vec<DiskNode> {
    let mut out: Vec<DiskNode> = Vec::new();
    let mut add = |n: DiskNode| {
        if !out.iter().any(|o| o.name == n.name) {
            out.push(n);
        }
    };
    let mut kernel_names: BTreeSet<String> = BTreeSet::new();
    let mounts = crate::guest::facts::read_mounts(root).unwrap_or_default();
    let sources = mounts
        .iter()
        .map(|m| (m.source.clone(), Some(m.dev.clone())))
        .chain(extra.iter().map(|e| (e.to_string(), None)));
    for (source, dev) in sources {
        let num = dev
            .as_deref()
            .and_then(|d| d.split_once(':'))
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .filter(|(major, _)| *major != 0)
            .or_else(|| {
                let m = std::fs::metadata(&source).ok()?;
                m.file_type()
                    .is_block_device()
                    .then(|| (libc::major(m.rdev()), libc::minor(m.rdev())))
            });
        let Some(num) = num else { continue };
        let Some(name) = crate::export::source::devnum_name(num) else {
            continue;
        };
        // The mount's own name for it (e.g. /dev/mapper/vg-root) as well as the kernel's.
        if let Some(rel) = source.strip_prefix("/dev/") {
            if !rel.contains("..") && !rel.is_empty() {
                add(disk_node(rel, num));
            }
        }
        kernel_names.insert(name.clone());
        for disk in crate::export::source::whole_disks(&name) {
            kernel_names.insert(disk.clone());
            if let Ok(rd) = std::fs::read_dir(format!("/sys/class/block/{disk}")) {
                for e in rd.flatten() {
                    if e.path().join("partition").exists() {
                        kernel_names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
    }
    for name in kernel_names {
        if let Some(num) = sys_devnum(&name) {
            add(disk_node(&name, num));
        }
    }
    out
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
        for d in ["dev", "proc", "sys"] {
            if !is_real_dir(&base.join(d)) {
                bail!(
                    "{} has no /{d} directory: cannot run commands in it",
                    base.display()
                );
            }
        }
        // The root becomes a mount point of its own (with the guest filesystems mounted below it), so
        // that pivot_root can make it `/`.
        ops.push(Op::Mount {
            src: c(&base),
            dst: c(&base),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        });
        let proc_ = base.join("proc");
        ops.push(Op::Mount {
            src: cs("proc"),
            dst: c(&proc_),
            fstype: Some(cs("proc")),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        });
        for p in PROC_READ_ONLY {
            ops.push(Op::ReadOnly(c(&proc_.join(p))));
        }
        ops.push(Op::Mount {
            src: cs("sysfs"),
            dst: c(&base.join("sys")),
            fstype: Some(cs("sysfs")),
            flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        });
        let dev = base.join("dev");
        ops.push(Op::Mount {
            src: cs("tmpfs"),
            dst: c(&dev),
            fstype: Some(cs("tmpfs")),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(cs("mode=0755,size=1m")),
        });
        for (name, major, minor) in CHAR_NODES {
            let d = dev.join(name);
            ops.push(Op::Mknod(
                c(&d),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            ));
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.push(Op::Symlink(cs(target), c(&dev.join(name))));
        }
        let extra: Vec<&str> = links.iter().map(|l| l.device.as_str()).collect();
        for n in guest_disk_nodes(root, &extra) {
            let d = dev.join(&n.name);
            // Parent directories (e.g. /dev/mapper) first.
            let mut p = dev.clone();
            let comps: Vec<&str> = n.name.split('/').collect();
            for comp in &comps[..comps.len() - 1] {
                p.push(comp);
                ops.push(Op::Mkdir(c(&p), 0o755));
            }
            ops.push(Op::Mknod(
                c(&d),
                n.mode as libc::mode_t,
                n.rdev as libc::dev_t,
            ));
            ops.push(Op::Chown(c(&d), n.uid, n.gid));
        }
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

/// Run `argv` in the guest: directly when `chroot` is None (live root), else confined in the guest (see
/// the module documentation). Output (stdout and stderr) is captured. Stopped after [`VALIDATOR_TIMEOUT`].
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

/// `capget`/`capset` header and data (linux/capability.h, version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Close every descriptor except `keep` (the confined command's helpers must not hold its output pipes
/// or the spawn error pipe open).
///
/// # Safety
/// Between fork and exec only: plain syscalls.
unsafe fn close_all_but(keep: libc::c_int) {
    let max = libc::c_uint::MAX;
    // (lo, hi) ranges to close; an empty one has lo > hi.
    let ranges: [(libc::c_uint, libc::c_uint); 2] = match libc::c_uint::try_from(keep) {
        Ok(0) => [(1, max), (1, 0)],
        Ok(k) => [(0, k - 1), (k.saturating_add(1), max)],
        Err(_) => [(0, max), (1, 0)],
    };
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        if libc::syscall(libc::SYS_close_range, lo, hi, 0) != 0 {
            // Kernels before 5.9: one by one (descriptors above 65535 are not expected here).
            let mut fd = lo;
            while fd <= hi && fd < 65536 {
                libc::close(fd as libc::c_int);
                fd += 1;
            }
        }
    }
}

/// The confined process's exit, reported to the caller as the command's: the same exit code, or death by
/// the same signal.
///
/// # Safety
/// Between fork and exec only.
unsafe fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        127
    })
}

/// Wait for `pid` (retrying on EINTR); its wait status. Reaps every other child it sees meanwhile.
///
/// # Safety
/// Between fork and exec only.
unsafe fn wait_for(pid: libc::pid_t) -> libc::c_int {
    loop {
        let mut st: libc::c_int = 0;
        let r = libc::waitpid(-1, &mut st, 0);
        if r == pid {
            return st;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            return 127 << 8;
        }
    }
}

/// Fork with no atfork handlers (a raw clone): 0 in the child.
///
/// # Safety
/// Between fork and exec only.
unsafe fn raw_fork() -> libc::pid_t {
    libc::syscall(
        libc::SYS_clone,
        libc::SIGCHLD as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    ) as libc::pid_t
}

/// Runs in the forked child before exec: confine it (see the module documentation). Only the process that
/// will exec returns; the two helpers exit with the command's status.
fn child_setup(ops: &[Op], base: &CString) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain syscalls with valid NUL-terminated strings and stack buffers; no allocation.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
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
        // The status of PID 1 (the signal the command died of, if any) comes back through this pipe.
        let mut status_pipe = [-1 as libc::c_int; 2];
        if libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(err());
        }
        let init = raw_fork();
        if init < 0 {
            return Err(err());
        }
        if init > 0 {
            // The waiter, in the host's PID namespace: the caller's time limit signals it with the rest of
            // the tree; it must outlive PID 1 to report the status, so it ignores the polite signals.
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            close_all_but(status_pipe[0]);
            let st = wait_for(init);
            let mut cmd_status: libc::c_int = st;
            let mut buf = [0u8; 4];
            if libc::read(status_pipe[0], buf.as_mut_ptr() as *mut libc::c_void, 4) == 4 {
                cmd_status = libc::c_int::from_ne_bytes(buf);
            }
            exit_like(cmd_status);
        }
        libc::close(status_pipe[0]);
        // PID 1 of the new namespace from here on. Failures are returned: the spawn reports them.
        // Device nodes and directories get exactly the modes asked for (mknod/mkdir apply the umask: a
        // 0644 /dev/null breaks every non-root writer, e.g. apt's _apt user); the command keeps its umask.
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
                Op::ReadOnly(p) => {
                    if libc::mount(
                        p.as_ptr(),
                        p.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0
                        && libc::mount(
                            std::ptr::null(),
                            p.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND
                                | libc::MS_REMOUNT
                                | libc::MS_RDONLY
                                | libc::MS_NOSUID
                                | libc::MS_NODEV
                                | libc::MS_NOEXEC,
                            std::ptr::null(),
                        ) != 0
                    {
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
        // The root becomes `/` and the host's tree is detached: no `..`, chroot or /proc link leads back.
        if libc::chdir(base.as_ptr()) != 0 {
            return Err(err());
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            return Err(err());
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(err());
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(err());
        }
        // PID 1 keeps the caller's memory and environment: closed to the command (/proc/1/environ,
        // /proc/1/mem, /proc/1/root need ptrace rights over a non-dumpable process).
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        {
            return Err(err());
        }
        let cmd = raw_fork();
        if cmd < 0 {
            return Err(err());
        }
        if cmd > 0 {
            close_all_but(status_pipe[1]);
            let st = wait_for(cmd);
            let bytes = st.to_ne_bytes();
            libc::write(status_pipe[1], bytes.as_ptr() as *const libc::c_void, 4);
            // Leaving ends the namespace: the kernel kills what the command left running.
            libc::_exit(0);
        }
        libc::close(status_pipe[1]);
        // The command (PID 2): without the capabilities that reach past the guest's tree.
        for cap in DROPPED_CAPS {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && *libc::__errno_location() != libc::EINVAL
            {
                return Err(err());
            }
        }
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) != 0
        {
            return Err(err());
        }
        for d in data.iter_mut() {
            d.inheritable = 0;
        }
        for cap in DROPPED_CAPS {
            let (word, bit) = (cap as usize / 32, 1u32 << (cap % 32));
            data[word].effective &= !bit;
            data[word].permitted &= !bit;
        }
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(err());
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
            && *libc::__errno_location() != libc::EINVAL
        {
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
