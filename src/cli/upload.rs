//! `cloudprep upload`.

use super::{Global, UploadArgs};
use crate::upload::UploadOptions;
use anyhow::Result;

pub fn upload(g: &Global, a: &UploadArgs) -> Result<i32> {
    crate::upload::run(
        &g.root,
        &UploadOptions {
            name: a.name.clone(),
            format: a.format,
            visibility: a.visibility,
            properties: a.properties.clone(),
            source: a.source.clone(),
            consistency: a.consistency,
            file: a.file.clone(),
            insecure: a.insecure,
            retries: a.retries,
        },
    )
}
