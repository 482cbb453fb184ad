//! cloudprep: prepare an old Debian/Ubuntu VM for import into an OpenStack cloud.
//!
//! One module per concern; pure parse/check/render functions over `&str`, with file IO through
//! [`root::Root`] so the same code serves a live VM, a mounted offline image and test fixtures.

pub mod check;
pub mod cli;
pub mod config;
pub mod dpkg;
pub mod facts;
// Until the layout move creates src/guest/mod.rs.
#[path = "guest/fat.rs"]
pub mod fat;
pub mod logging;
pub mod netfacts;
pub mod probe;
pub mod recommend;
pub mod report;
pub mod root;

pub mod audit;

// Checks, one module per concern.
pub mod cloud_init;
pub mod firewall;
pub mod fstab;
pub mod grub;
pub mod initramfs;
pub mod network;
pub mod platform;
pub mod storage;
pub mod udev;

// Actions.
pub mod export;
pub mod fix;
pub mod lifecycle;
pub mod upload;
