//! `cloudprep export`: the bundled disk converter.

use crate::cli::{Compression, Consistency, ExportArgs, Global, ImageFormat};
use anyhow::{bail, Result};

/// Options for an export to any writer (used by `export -o -` and by `upload`).
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// `auto`, a block device or an image file.
    pub source: String,
    pub format: ImageFormat,
    pub compress: Compression,
    pub consistency: Option<Consistency>,
    pub threads: Option<usize>,
    /// Skip free ext2/3/4 blocks and unused swap pages.
    pub fs_skip: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportSummary {
    /// Guest-visible disk size.
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub bytes_skipped_free: u64,
    pub bytes_zero: u64,
    pub bytes_written: u64,
    /// SHA-256 of the guest-visible disk content (hex).
    pub sha256: String,
    pub seconds: f64,
    pub consistency: String,
}

/// Export to a writer that cannot seek (a pipe, an HTTP body). Raw streams directly; qcow2 needs an
/// allocation pass first to lay out its metadata.
pub fn export_stream(
    _opts: &StreamOptions,
    _out: &mut dyn std::io::Write,
) -> Result<ExportSummary> {
    bail!("export is not implemented yet")
}

pub fn cmd_export(_g: &Global, _a: &ExportArgs) -> Result<i32> {
    bail!("export is not implemented yet")
}
