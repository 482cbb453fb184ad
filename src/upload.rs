//! `cloudprep upload`: export straight into the cloud's image service (Glance v2).

use crate::cli::{Global, UploadArgs};
use anyhow::{bail, Result};

pub fn cmd_upload(_g: &Global, _a: &UploadArgs) -> Result<i32> {
    bail!("upload is not implemented yet")
}
