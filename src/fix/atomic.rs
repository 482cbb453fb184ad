//! Safe, atomic file operations inside a guest root.
//!
//! A guest path is resolved through [`Root`] (symlinks re-anchored at the root), then its parent directory
//! is opened with `O_NOFOLLOW` and checked (via `/proc/self/fd`) to be exactly the resolved directory; every
//! later operation is relative to that directory descriptor (`openat`, `renameat`, `unlinkat`), so a
//! symlink swapped in afterwards cannot redirect a write out of the root. Writes go to a temporary file
//! created with `O_EXCL` in the same directory, fsynced, given the original mode/owner (and mtime when
//! restoring), renamed over the target, and the directory is fsynced.

use super::journal::{Kind, Meta};
use crate::guest::root::Root;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Fill `buf` with random bytes from the kernel.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - filled,
                0,
            )
        };
        if n <= 0 {
            // Practically unreachable; fall back to something unique enough for temp names.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                ^ (std::process::id() as u128) << 64;
            for (i, b) in buf[filled..].iter_mut().enumerate() {
                *b = (t >> ((i % 16) * 8)) as u8;
            }
            return;
        }
        filled += n as usize;
    }
}

fn cstr(p: &OsStr) -> Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| anyhow!("path contains a NUL byte"))
}

fn errno<T>(what: impl FnOnce() -> String) -> Result<T> {
    Err(std::io::Error::last_os_error()).with_context(what)
}

/// fsync a directory by host path.
pub fn fsync_dir(p: &Path) -> Result<()> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", p.display()))
}

/// Split a canonical guest path into parent and name.
pub fn split(guest: &str) -> Result<(String, String)> {
    let g = guest.trim_end_matches('/');
    let (parent, name) = g
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("not an absolute path: {guest}"))?;
    if name.is_empty() || name == "." || name == ".." {
        bail!("not a file path: {guest}");
    }
    Ok((
        if parent.is_empty() { "/" } else { parent }.to_string(),
        name.to_string(),
    ))
}

/// An open directory inside the root.
pub struct Dir {
    fd: OwnedFd,
    pub host: PathBuf,
    pub guest: String,
}

/// What is at a name in a directory.
pub enum Existing {
    Absent,
    File { bytes: Vec<u8>, meta: Meta },
    Symlink { target: PathBuf, meta: Meta },
    Other(&'static str),
}

impl Existing {
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Existing::Absent => Some(Kind::Absent),
            Existing::File { .. } => Some(Kind::File),
            Existing::Symlink { .. } => Some(Kind::Symlink),
            Existing::Other(_) => None,
        }
    }
}

fn meta_of(st: &libc::stat) -> Meta {
    Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        xattrs: Vec::new(),
    }
}

/// The extended attributes of an open file (empty where the filesystem has none or does not support them).
fn xattrs_of(fd: libc::c_int) -> Vec<(String, String)> {
    // SAFETY: flistxattr/fgetxattr write at most the given sizes into buffers we own.
    let names = unsafe {
        let n = libc::flistxattr(fd, std::ptr::null_mut(), 0);
        if n <= 0 {
            return Vec::new();
        }
        let mut buf = vec![0u8; n as usize];
        let n = libc::flistxattr(fd, buf.as_mut_ptr() as *mut libc::c_char, buf.len());
        if n <= 0 {
            return Vec::new();
        }
        buf.truncate(n as usize);
        buf
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: as above.
        let value = unsafe {
            let n = libc::fgetxattr(fd, cname.as_ptr(), std::ptr::null_mut(), 0);
            if n < 0 {
                continue;
            }
            let mut v = vec![0u8; n as usize];
            let n = libc::fgetxattr(
                fd,
                cname.as_ptr(),
                v.as_mut_ptr() as *mut libc::c_void,
                v.len(),
            );
            if n < 0 {
                continue;
            }
            v.truncate(n as usize);
            v
        };
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            hex::encode(value),
        ));
    }
    out
}

