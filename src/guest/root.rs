//! Every path cloudprep touches goes through a [`Root`]: the guest's `/` as seen from where we run.
//!
//! Resolution follows chroot semantics: `..` never climbs above the root and absolute symlink targets are
//! re-anchored at the root, so neither `Path::join` with an absolute path nor a guest symlink can escape.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

/// What a guest path resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Host path, always inside the root.
    pub host: PathBuf,
    /// Canonical guest path (absolute, symlinks resolved).
    pub guest: String,
}

impl Root {
    pub fn new(base: impl AsRef<Path>) -> Result<Root> {
        let base = base.as_ref();
        let canon =
            fs::canonicalize(base).with_context(|| format!("opening root {}", base.display()))?;
        if !canon.is_dir() {
            bail!("root {} is not a directory", canon.display());
        }
        Ok(Root { base: canon })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// True when the root is the running system's `/` (live facts such as interfaces are then meaningful).
    pub fn is_live(&self) -> bool {
        self.base == Path::new("/")
    }

    /// Host path for a guest path without resolving symlinks (lexical, `..` clamped).
    pub fn lexical(&self, guest: impl AsRef<Path>) -> PathBuf {
        let mut out = self.base.clone();
        for c in normalize(guest.as_ref()) {
            out.push(c);
        }
        out
    }

    /// Resolve `guest` following every symlink inside the root. The final component need not exist.
    pub fn resolve(&self, guest: impl AsRef<Path>) -> Result<Resolved> {
        self.resolve_inner(guest.as_ref(), true)
    }

    /// Like [`resolve`](Self::resolve) but does not follow a symlink in the final component.
    pub fn resolve_parent(&self, guest: impl AsRef<Path>) -> Result<Resolved> {
        self.resolve_inner(guest.as_ref(), false)
    }

    fn resolve_inner(&self, guest: &Path, follow_last: bool) -> Result<Resolved> {
        let mut pending: Vec<String> = normalize_keep_dots(guest);
        pending.reverse();
        let mut stack: Vec<String> = Vec::new();
        let mut hops = 0usize;
        while let Some(comp) = pending.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            stack.push(comp);
            let is_last = pending.is_empty();
            if is_last && !follow_last {
                break;
            }
            let host = self.host_of(&stack);
            let meta = match fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    // Nothing more to follow: the rest is taken literally.
                    while let Some(c) = pending.pop() {
                        match c.as_str() {
                            "." => {}
                            ".." => {
                                stack.pop();
                            }
                            _ => stack.push(c),
                        }
                    }
                    break;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("inspecting {}", host.display()));
                }
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    bail!(
                        "too many levels of symbolic links (symlink loop) resolving {}",
                        guest.display()
                    );
                }
                let target = fs::read_link(&host)
                    .with_context(|| format!("reading symlink {}", host.display()))?;
                stack.pop();
                if target.is_absolute() {
                    stack.clear();
                }
                let mut t = normalize_keep_dots(&target);
                t.reverse();
                pending.extend(t);
            }
        }
        let guest_str = format!("/{}", stack.join("/"));
        Ok(Resolved {
            host: self.host_of(&stack),
            guest: guest_str,
        })
    }

    fn host_of(&self, stack: &[String]) -> PathBuf {
        let mut p = self.base.clone();
        for c in stack {
            p.push(c);
        }
        p
    }

    /// Read a file; `Ok(None)` when it does not exist.
    pub fn read(&self, guest: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let guest = guest.as_ref();
        let r = self.resolve(guest)?;
        match fs::metadata(&r.host) {
            Ok(m) if m.is_dir() => bail!(
                "reading {}: is a directory, expected a file",
                self.display(guest)
            ),
            // A FIFO or device where a config file belongs would block or stream forever.
            Ok(m) if !m.is_file() => bail!("reading {}: not a regular file", self.display(guest)),
            _ => {}
        }
        match fs::read(&r.host) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.display(guest))),
        }
    }

    /// Read a text file; `Ok(None)` when it does not exist. A file with NUL bytes or invalid UTF-8 is an error
    /// naming the path (and the line of the first offending byte).
    pub fn read_text(&self, guest: impl AsRef<Path>) -> Result<Option<String>> {
        let guest = guest.as_ref();
        match self.read(guest)? {
            None => Ok(None),
            Some(bytes) => text_from_bytes(bytes)
                .map(Some)
                .with_context(|| format!("reading {}", self.display(guest))),
        }
    }

    pub fn exists(&self, guest: impl AsRef<Path>) -> bool {
        self.resolve(guest)
            .map(|r| fs::symlink_metadata(r.host).is_ok())
            .unwrap_or(false)
    }

    pub fn is_dir(&self, guest: impl AsRef<Path>) -> bool {
        self.resolve(guest)
            .map(|r| r.host.is_dir())
            .unwrap_or(false)
    }

    /// Sorted entry names of a directory; empty when it does not exist.
    pub fn list_dir(&self, guest: impl AsRef<Path>) -> Result<Vec<String>> {
        let guest = guest.as_ref();
        let r = self.resolve(guest)?;
        let rd = match fs::read_dir(&r.host) {
            Ok(rd) => rd,
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.display(guest))),
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.with_context(|| format!("listing {}", self.display(guest)))?;
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Guest paths (`dir/name`) of the regular files in `dir` whose names match `pred`, sorted.
    pub fn files_in(&self, dir: &str, pred: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.list_dir(dir)? {
            if !pred(&name) {
                continue;
            }
            let g = format!("{}/{}", dir.trim_end_matches('/'), name);
            if let Ok(r) = self.resolve(&g) {
                if r.host.is_file() {
                    out.push(g);
                }
            }
        }
        Ok(out)
    }

    /// How to name a guest path in messages: the guest path, plus the root when it is not `/`.
    pub fn display(&self, guest: impl AsRef<Path>) -> String {
        let g = guest.as_ref().display().to_string();
        if self.is_live() {
            g
        } else {
            format!("{} (under {})", g, self.base.display())
        }
    }
}

