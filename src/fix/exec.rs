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

use crate::root::Root;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
    pub fn describe(&self) -> String {
        match (self.status, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
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
/// namespace. Output (stdout and stderr) is captured.
pub fn run(chroot: Option<&Chroot>, argv: &[String]) -> Result<Outcome> {
    run_with_input(chroot, argv, None)
}

/// [`run`] with `input` written to the command's standard input.
pub fn run_with_input(
    chroot: Option<&Chroot>,
    argv: &[String],
    input: Option<&str>,
) -> Result<Outcome> {
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
    if let (Some(text), Some(mut sin)) = (input, child.stdin.take()) {
        use std::io::Write;
        // A command that exits without reading its input is reported by its status, not as a write error.
        let _ = sin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&err);
    }
    Ok(Outcome {
        status: out.status.code(),
        signal: out.status.signal(),
        output: truncate(&text),
    })
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
pub fn guest_dev_links(root: &Root, facts_fs: &[crate::facts::Filesystem]) -> Vec<DevLink> {
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
    if let Ok(mounts) = crate::facts::read_mounts(root) {
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
    let head = crate::probe::read_head(dev.to_str()?)?;
    let p = crate::probe::probe_superblock(&head)?;
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
}