/// Set extended attributes on an open file. One that cannot be set (unsupported here, not permitted) is
/// logged and skipped: the content and mode are what matter for the guest to boot.
fn set_xattrs(fd: libc::c_int, xattrs: &[(String, String)], what: &str) {
    for (name, value) in xattrs {
        let (Ok(cname), Ok(v)) = (CString::new(name.as_str()), hex::decode(value)) else {
            continue;
        };
        // SAFETY: valid fd, NUL-terminated name, value buffer of its length.
        let r = unsafe {
            libc::fsetxattr(
                fd,
                cname.as_ptr(),
                v.as_ptr() as *const libc::c_void,
                v.len(),
                0,
            )
        };
        if r < 0 {
            log::warn!(
                "{what}: extended attribute {name} not kept: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFBLK => "a block device",
        libc::S_IFCHR => "a character device",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        _ => "an unknown file type",
    }
}

impl Dir {
    /// Open the guest directory `guest` (canonical or not) inside `root`. Fails if it does not exist, is
    /// not a directory, or resolves differently once opened (something changed under us).
    pub fn open(root: &Root, guest: &str) -> Result<Dir> {
        let r = root.resolve(guest)?;
        let c = cstr(r.host.as_os_str())?;
        // SAFETY: c is a valid NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return errno(|| format!("opening directory {}", root.display(guest)));
        }
        // SAFETY: fd was just opened and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let actual = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .context("reading /proc/self/fd")?;
        if actual != r.host {
            bail!(
                "{} changed while it was being opened (now {}): refusing to write",
                root.display(guest),
                actual.display()
            );
        }
        if !actual.starts_with(root.base()) {
            bail!("{} resolves outside the root", root.display(guest));
        }
        Ok(Dir {
            fd,
            host: r.host,
            guest: r.guest,
        })
    }

    fn name(&self, name: &str) -> Result<CString> {
        if name.contains('/') || name.is_empty() || name == "." || name == ".." {
            bail!("bad file name {name:?}");
        }
        cstr(OsStr::new(name))
    }

    pub fn path_of(&self, name: &str) -> String {
        if self.guest == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.guest)
        }
    }

    fn lstat(&self, name: &str) -> Result<Option<libc::stat>> {
        let c = self.name(name)?;
        // SAFETY: zeroed stat is a valid out-parameter; c is NUL-terminated.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("inspecting {}", self.path_of(name)));
        }
        Ok(Some(st))
    }

    /// What is at `name` now (read without following a final symlink).
    pub fn read(&self, name: &str) -> Result<Existing> {
        let Some(st) = self.lstat(name)? else {
            return Ok(Existing::Absent);
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let c = self.name(name)?;
                // SAFETY: valid dirfd and path.
                let fd = unsafe {
                    libc::openat(
                        self.fd.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
                    )
                };
                if fd < 0 {
                    return errno(|| format!("opening {}", self.path_of(name)));
                }
                // SAFETY: fd is ours.
                let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
                let mut st2: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: fd valid.
                if unsafe { libc::fstat(f.as_raw_fd(), &mut st2) } < 0 {
                    return errno(|| format!("inspecting {}", self.path_of(name)));
                }
                if st2.st_ino != st.st_ino || st2.st_mode & libc::S_IFMT != libc::S_IFREG {
                    bail!("{} changed type under us", self.path_of(name));
                }
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .with_context(|| format!("reading {}", self.path_of(name)))?;
                let mut meta = meta_of(&st2);
                meta.xattrs = xattrs_of(f.as_raw_fd());
                Ok(Existing::File { bytes, meta })
            }
            libc::S_IFLNK => {
                let c = self.name(name)?;
                let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
                // SAFETY: buf is writable for its length.
                let n = unsafe {
                    libc::readlinkat(
                        self.fd.as_raw_fd(),
                        c.as_ptr(),
                        buf.as_mut_ptr() as *mut libc::c_char,
                        buf.len(),
                    )
                };
                if n < 0 {
                    return errno(|| format!("reading link {}", self.path_of(name)));
                }
                buf.truncate(n as usize);
                Ok(Existing::Symlink {
                    target: PathBuf::from(OsStr::from_bytes(&buf)),
                    meta: meta_of(&st),
                })
            }
            m => Ok(Existing::Other(type_name(m))),
        }
    }

    fn temp_name(&self, name: &str) -> String {
        let mut r = [0u8; 6];
        random_bytes(&mut r);
        let short: String = name.chars().take(40).collect();
        format!(".{short}.cloudprep-{}", hex::encode(r))
    }

    /// Atomically replace (or create) `name` with `bytes`, mode/owner from `meta`; the mtime too when
    /// `set_mtime`. Refuses when `name` is now a directory, symlink or special file.
    pub fn write(&self, name: &str, bytes: &[u8], meta: &Meta, set_mtime: bool) -> Result<()> {
        if let Some(st) = self.lstat(name)? {
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                bail!(
                    "{} is {} now: refusing to replace it",
                    self.path_of(name),
                    type_name(st.st_mode)
                );
            }
        }
        let tmp = self.temp_name(name);
        let ctmp = self.name(&tmp)?;
        // SAFETY: valid dirfd and path.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                ctmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return errno(|| format!("creating a temporary file in {}", self.guest));
        }
        // SAFETY: fd is ours.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let res = (|| -> Result<()> {
            f.write_all(bytes)?;
            // chown before chmod: chown clears set-id bits.
            // SAFETY: fd valid.
            if unsafe { libc::fchown(f.as_raw_fd(), meta.uid, meta.gid) } < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            if unsafe { libc::fchmod(f.as_raw_fd(), meta.mode as libc::mode_t) } < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            // After the mode: an access ACL carries the mode's bits and must win.
            set_xattrs(f.as_raw_fd(), &meta.xattrs, &self.path_of(name));
            if set_mtime {
                let ts = [
                    libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                    libc::timespec {
                        tv_sec: meta.mtime,
                        tv_nsec: meta.mtime_nsec,
                    },
                ];
                if unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) } < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
            }
            f.sync_all()?;
            Ok(())
        })();
        drop(f);
        if let Err(e) = res {
            self.unlink_quiet(&tmp);
            return Err(e).with_context(|| format!("writing {}", self.path_of(name)));
        }
        self.commit_tmp(&tmp, &ctmp, name)
    }

    /// Atomically make `name` a symlink to `target` (restoring a removed link).
    pub fn symlink(&self, name: &str, target: &Path, meta: &Meta) -> Result<()> {
        if let Some(st) = self.lstat(name)? {
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                bail!("{} is a directory now", self.path_of(name));
            }
        }
        let tmp = self.temp_name(name);
        let ctmp = self.name(&tmp)?;
        let ct = cstr(target.as_os_str())?;
        // SAFETY: valid pointers.
        if unsafe { libc::symlinkat(ct.as_ptr(), self.fd.as_raw_fd(), ctmp.as_ptr()) } < 0 {
            return errno(|| format!("creating link {}", self.path_of(name)));
        }
        // SAFETY: valid pointers.
        unsafe {
            libc::fchownat(
                self.fd.as_raw_fd(),
                ctmp.as_ptr(),
                meta.uid,
                meta.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            );
            let ts = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: meta.mtime,
                    tv_nsec: meta.mtime_nsec,
                },
            ];
            libc::utimensat(
                self.fd.as_raw_fd(),
                ctmp.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            );
        }
        self.commit_tmp(&tmp, &ctmp, name)
    }

    /// Remove `name` (a file or symlink); absent is fine.
    pub fn unlink(&self, name: &str) -> Result<()> {
        let c = self.name(name)?;
        // SAFETY: valid pointers.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e).with_context(|| format!("removing {}", self.path_of(name)));
            }
        }
        self.sync()
    }

    /// Rename the temp entry `tmp` over `name` in this directory and fsync the directory; the temp entry is
    /// removed when the rename fails.
    fn commit_tmp(&self, tmp: &str, ctmp: &CString, name: &str) -> Result<()> {
        let cname = self.name(name)?;
        // SAFETY: valid dirfd and NUL-terminated paths.
        let r = unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                ctmp.as_ptr(),
                self.fd.as_raw_fd(),
                cname.as_ptr(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            self.unlink_quiet(tmp);
            return Err(e).with_context(|| format!("renaming into {}", self.path_of(name)));
        }
        self.sync()
    }

    fn unlink_quiet(&self, name: &str) {
        if let Ok(c) = self.name(name) {
            // SAFETY: valid pointers.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    /// Create the subdirectory `name` (root:root 0755).
    pub fn mkdir(&self, name: &str) -> Result<()> {
        let c = self.name(name)?;
        // SAFETY: valid pointers.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).with_context(|| format!("creating {}", self.path_of(name)));
            }
        }
        self.sync()
    }

    /// Remove the empty subdirectory `name`; `Ok(false)` when it is not empty or absent.
    pub fn rmdir(&self, name: &str) -> Result<bool> {
        let c = self.name(name)?;
        // SAFETY: valid pointers.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Ok(false),
                _ => Err(e).with_context(|| format!("removing {}", self.path_of(name))),
            };
        }
        self.sync()?;
        Ok(true)
    }

    pub fn sync(&self) -> Result<()> {
        // SAFETY: fd valid.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } < 0 {
            return errno(|| format!("syncing {}", self.guest));
        }
        Ok(())
    }
}

