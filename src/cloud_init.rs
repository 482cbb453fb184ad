//! Checks: cloud_init.

use crate::check::Check;

pub fn checks() -> Vec<Check> {
    Vec::new()
}
