//! Checks: GRUB (boot loader in the MBR / removable EFI path, device names, debconf install devices,
//! serial console).

pub mod shell;

use crate::check::Check;

pub fn checks() -> Vec<Check> {
    Vec::new()
}
