//! `cloudprep export`.

use super::{ExportArgs, Global};
use crate::export::ExportOptions;
use anyhow::Result;

pub fn export(g: &Global, a: &ExportArgs) -> Result<i32> {
    crate::export::run(&g.root, &options(a))
}

pub(super) fn options(a: &ExportArgs) -> ExportOptions {
    ExportOptions {
        source: a.source.clone(),
        format: a.format,
        compress: a.compress,
        consistency: a.consistency,
        threads: a.threads.map(usize::from),
        verify: a.verify,
        no_fs_skip: a.no_fs_skip,
        digest: a.digest,
        output: a.output.clone(),
    }
}
