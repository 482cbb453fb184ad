//! The `boot` area: the boot loader (GRUB in the MBR or the EFI fallback path, `root=` by UUID, the serial
//! terminal and console) and the initramfs (virtio drivers, free space in /boot).

pub mod grub;
pub mod initramfs;
