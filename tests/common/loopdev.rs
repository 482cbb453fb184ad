//! Loop-device disk images for tests. There is no udev here: partitions are added with `partx -a`
//! and missing `/dev/loopNpM` nodes are created from sysfs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A disk image attached to a loop device; detached (and its mounts undone) on drop.
pub struct LoopDisk {
    pub image: PathBuf,
    pub dev: String,
    mounts: Vec<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl LoopDisk {
    /// A sparse image of `size_mib` MiB partitioned by `sfdisk` with `layout` (sfdisk script), attached.
    pub fn new(size_mib: u64, layout: &str) -> LoopDisk {
        let dir = tempfile::Builder::new()
            .prefix("cloudprep-disk.")
            .tempdir_in(super::scratch())
            .unwrap();
        let image = dir.path().join("disk.img");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        if !layout.is_empty() {
            let mut child = Command::new("sfdisk")
                .arg("-q")
                .arg(&image)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(layout.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "sfdisk failed");
        }
        let mut d = LoopDisk::attach(&image);
        d._dir = Some(dir);
        d
    }

    /// Attach an existing image file.
    pub fn attach(image: &Path) -> LoopDisk {
        let dev = super::sh("losetup", &["-f", "--show", "-P", image.to_str().unwrap()])
            .trim()
            .to_string();
        let _ = Command::new("partx").args(["-a", &dev]).output();
        let d = LoopDisk {
            image: image.to_path_buf(),
            dev,
            mounts: Vec::new(),
            _dir: None,
        };
        d.make_nodes();
        d
    }

    fn make_nodes(&self) {
        let name = self.dev.trim_start_matches("/dev/");
        let sys = PathBuf::from("/sys/class/block").join(name);
        let rd = std::fs::read_dir(&sys).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the loop device's partitions cannot be found)",
                sys.display()
            )
        });
        for e in rd.flatten() {
            let pname = e.file_name().to_string_lossy().into_owned();
            if !pname.starts_with(name) {
                continue;
            }
            let node = PathBuf::from("/dev").join(&pname);
            let devnum = std::fs::read_to_string(e.path().join("dev"))
                .unwrap_or_else(|err| panic!("{}/dev: {err}", e.path().display()));
            let (maj, min) = devnum.trim().split_once(':').unwrap();
            let want = nix::sys::stat::makedev(maj.parse().unwrap(), min.parse().unwrap());
            // A node left from an earlier attach may carry another partition's number: made anew.
            match std::fs::symlink_metadata(&node) {
                Ok(m) if m.file_type().is_block_device() && m.rdev() == want => continue,
                Ok(_) => std::fs::remove_file(&node).unwrap(),
                Err(_) => {}
            }
            super::sh("mknod", &[node.to_str().unwrap(), "b", maj, min]);
        }
    }

    /// `/dev/loopNpM`
    pub fn part(&self, n: u32) -> String {
        format!("{}p{}", self.dev, n)
    }

    /// Mount `dev` at `target` (created) and remember to unmount it on drop.
    pub fn mount(&mut self, dev: &str, target: &Path, opts: &[&str]) {
        std::fs::create_dir_all(target).unwrap();
        let mut args: Vec<&str> = opts.to_vec();
        args.push(dev);
        args.push(target.to_str().unwrap());
        super::sh("mount", &args);
        self.mounts.push(target.to_path_buf());
    }

    pub fn unmount_all(&mut self) {
        while let Some(m) = self.mounts.pop() {
            let _ = Command::new("umount").arg(&m).output();
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.unmount_all();
        let _ = Command::new("partx").args(["-d", &self.dev]).output();
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}
