//! The check model: a check is data (id, title, area, severity, fixable) plus a function that inspects the
//! guest and returns findings. A finding carries its evidence and, when fixable, the planned fix that both
//! `audit` (as a dry run) and `fix` use.

use crate::config::Config;
use crate::guest::facts::Facts;
use crate::guest::root::Root;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Blocker,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Blocker => "blocker",
        })
    }
}

/// What became of a finding: `open` (a problem found), `error` (the check itself failed; the problem may
/// exist), `waived` (found, but waived in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Error,
    Waived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    Boot,
    Storage,
    Network,
    CloudInit,
    Platform,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Area::Boot => "boot",
            Area::Storage => "storage",
            Area::Network => "network",
            Area::CloudInit => "cloud-init",
            Area::Platform => "platform",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Guest path (absolute).
    pub path: String,
    /// 1-based line, when the evidence is a line.
    pub line: Option<usize>,
    /// The offending text (the line, or a short description).
    pub text: String,
}

impl Evidence {
    pub fn line(path: &str, line: usize, text: &str) -> Evidence {
        Evidence {
            path: path.to_string(),
            line: Some(line),
            text: text.trim_end_matches(['\r', '\n']).to_string(),
        }
    }
    pub fn file(path: &str, text: impl Into<String>) -> Evidence {
        Evidence {
            path: path.to_string(),
            line: None,
            text: text.into(),
        }
    }
}

/// Rewrites a file's whole content. Receives the current content ("" when the file does not exist) at the
/// moment of applying, so several rewriters of one file compose. Must be idempotent.
pub type Rewriter = Arc<dyn Fn(&str) -> anyhow::Result<String> + Send + Sync>;

#[derive(Clone)]
pub enum EditOp {
    /// Replace the content with what the rewriter returns (creates the file with `create_mode` if absent).
    Rewrite {
        rewriter: Rewriter,
        create_mode: u32,
    },
    /// Remove the file (its content is kept in the run's backup area).
    Remove,
}

/// A validator run on a rewritten file before the change is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    /// `findmnt --verify --tab-file`
    Fstab,
    /// `grub-script-check` (for grub.cfg-like files) and `sh -n` for /etc/default/grub
    ShellVars,
    /// `ifquery --interfaces FILE --list`
    Ifupdown,
    /// `netplan generate --root-dir`
    Netplan,
    /// YAML + `cloud-init schema` where installed
    CloudInit,
    /// `systemd-analyze verify`-free: systemd INI syntax only
    None,
}

#[derive(Clone)]
pub struct FileEdit {
    /// Guest path.
    pub path: String,
    pub op: EditOp,
    pub validator: Validator,
}

impl FileEdit {
    pub fn rewrite(
        path: &str,
        validator: Validator,
        f: impl Fn(&str) -> anyhow::Result<String> + Send + Sync + 'static,
    ) -> FileEdit {
        FileEdit {
            path: path.to_string(),
            op: EditOp::Rewrite {
                rewriter: Arc::new(f),
                create_mode: 0o644,
            },
            validator,
        }
    }
    pub fn create(
        path: &str,
        mode: u32,
        validator: Validator,
        f: impl Fn(&str) -> anyhow::Result<String> + Send + Sync + 'static,
    ) -> FileEdit {
        FileEdit {
            path: path.to_string(),
            op: EditOp::Rewrite {
                rewriter: Arc::new(f),
                create_mode: mode,
            },
            validator,
        }
    }
    pub fn remove(path: &str) -> FileEdit {
        FileEdit {
            path: path.to_string(),
            op: EditOp::Remove,
            validator: Validator::None,
        }
    }
}

impl fmt::Debug for FileEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match &self.op {
            EditOp::Rewrite { .. } => "rewrite",
            EditOp::Remove => "remove",
        };
        write!(f, "FileEdit({} {})", op, self.path)
    }
}

/// When a command runs relative to the file edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before any file is edited (e.g. installing a package whose files we then configure).
    Pre,
    /// After all files are edited (update-initramfs, update-grub, grub-install), in `order` order.
    Post,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct PlannedCommand {
    /// Program and arguments, run inside the guest root (argv, never a shell).
    pub argv: Vec<String>,
    pub phase: Phase,
    /// Order within the phase (lower first); equal commands from several findings run once.
    pub order: u32,
    pub reason: String,
    /// Text fed to the command's standard input (e.g. debconf selections); never interpreted by a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

impl PlannedCommand {
    pub fn new(phase: Phase, order: u32, argv: &[&str], reason: &str) -> PlannedCommand {
        PlannedCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            phase,
            order,
            reason: reason.to_string(),
            stdin: None,
        }
    }

    /// How the command reads in a plan: argv joined, plus its standard input when it has one.
    pub fn display(&self) -> String {
        match &self.stdin {
            None => self.argv.join(" "),
            Some(t) => format!("{} <<< {:?}", self.argv.join(" "), t),
        }
    }

    /// Feed `text` to the command's standard input.
    pub fn with_stdin(mut self, text: impl Into<String>) -> PlannedCommand {
        self.stdin = Some(text.into());
        self
    }
}

