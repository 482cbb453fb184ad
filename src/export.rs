//! `cloudprep export`: the bundled disk converter.

use crate::cli::{ExportArgs, Global};
use anyhow::{bail, Result};

pub fn cmd_export(_g: &Global, _a: &ExportArgs) -> Result<i32> {
    bail!("export is not implemented yet")
}
