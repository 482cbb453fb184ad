//! Checks: grub.

use crate::check::Check;

pub fn checks() -> Vec<Check> {
    Vec::new()
}