/// `apt-get update` before installing from the archive: the guest's package lists may be stale or absent.
/// Planned by every fix that installs a package; equal commands run once.
pub fn apt_update() -> PlannedCommand {
    PlannedCommand::new(
        Phase::Pre,
        order::APT_UPDATE,
        &["apt-get", "update"],
        "refresh the package lists so the install finds current versions",
    )
}

/// Conventional command orders, so plans from different modules sequence correctly.
pub mod order {
    pub const APT_UPDATE: u32 = 5;
    pub const INSTALL_PACKAGES: u32 = 10;
    pub const UPDATE_INITRAMFS: u32 = 50;
    pub const GRUB_INSTALL: u32 = 60;
    pub const UPDATE_GRUB: u32 = 70;
    pub const DEBCONF: u32 = 80;
}

#[derive(Debug, Clone, Default)]
pub struct Fix {
    pub edits: Vec<FileEdit>,
    pub commands: Vec<PlannedCommand>,
}

impl Fix {
    pub fn edit(mut self, e: FileEdit) -> Fix {
        self.edits.push(e);
        self
    }
    pub fn command(mut self, c: PlannedCommand) -> Fix {
        self.commands.push(c);
        self
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub status: Status,
    pub title: String,
    /// What was found and why it breaks in the cloud.
    pub message: String,
    pub evidence: Vec<Evidence>,
    pub remediation: String,
    pub fix: Option<Fix>,
}

impl Finding {
    /// A finding of `check` with its default severity and title.
    pub fn new(check: &CheckInfo, message: impl Into<String>) -> Finding {
        Finding {
            id: check.id.to_string(),
            severity: check.severity,
            status: Status::Open,
            title: check.title.to_string(),
            message: message.into(),
            evidence: Vec::new(),
            remediation: String::new(),
            fix: None,
        }
    }
    pub fn severity(mut self, s: Severity) -> Finding {
        self.severity = s;
        self
    }
    pub fn evidence(mut self, e: Evidence) -> Finding {
        self.evidence.push(e);
        self
    }
    pub fn evidences(mut self, e: impl IntoIterator<Item = Evidence>) -> Finding {
        self.evidence.extend(e);
        self
    }
    pub fn remediation(mut self, r: impl Into<String>) -> Finding {
        self.remediation = r.into();
        self
    }
    pub fn fix(mut self, f: Fix) -> Finding {
        self.fix = Some(f);
        self
    }
    /// A check that could not run: reported, never dropped, never a crash.
    pub fn error(check: &CheckInfo, err: &anyhow::Error) -> Finding {
        Finding {
            id: check.id.to_string(),
            severity: check.severity,
            status: Status::Error,
            title: check.title.to_string(),
            message: format!("the check could not complete: {err:#}"),
            evidence: Vec::new(),
            remediation: "Fix the file or permission named above and run the audit again."
                .to_string(),
            fix: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckInfo {
    pub id: &'static str,
    pub title: &'static str,
    pub area: Area,
    pub severity: Severity,
    pub fixable: bool,
}

/// Everything a check may look at.
pub struct Ctx<'a> {
    pub root: &'a Root,
    pub config: &'a Config,
    pub facts: &'a Facts,
}

pub type CheckFn = fn(&Ctx, &CheckInfo) -> anyhow::Result<Vec<Finding>>;

#[derive(Clone, Copy)]
pub struct Check {
    pub info: CheckInfo,
    pub run: CheckFn,
}

/// Declare a check: `check!("fstab.device-names", "…title…", Storage, Blocker, fixable, run_fn)`.
#[macro_export]
macro_rules! check {
    ($id:expr, $title:expr, $area:ident, $sev:ident, $fixable:expr, $run:expr) => {
        $crate::checks::Check {
            info: $crate::checks::CheckInfo {
                id: $id,
                title: $title,
                area: $crate::checks::Area::$area,
                severity: $crate::checks::Severity::$sev,
                fixable: $fixable,
            },
            run: $run,
        }
    };
}

// The areas of the report, one folder each (declared after `check!`, which they use).
pub mod boot;
pub mod cloud_init;
pub mod network;
pub mod platform;
pub mod storage;

/// Every check cloudprep knows, in report order.
pub fn all_checks() -> Vec<Check> {
    let mut v = Vec::new();
    v.extend(boot::grub::checks());
    v.extend(boot::initramfs::checks());
    v.extend(storage::fstab::checks());
    v.extend(storage::checks());
    v.extend(network::udev::checks());
    v.extend(network::checks());
    v.extend(network::firewall::checks());
    v.extend(network::sshd::checks());
    v.extend(cloud_init::checks());
    v.extend(platform::checks());
    v
}
