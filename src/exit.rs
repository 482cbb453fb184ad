//! Exit codes, shared by every command: 0 ready, 1 warnings only, 2 at least one blocker, 3 cloudprep itself
//! could not run.

pub const EXIT_OK: i32 = 0;
pub const EXIT_WARNINGS: i32 = 1;
pub const EXIT_BLOCKERS: i32 = 2;
pub const EXIT_FAILURE: i32 = 3;
