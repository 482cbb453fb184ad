//! The pre-migration and first-boot sequences behind the systemd units, `arm`/`disarm`, and the man page.

use crate::cli::{ArmArgs, Global, PremigrateArgs};
use anyhow::{bail, Result};

pub fn cmd_arm(_g: &Global, _a: &ArmArgs) -> Result<i32> {
    bail!("arm is not implemented yet")
}

pub fn cmd_disarm(_g: &Global) -> Result<i32> {
    bail!("disarm is not implemented yet")
}

pub fn cmd_premigrate(_g: &Global, _a: &PremigrateArgs) -> Result<i32> {
    bail!("premigrate is not implemented yet")
}

pub fn cmd_firstboot(_g: &Global) -> Result<i32> {
    bail!("firstboot is not implemented yet")
}

pub fn cmd_man() -> Result<i32> {
    bail!("man is not implemented yet")
}
