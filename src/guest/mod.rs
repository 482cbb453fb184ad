//! The guest model: what the checks share for reading the guest. [`root::Root`] does every file read under
//! the root prefix (chroot semantics), [`facts::Facts`] is what [`probe`] gathers once per run (OS, disks,
//! mounts, kernels, interfaces), [`netfacts`] reads the live network state and [`dpkg`] the package database.
//! [`fat`] reads and writes a FAT filesystem (the EFI system partition) the host cannot mount.

pub mod dpkg;
pub mod facts;
pub mod fat;
pub mod netfacts;
pub mod probe;
pub mod root;

use crate::config::Config;
use anyhow::Result;
use std::path::PathBuf;

/// Which guest a command works on: the root prefix (`/` on the running VM, or where an offline image is
/// mounted) and the configuration file (host path; default `/etc/cloudprep/cloudprep.toml` under the root).
#[derive(Debug, Clone)]
pub struct Target {
    pub root: PathBuf,
    pub config: Option<PathBuf>,
}

impl Target {
    /// Open the root and load the configuration (an error here is exit 3 for the caller).
    pub fn open(&self) -> Result<(root::Root, Config)> {
        let root = root::Root::new(&self.root)?;
        let config = Config::load(&root, self.config.as_deref())?;
        Ok((root, config))
    }
}
