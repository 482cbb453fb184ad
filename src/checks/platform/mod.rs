//! Checks: platform — CPU architecture, a supported Debian/Ubuntu release, the old hypervisor's guest tools,
//! the health of the dpkg database (a fix that installs packages needs it), and the QEMU guest agent.

use crate::checks::{Check, CheckInfo, Ctx, Evidence, Finding, Severity};
use crate::guest::facts::OsRelease;
use anyhow::Result;

pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "platform.arch",
            "the guest is x86_64 (amd64)",
            Platform,
            Blocker,
            false,
            check_arch
        ),
        check!(
            "platform.os-supported",
            "the OS release is one cloudprep supports",
            Platform,
            Warning,
            false,
            check_os
        ),
        check!(
            "platform.hypervisor-tools",
            "no guest tools of the old hypervisor",
            Platform,
            Warning,
            false,
            check_hypervisor_tools
        ),
        check!(
            "platform.dpkg-health",
            "no half-installed or broken packages",
            Platform,
            Warning,
            false,
            check_dpkg_health
        ),
        check!(
            "platform.qemu-guest-agent",
            "the QEMU guest agent is installed",
            Platform,
            Info,
            false,
            check_qemu_ga
        ),
    ]
}

/// How cloudprep judges an OS release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported(String),
    /// Probably works, not validated (newer release, derivative, non-LTS).
    Untested(String),
    /// Will not work (too old, not Debian-based).
    Unsupported(String),
}

fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split(['.', ' ', '~']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Judge a release: Debian 8–13 and Ubuntu LTS 14.04–24.04 are supported.
pub fn judge_os(os: &OsRelease) -> Support {
    let id = os.id.to_ascii_lowercase();
    let like: Vec<String> = os
        .id_like
        .split_whitespace()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let name = if os.pretty_name.is_empty() {
        format!("{} {}", os.id, os.version_id)
    } else {
        os.pretty_name.clone()
    };
    let v = version_tuple(&os.version_id);
    match id.as_str() {
        "debian" => match v {
            Some((m, _)) if (8..=13).contains(&m) => Support::Supported(name),
            Some((m, _)) if m < 8 => Support::Unsupported(format!(
                "{name} is older than Debian 8: no systemd/cloud-init combination cloudprep can configure"
            )),
            Some(_) => Support::Untested(format!("{name} is newer than Debian 13: not validated")),
            None => Support::Untested(format!(
                "{name} has no VERSION_ID (testing/unstable?): not validated"
            )),
        },
        "ubuntu" => match v {
            Some((y, m)) if (14..=24).contains(&y) && y % 2 == 0 && m == 4 => Support::Supported(name),
            Some((y, _)) if y < 14 => Support::Unsupported(format!(
                "{name} is older than Ubuntu 14.04: not supported by cloudprep"
            )),
            Some((y, _)) if y > 24 => {
                Support::Untested(format!("{name} is newer than Ubuntu 24.04: not validated"))
            }
            Some(_) => Support::Untested(format!(
                "{name} is not an LTS release: not validated (and out of support upstream)"
            )),
            None => Support::Untested(format!("{name} has no VERSION_ID: not validated")),
        },
        _ if like.iter().any(|l| l == "debian" || l == "ubuntu") => Support::Untested(format!(
            "{name} is a derivative of {}: not validated",
            os.id_like
        )),
        _ => Support::Unsupported(format!(
            "{name} (ID={}) is not Debian or Ubuntu: cloudprep only prepares Debian-family guests",
            os.id
        )),
    }
}

/// `/etc/debian_version` (e.g. `7.11`, `bookworm/sid`) as an os-release stand-in for releases without one.
pub fn os_from_debian_version(text: &str) -> OsRelease {
    let v = text.trim();
    OsRelease {
        id: "debian".into(),
        version_id: v
            .split('.')
            .next()
            .filter(|x| x.chars().all(|c| c.is_ascii_digit()))
            .unwrap_or("")
            .to_string(),
        pretty_name: format!("Debian {v}"),
        ..Default::default()
    }
}

fn check_arch(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    match ctx.facts.arch.as_deref() {
        Some("amd64") | Some("x86_64") => Ok(vec![]),
        Some(a) => Ok(vec![Finding::new(
            info,
            format!(
                "the guest is {a}: the cloud runs x86_64 (amd64) instances only, and an image cannot change \
                 architecture"
            ),
        )
        .evidence(Evidence::file(
            DPKG_STATUS,
            format!("dpkg architecture (or /bin/sh ELF machine): {a}"),
        ))
        .remediation("rebuild the workload on an amd64 release; this VM cannot be imported")]),
        None => Ok(vec![Finding::new(
            info,
            "the guest's architecture could not be determined (no dpkg database, no readable /bin/sh)",
        )
        .severity(Severity::Warning)
        .evidence(Evidence::file(DPKG_STATUS, "absent"))
        .remediation("check that --root points at the guest's root filesystem")]),
    }
}

fn check_os(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let (os, src) = match &ctx.facts.os {
        Some(os) => (os.clone(), "/etc/os-release"),
        None => match ctx.root.read_text("/etc/debian_version")? {
            Some(t) => (os_from_debian_version(&t), "/etc/debian_version"),
            None => {
                return Ok(vec![Finding::new(
                    info,
                    "no /etc/os-release and no /etc/debian_version: the OS cannot be identified",
                )
                .severity(Severity::Blocker)
                .evidence(Evidence::file("/etc/os-release", "absent"))
                .remediation(
                    "check that --root points at a Debian or Ubuntu root filesystem",
                )])
            }
        },
    };
    let ev = Evidence::file(
        src,
        format!(
            "ID={} ID_LIKE={} VERSION_ID={}",
            os.id, os.id_like, os.version_id
        ),
    );
    match judge_os(&os) {
        Support::Supported(_) => Ok(vec![]),
        Support::Untested(why) => Ok(vec![Finding::new(info, why)
            .evidence(ev)
            .remediation("the audit's other checks still apply; test the imported image before cut-over")]),
        Support::Unsupported(why) => Ok(vec![Finding::new(info, why)
            .severity(Severity::Blocker)
            .evidence(ev)
            .remediation("upgrade the guest to a supported Debian (8–13) or Ubuntu LTS (14.04–24.04) release first")]),
    }
}

/// Guest-tool packages of VMware, Hyper-V, Xen and VirtualBox.
pub const HYPERVISOR_PACKAGES: &[&str] = &[
    "open-vm-tools",
    "open-vm-tools-desktop",
    "open-vm-tools-dkms",
    "vmware-tools",
    "hyperv-daemons",
    "linux-cloud-tools-common",
    "xe-guest-utilities",
    "xenstore-utils",
    "virtualbox-guest-utils",
    "virtualbox-guest-x11",
    "virtualbox-guest-dkms",
];

/// Tools installed outside dpkg (VMware's own installer).
pub const HYPERVISOR_DIRS: &[(&str, &str)] = &[
    ("/etc/vmware-tools", "/usr/bin/vmware-uninstall-tools.pl"),
    (
        "/usr/lib/vmware-tools",
        "/usr/bin/vmware-uninstall-tools.pl",
    ),
];

fn check_hypervisor_tools(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let mut pkgs = Vec::new();
    let mut ev = Vec::new();
    for p in HYPERVISOR_PACKAGES {
        if let Some(pkg) = ctx.facts.packages.get(*p).filter(|x| x.is_installed()) {
            pkgs.push(p.to_string());
            ev.push(Evidence::line(
                DPKG_STATUS,
                pkg.line,
                &format!("Package: {p} ({})", pkg.version),
            ));
        }
    }
    let mut manual = false;
    for (d, _) in HYPERVISOR_DIRS {
        // Directories owned by a dpkg package are already covered by the package.
        if ctx.root.is_dir(d) && !ctx.facts.installed("open-vm-tools") {
            manual = true;
            ev.push(Evidence::file(d, "VMware Tools installed outside dpkg"));
        }
    }
    if ev.is_empty() {
        return Ok(vec![]);
    }
    let mut rem = Vec::new();
    if !pkgs.is_empty() {
        rem.push(format!(
            "after the migration, in the cloud: apt-get purge {}",
            pkgs.join(" ")
        ));
    }
    if manual {
        rem.push(
            "after the migration: /usr/bin/vmware-uninstall-tools.pl (VMware's own uninstaller)"
                .to_string(),
        );
    }
    if !ctx.config.fix.remove_hypervisor_tools {
        rem.push(
            "or set [fix] remove_hypervisor_tools = true to have cloudprep-firstboot remove them on the first \
             boot in the cloud"
                .to_string(),
        );
    }
    Ok(vec![Finding::new(
        info,
        "guest tools of the old hypervisor are installed: in the cloud they find no hypervisor channel, \
         log errors or fail their units at every boot (they are kept until the migration because the old \
         platform still needs them)",
    )
    .evidences(ev)
    .remediation(rem.join("; "))])
}

fn check_dpkg_health(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let broken: Vec<_> = ctx
        .facts
        .packages
        .values()
        .filter(|p| p.is_broken())
        .collect();
    if broken.is_empty() {
        return Ok(vec![]);
    }
    let reinst: Vec<&str> = broken
        .iter()
        .filter(|p| {
            p.status.split_whitespace().nth(1) == Some("reinstreq")
                || p.status.ends_with("half-installed")
        })
        .map(|p| p.name.as_str())
        .collect();
    let installs_planned = !ctx.facts.installed("cloud-init") && !ctx.facts.packages.is_empty();
    let sev = if !reinst.is_empty() || installs_planned {
        Severity::Blocker
    } else {
        Severity::Warning
    };
    let names: Vec<&str> = broken.iter().map(|p| p.name.as_str()).collect();
    let mut rem = vec![
        "dpkg --configure -a".to_string(),
        "apt-get install -f".to_string(),
    ];
    if !reinst.is_empty() {
        rem.push(format!(
            "apt-get install --reinstall {} (or dpkg --remove --force-remove-reinstreq {})",
            reinst.join(" "),
            reinst.join(" ")
        ));
    }
    Ok(vec![Finding::new(
        info,
        format!(
            "{} package(s) are in a broken dpkg state ({}): every apt-get install (cloud-init, the fix's \
             packages) fails until dpkg is repaired, and maintainer scripts such as update-initramfs may not \
             have run",
            broken.len(),
            names.join(", ")
        ),
    )
    .severity(sev)
    .evidences(broken.iter().map(|p| {
        Evidence::line(
            DPKG_STATUS,
            p.line,
            &format!("Package: {} (Status: {})", p.name, p.status),
        )
    }))
    .remediation(rem.join("; "))])
}

fn check_qemu_ga(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    if ctx.facts.packages.is_empty() || ctx.facts.installed("qemu-guest-agent") {
        return Ok(vec![]);
    }
    Ok(
        vec![Finding::new(
        info,
        "qemu-guest-agent is not installed: the cloud cannot quiesce the filesystem for consistent \
         snapshots, set passwords or report the guest's addresses",
    )
    .evidence(Evidence::file(DPKG_STATUS, "no installed qemu-guest-agent"))
    .remediation("apt-get install -y qemu-guest-agent (before or after the migration)")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::facts::parse_os_release;

    fn os(id: &str, like: &str, v: &str) -> OsRelease {
        OsRelease {
            id: id.into(),
            id_like: like.into(),
            version_id: v.into(),
            ..Default::default()
        }
    }

    #[test]
    fn releases() {
        assert!(matches!(
            judge_os(&os("debian", "", "8")),
            Support::Supported(_)
        ));
        assert!(matches!(
            judge_os(&os("debian", "", "13")),
            Support::Supported(_)
        ));
        assert!(matches!(
            judge_os(&os("debian", "", "7")),
            Support::Unsupported(_)
        ));
        assert!(matches!(
            judge_os(&os("debian", "", "14")),
            Support::Untested(_)
        ));
        assert!(matches!(
            judge_os(&os("debian", "", "")),
            Support::Untested(_)
        ));
        assert!(matches!(
            judge_os(&os("ubuntu", "debian", "14.04")),
            Support::Supported(_)
        ));
        assert!(matches!(
            judge_os(&os("ubuntu", "debian", "24.04")),
            Support::Supported(_)
        ));
        assert!(matches!(
            judge_os(&os("ubuntu", "debian", "23.10")),
            Support::Untested(_)
        ));
        assert!(matches!(
            judge_os(&os("ubuntu", "debian", "12.04")),
            Support::Unsupported(_)
        ));
        assert!(matches!(
            judge_os(&os("linuxmint", "ubuntu debian", "21.3")),
            Support::Untested(_)
        ));
        assert!(matches!(
            judge_os(&os("centos", "rhel fedora", "7")),
            Support::Unsupported(_)
        ));
        let o = parse_os_release("ID=\"ubuntu\"\nID_LIKE=debian\nVERSION_ID=\"16.04\"\n");
        assert!(matches!(judge_os(&o), Support::Supported(_)));
    }

    #[test]
    fn debian_version_file() {
        assert_eq!(os_from_debian_version("7.11\n").version_id, "7");
        assert!(matches!(
            judge_os(&os_from_debian_version("7.11\n")),
            Support::Unsupported(_)
        ));
        assert_eq!(os_from_debian_version("bookworm/sid\n").version_id, "");
    }
}