/// Bytes to text for config files: NUL bytes or invalid UTF-8 are an error naming the line.
pub fn text_from_bytes(bytes: Vec<u8>) -> Result<String> {
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        let line = bytes[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        bail!("binary data (NUL byte) at line {line}: not a text file");
    }
    String::from_utf8(bytes).map_err(|e| {
        let pos = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("invalid UTF-8 at line {line}: not a text file")
    })
}

fn normalize(p: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn normalize_keep_dots(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/real"), "x").unwrap();
        symlink("/etc/real", d.path().join("etc/link")).unwrap();
        symlink("../../../../../etc/passwd", d.path().join("etc/up")).unwrap();
        let r = root.resolve("/etc/link").unwrap();
        assert_eq!(r.host, root.base().join("etc/real"));
        assert_eq!(r.guest, "/etc/real");
        let r = root.resolve("/etc/up").unwrap();
        assert_eq!(r.host, root.base().join("etc/passwd"));
        assert_eq!(root.read("/etc/up").unwrap(), None);
        assert_eq!(root.lexical("/../../x"), root.base().join("x"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        symlink("/b", d.path().join("a")).unwrap();
        symlink("/a", d.path().join("b")).unwrap();
        let e = root.read_text("/a").unwrap_err();
        assert!(format!("{e:#}").contains("symlink loop"), "{e:#}");
    }

    #[test]
    fn special_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        fs::create_dir_all(d.path().join("etc/fstab")).unwrap();
        let e = root.read_text("/etc/fstab").unwrap_err();
        assert!(format!("{e:#}").contains("is a directory"), "{e:#}");
        nix::unistd::mkfifo(&d.path().join("etc/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = root.read_text("/etc/fifo").unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
    }

    #[test]
    fn binary_text_names_line() {
        let e = text_from_bytes(b"a\nb\n\0".to_vec()).unwrap_err();
        assert!(e.to_string().contains("line 3"));
        let e = text_from_bytes(b"ok\n\xff".to_vec()).unwrap_err();
        assert!(e.to_string().contains("line 2"));
    }

    #[test]
    fn relative_symlink_through_dirs() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        fs::create_dir_all(d.path().join("run/resolvconf")).unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("run/resolvconf/resolv.conf"),
            "nameserver 1.1.1.1\n",
        )
        .unwrap();
        symlink(
            "../run/resolvconf/resolv.conf",
            d.path().join("etc/resolv.conf"),
        )
        .unwrap();
        assert_eq!(
            root.read_text("/etc/resolv.conf").unwrap().unwrap(),
            "nameserver 1.1.1.1\n"
        );
        let p = root.resolve_parent("/etc/resolv.conf").unwrap();
        assert_eq!(p.guest, "/etc/resolv.conf");
    }
}
