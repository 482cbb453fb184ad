//! Checks: initramfs (virtio drivers in every kernel's initramfs, free space in /boot).

pub mod cpio;

use crate::check::Check;

pub fn checks() -> Vec<Check> {
    Vec::new()
}
