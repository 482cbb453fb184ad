//! `cloudprep arm`, `disarm`, `premigrate`, `firstboot` and `man`.

use super::{ArmArgs, Global, PremigrateArgs};
use crate::lifecycle::{self, ArmOptions};
use anyhow::Result;

pub fn arm(g: &Global, a: &ArmArgs) -> Result<i32> {
    lifecycle::arm(
        &g.target(),
        &ArmOptions {
            export: a.export.clone(),
            format: a.format,
        },
    )
}

pub fn disarm(g: &Global) -> Result<i32> {
    lifecycle::disarm(&g.target())
}

pub fn premigrate(g: &Global, a: &PremigrateArgs) -> Result<i32> {
    lifecycle::premigrate_cmd(&g.target(), a.poweroff)
}

pub fn firstboot(g: &Global) -> Result<i32> {
    lifecycle::firstboot(&g.target())
}

pub fn man() -> Result<i32> {
    super::man::cmd_man()
}
