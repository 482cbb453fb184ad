//! Command-line interface: the argument structs (clap derive), dispatch, and one thin handler per command
//! (`audit`, `fix`, `export`, `upload`, `lifecycle`) that turns arguments into the library's own option
//! structs, prints, and maps the outcome to an exit code. Exit codes follow the audit: 0 ready, 1 warnings
//! only, 2 at least one blocker, 3 cloudprep itself could not run. Nothing outside this module imports it.

mod audit;
mod export;
mod fix;
mod lifecycle;
mod man;
mod report;
mod upload;

pub use crate::exit::{EXIT_BLOCKERS, EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS};
pub use crate::export::{Compression, Consistency, Digest, ImageFormat};
pub use crate::fleet::FleetFormat;
pub use crate::report::{ColorChoice, Format};
pub use crate::upload::Visibility;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cloudprep",
    version,
    about = "Prepare an old Debian/Ubuntu VM for import into an OpenStack cloud",
    long_about = "cloudprep audits a Debian or Ubuntu guest for everything that breaks when it is imported into an \
OpenStack cloud (virtio disks and NICs, DHCP, cloud-init with the EC2 metadata service), fixes what can be fixed \
with backups and rollback, and exports the disk as raw or qcow2 for the image service.",
    after_help = "Exit status: 0 ready for the cloud, 1 warnings only, 2 at least one blocker, 3 cloudprep could not run.\n\
Configuration: /etc/cloudprep/cloudprep.toml under --root (optional; every key has a default)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The guest's root directory: `/` on the running VM, or where an offline image is mounted.
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Configuration file (host path). Default: /etc/cloudprep/cloudprep.toml under --root.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (repeat for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colour in text output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report everything that would break in the cloud, with evidence and the planned fix. Changes nothing.
    Audit(AuditArgs),
    /// List every check: id, title, severity, and whether `fix` can repair it.
    Checks(ChecksArgs),
    /// Apply the planned fixes transactionally (backups, journal, validation), then audit again.
    Fix(FixArgs),
    /// Undo the last fix run (or the named one), restoring every file byte for byte.
    Rollback(RollbackArgs),
    /// List fix runs recorded under /var/lib/cloudprep/runs.
    Runs(RunsArgs),
    /// Export the disk holding / as a raw or qcow2 image with the bundled converter.
    Export(ExportArgs),
    /// Export the disk straight into the cloud's image service (Glance v2), using OS_* / clouds.yaml credentials.
    Upload(UploadArgs),
    /// Enable the one-shot pre-migration unit (audit, fix, optional export, power off at next shutdown).
    Arm(ArmArgs),
    /// Disable the pre-migration unit again.
    Disarm,
    /// Run the pre-migration sequence now (what cloudprep-premigrate.service runs).
    Premigrate(PremigrateArgs),
    /// First boot in the cloud: re-audit, reinstall GRUB on the new boot disk, write the report, disarm.
    Firstboot,
    /// Fleet reports: merge per-host audit reports into one report of the wave, or compare two runs.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Print the man page (roff) generated from this command-line definition.
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ReportCommand {
    /// Merge per-host audit reports (JSON, schema 1) into one fleet report: per host its status, blockers,
    /// flavour, min_disk, firmware and old NICs; per check the hosts failing it; totals.
    #[command(
        after_help = "Each input is a report file or a directory of *.json reports; the host name is the \
file name without .json (the Ansible collection writes <report_dir>/<inventory_hostname>.json).\n\
A truncated or foreign file, an unknown schema version, a second report of a host or an empty directory is \
skipped with a message naming it; the other hosts are still merged.\n\
Exit status: 0 every input merged; 1 at least one input skipped (named on stderr and in the report); \
3 could not run (bad arguments, unreadable waiver file, output not writable)."
    )]
    Merge(MergeArgs),
    /// Compare two runs (two host reports or two fleet reports): findings that appeared, disappeared or
    /// changed, and each host's status change (e.g. blocked -> ready).
    #[command(
        after_help = "Exit status: 0 no difference; 1 differences found; 3 could not run (an \
unreadable or foreign report)."
    )]
    Diff(DiffArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// Host report files (`<host>.json`) or directories of them.
    #[arg(required = true, value_name = "REPORT.json|DIR")]
    pub inputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = FleetFormat::Text)]
    pub format: FleetFormat,
    /// Write the fleet report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Fleet waiver file (TOML: [waivers] "check.id" = "reason", or [[waiver]] check, hosts glob, reason).
    #[arg(long, value_name = "FILE")]
    pub waivers: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// The earlier report (host or fleet JSON).
    pub old: PathBuf,
    /// The later report (host or fleet JSON).
    pub new: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the comparison to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Run only these checks (comma-separated ids, `area.` prefixes or area names).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub only: Vec<String>,
    /// Skip these checks (comma-separated ids, `area.` prefixes or area names).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub skip: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Report format (default: text).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ChecksArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug, Clone)]
