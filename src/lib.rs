//! cloudprep: prepare an old Debian/Ubuntu VM for import into an OpenStack cloud.
//!
//! The tree follows the data flow (see docs/architecture.md):
//! - [`guest`]: reading the guest under the root prefix ([`guest::root::Root`]) and the facts gathered once;
//! - [`checks`]: the check model and registry, one folder per area of the report (`boot`, `storage`,
//!   `network`, `cloud_init`, `platform`); pure parse/check/render functions over `&str`;
//! - the engine: [`audit`] runs the checks and composes the plan, [`report`] renders it, [`recommend`]
//!   derives the flavour and image properties, [`config`] reads cloudprep.toml; [`fleet`] merges and compares
//!   the per-host reports of a migration wave;
//! - the actions, which take their own option structs: [`fix`] (transactional apply, rollback),
//!   [`export`] (disk to raw/qcow2), [`upload`] (Glance), [`lifecycle`] (the pre-migration and first-boot
//!   units);
//! - [`cli`]: the clap types and one thin handler per command (arguments to options, printing, exit codes).

pub mod audit;
pub mod checks;
pub mod cli;
pub mod config;
pub mod exit;
pub mod fleet;
pub mod guest;
pub mod logging;
pub mod recommend;
pub mod report;

// Actions.
pub mod export;
pub mod fix;
pub mod lifecycle;
pub mod upload;
