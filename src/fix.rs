//! `cloudprep fix`, `rollback`, `runs`: the transactional executor of the audit's plan.

use crate::cli::{FixArgs, Global, RollbackArgs, RunsArgs};
use anyhow::{bail, Result};

pub fn cmd_fix(_g: &Global, _a: &FixArgs) -> Result<i32> {
    bail!("fix is not implemented yet")
}

pub fn cmd_rollback(_g: &Global, _a: &RollbackArgs) -> Result<i32> {
    bail!("rollback is not implemented yet")
}

pub fn cmd_runs(_g: &Global, _a: &RunsArgs) -> Result<i32> {
    bail!("runs is not implemented yet")
}