/// Make sure the guest directory `guest` exists, creating missing components one by one; `before_mkdir`
/// is called with each directory's guest path before it is created (to journal it).
pub fn ensure_dir(
    root: &Root,
    guest: &str,
    before_mkdir: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Dir> {
    let r = root.resolve(guest)?;
    if r.host.is_dir() {
        return Dir::open(root, &r.guest);
    }
    let (parent, name) = split(&r.guest)?;
    let pd = ensure_dir(root, &parent, before_mkdir)?;
    match pd.read(&name)? {
        Existing::Absent => {
            before_mkdir(&pd.path_of(&name))?;
            pd.mkdir(&name)?;
        }
        Existing::Other("a directory") => {}
        Existing::Other(t) => bail!("{} is {t}, not a directory", pd.path_of(&name)),
        _ => bail!("{} is not a directory", pd.path_of(&name)),
    }
    Dir::open(root, &pd.path_of(&name))
}

/// sha256 hex of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn write_is_atomic_keeps_mode_and_stays_in_root() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        // A guest symlink pointing at an absolute host-looking path stays inside the root.
        std::os::unix::fs::symlink(outside.path(), d.path().join("etc/evil")).unwrap();
        let root = Root::new(d.path()).unwrap();
        let dir = Dir::open(&root, "/etc").unwrap();
        let meta = Meta {
            mode: 0o640,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mtime: 1_000_000_000,
            mtime_nsec: 5,
            xattrs: Vec::new(),
        };
        dir.write("x", b"a\r\nb", &meta, true).unwrap();
        let m = std::fs::metadata(d.path().join("etc/x")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(m.mtime(), 1_000_000_000);
        assert_eq!(m.mtime_nsec(), 5);
        assert_eq!(std::fs::read(d.path().join("etc/x")).unwrap(), b"a\r\nb");
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(d.path().join("etc")).unwrap().count(), 2);
        // Through the symlinked directory: lands inside the root, not in `outside`.
        let ev = root.resolve("/etc/evil").unwrap();
        assert!(ev.host.starts_with(root.base()));
        assert!(Dir::open(&root, "/etc/evil").is_err() || ev.host.is_dir());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // Replacing a directory is refused.
        std::fs::create_dir(d.path().join("etc/sub")).unwrap();
        assert!(dir.write("sub", b"x", &meta, false).is_err());
        let (p, n) = split("/etc/fstab").unwrap();
        assert_eq!((p.as_str(), n.as_str()), ("/etc", "fstab"));
        let (p, _) = split("/x").unwrap();
        assert_eq!(p, "/");
    }

    #[test]
    fn a_rewrite_keeps_extended_attributes() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        let p = d.path().join("etc/conf");
        std::fs::write(&p, "old\n").unwrap();
        let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path and buffers.
        let r = unsafe {
            libc::setxattr(
                cp.as_ptr(),
                c"user.cloudprep-test".as_ptr(),
                b"v\x00\xff".as_ptr() as *const libc::c_void,
                3,
                0,
            )
        };
        assert_eq!(
            r,
            0,
            "setting a user xattr under /var/tmp (the test needs a filesystem with user xattrs): {}",
            std::io::Error::last_os_error()
        );
        let root = Root::new(d.path()).unwrap();
        let dir = Dir::open(&root, "/etc").unwrap();
        let Existing::File { meta, .. } = dir.read("conf").unwrap() else {
            panic!("not a file");
        };
        assert_eq!(
            meta.xattrs,
            vec![("user.cloudprep-test".to_string(), "7600ff".to_string())]
        );
        dir.write("conf", b"new\n", &meta, false).unwrap();
        let mut v = [0u8; 16];
        // SAFETY: valid path and buffer.
        let n = unsafe {
            libc::getxattr(
                cp.as_ptr(),
                c"user.cloudprep-test".as_ptr(),
                v.as_mut_ptr() as *mut libc::c_void,
                v.len(),
            )
        };
        assert_eq!(n, 3, "{}", std::io::Error::last_os_error());
        assert_eq!(&v[..3], b"v\x00\xff");
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
        // The journal form of the meta round-trips, and old journals without xattrs still parse.
        let j = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<Meta>(&j).unwrap(), meta);
        let old: Meta =
            serde_json::from_str(r#"{"mode":420,"uid":0,"gid":0,"mtime":1,"mtime_nsec":0}"#)
                .unwrap();
        assert!(old.xattrs.is_empty());
    }
}