pub struct FixArgs {
    /// Print exactly the diffs and commands fix would apply, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Report format of the final summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// Run id to roll back (default: the last run that is not rolled back yet).
    pub run_id: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunsArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// `auto` (the disk holding /), a block device, or an image file.
    #[arg(long, default_value = "auto", value_name = "auto|DEVICE|FILE")]
    pub source: String,
    #[arg(long, value_enum, default_value_t = ImageFormat::Raw)]
    pub format: ImageFormat,
    /// qcow2 cluster compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compress: Compression,
    /// How to keep mounted filesystems of the source consistent during the copy.
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Compression threads, 1 to 64 (default: all cores, at most 64).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub threads: Option<u8>,
    /// After writing, read the output back from the disk and compare its guest content with what was
    /// read from the source (and a qcow2's bytes with its output digest).
    #[arg(long)]
    pub verify: bool,
    /// Do not skip free filesystem blocks and unused swap (copy every allocated byte).
    #[arg(long)]
    pub no_fs_skip: bool,
    /// SHA-256 in the summary: of the output as written (`sha256sum` of the file or of the `-o -` bytes),
    /// of the guest-visible disk `content` (every byte of the disk, zeros included: slow on a large
    /// mostly empty disk), or `none`.
    #[arg(long, value_enum, default_value_t = Digest::Output)]
    pub digest: Digest,
    /// Output file, or `-` for standard output (raw, or qcow2 after an allocation pass).
    #[arg(long, short)]
    pub output: String,
}

#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    /// Image name (default: derived from the OS, e.g. debian-12-migrated).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_enum, default_value_t = ImageFormat::Raw)]
    pub format: ImageFormat,
    #[arg(long, value_enum, default_value_t = Visibility::Private)]
    pub visibility: Visibility,
    /// Extra or overriding image property KEY=VALUE (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// `auto` (the disk holding /), a block device, or an image file.
    #[arg(long, default_value = "auto", value_name = "auto|DEVICE|FILE")]
    pub source: String,
    /// How to keep mounted filesystems of the source consistent during the export.
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Upload an already exported image file as it is (no conversion; --source and --consistency do not
    /// apply).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "consistency"])]
    pub file: Option<std::path::PathBuf>,
    /// Do not verify the server's TLS certificate (OS_INSECURE does the same).
    #[arg(long)]
    pub insecure: bool,
    /// Upload attempts into the same queued image before giving up.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ArmArgs {
    /// Also export the disk to this file or device during the pre-migration shutdown.
    #[arg(long, value_name = "FILE|DEVICE")]
    pub export: Option<String>,
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct PremigrateArgs {
    /// Power the machine off at the end (the unit handles power-off itself otherwise).
    #[arg(long)]
    pub poweroff: bool,
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_FAILURE,
            };
            let _ = e.print();
            return code;
        }
    };
    crate::logging::init(cli.global.verbose);
    let r = match &cli.command {
        Command::Audit(a) => audit::audit(&cli.global, a),
        Command::Checks(a) => audit::checks(a),
        Command::Fix(a) => fix::fix(&cli.global, a),
        Command::Rollback(a) => fix::rollback(&cli.global, a),
        Command::Runs(a) => fix::runs(&cli.global, a),
        Command::Export(a) => export::export(&cli.global, a),
        Command::Upload(a) => upload::upload(&cli.global, a),
        Command::Arm(a) => lifecycle::arm(&cli.global, a),
        Command::Disarm => lifecycle::disarm(&cli.global),
        Command::Premigrate(a) => lifecycle::premigrate(&cli.global, a),
        Command::Firstboot => lifecycle::firstboot(&cli.global),
        Command::Report(ReportCommand::Merge(a)) => report::merge(a),
        Command::Report(ReportCommand::Diff(a)) => report::diff(a),
        Command::Man => lifecycle::man(),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            // The logger prints errors on stderr (and to syslog when it listens): once.
            log::error!("{e:#}");
            EXIT_FAILURE
        }
    }
}

impl Global {
    /// The guest this command works on, as the library takes it.
    pub fn target(&self) -> crate::guest::Target {
        crate::guest::Target {
            root: self.root.clone(),
            config: self.config.clone(),
        }
    }
}

impl SelectArgs {
    pub fn selection(&self) -> crate::audit::Selection {
        crate::audit::Selection {
            only: self.only.clone(),
            skip: self.skip.clone(),
        }
    }
}

/// The clap command, for the man page generator and its sync test.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
