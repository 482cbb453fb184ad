//! Checks: cloud-init — installed, enabled, the effective `datasource_list` includes the cloud's datasource,
//! no installer leftovers override it, no stale instance state, and the locale module cannot fail the boot.
//!
//! cloud-init reads `/etc/cloud/cloud.cfg`, then `/etc/cloud/cloud.cfg.d/*.cfg` in lexical order; later files
//! take priority (dicts are merged recursively, other values replaced). On a live system ds-identify also
//! honours `ci.ds=` / `ci.datasource=` on the kernel command line.
//!
//! The locale trap: cloud-init's `locale` module runs `update-locale` (package `locales`) for the datasource's
//! locale (en_US.UTF-8 unless configured). Without the package, or with the locale not generated, the module
//! fails and `cloud-config.service` ends failed. With `locales` installed the fix names a locale that exists
//! (the guest's LANG when generated, else C.UTF-8, which cloud-init never regenerates) in `91_cloudprep.cfg`;
//! without it, `locale: false` (the module skips itself: `util.is_false(locale)` in cc_locale.handle, every
//! version since 0.7; newer cloud-init's schema warns about the boolean).

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use anyhow::{bail, Result};
use serde_yaml::Value;

mod config;
mod datasource;
mod hosts;
mod instance;
mod locale;

pub use config::*;
use datasource::*;
pub use hosts::*;
pub use instance::*;
use locale::*;

pub const CLOUD_CFG: &str = "/etc/cloud/cloud.cfg";
pub const CFG_D: &str = "/etc/cloud/cloud.cfg.d";
pub const DPKG_CFG: &str = "/etc/cloud/cloud.cfg.d/90_dpkg.cfg";
pub const CLOUDPREP_CFG: &str = "/etc/cloud/cloud.cfg.d/91_cloudprep.cfg";
pub const DISABLED_MARKER: &str = "/etc/cloud/cloud-init.disabled";
pub const DEFAULT_GRUB: &str = "/etc/default/grub";
pub const INSTANCE_LINK: &str = "/var/lib/cloud/instance";
pub const INSTANCES_DIR: &str = "/var/lib/cloud/instances";
/// `cloud-init clean` runs after the file edits, before initramfs/grub regeneration.
pub const ORDER_CLOUD_INIT_CLEAN: u32 = 40;
/// `systemctl enable/unmask` after the files, before debconf.
pub const ORDER_SYSTEMCTL: u32 = 75;

const STRICT_ID_SNIPPET: &str = "datasource:\n  Ec2:\n    strict_id: false\n";
const LOCALE_SNIPPET: &str = "locale: false\n";
const CLOUDPREP_HEADER: &str =
    "# Written by cloudprep for the cloud import (see cloudprep audit).\n";

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "cloud-init.installed",
            "cloud-init is installed",
            CloudInit,
            Blocker,
            true,
            check_installed
        ),
        check!(
            "cloud-init.disabled",
            "cloud-init is not disabled",
            CloudInit,
            Blocker,
            true,
            check_disabled
        ),
        check!(
            "cloud-init.datasource",
            "cloud-init's datasource_list includes the cloud's datasource",
            CloudInit,
            Blocker,
            true,
            check_datasource
        ),
        check!(
            "cloud-init.ec2-strict-id",
            "the Ec2 datasource does not insist on Amazon (strict_id: false)",
            CloudInit,
            Warning,
            true,
            check_strict_id
        ),
        check!(
            "cloud-init.installer-leftovers",
            "no installer leftovers in /etc/cloud/cloud.cfg.d",
            CloudInit,
            Warning,
            true,
            check_leftovers
        ),
        check!(
            "cloud-init.stale-instance",
            "no cloud-init instance state from the old platform",
            CloudInit,
            Warning,
            true,
            check_stale_instance
        ),
        check!(
            "cloud-init.etc-hosts",
            "the hostname from the metadata resolves locally",
            CloudInit,
            Warning,
            true,
            check_etc_hosts
        ),
        check!(
            "cloud-init.locale",
            "cloud-init's locale module can run",
            CloudInit,
            Warning,
            true,
            check_locale
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------

fn check_installed(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    if ctx.facts.installed("cloud-init") {
        return Ok(vec![]);
    }
    if ctx.facts.packages.is_empty() {
        // No dpkg database: nothing to say about packages (reported by platform checks).
        return Ok(vec![]);
    }
    let mut f = Finding::new(
        info,
        "the cloud-init package is not installed: in the cloud nothing fetches the instance's SSH key, \
         hostname or network configuration from the metadata service, so the imported instance cannot be \
         logged into",
    );
    if let Some(p) = ctx.facts.packages.get("cloud-init") {
        f = f.evidence(Evidence::line(
            "/var/lib/dpkg/status",
            p.line,
            &format!("Package: cloud-init (Status: {})", p.status),
        ));
    } else {
        f = f.evidence(Evidence::file(
            "/var/lib/dpkg/status",
            "no cloud-init package stanza",
        ));
    }
    let deb = ctx.config.fix.cloud_init_deb.trim();
    if deb.is_empty() {
        return Ok(vec![f
            .remediation("apt-get install -y cloud-init (needs the guest's package sources reachable)")
            .fix(Fix::default().command(crate::checks::apt_update()).command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES,
                &["apt-get", "install", "-y", "cloud-init"],
                "install cloud-init so the instance picks up its SSH key and network from the metadata service",
            )))]);
    }
    if !ctx.root.exists(deb) {
        return Ok(vec![f
            .evidence(Evidence::file(
                deb,
                "configured in [fix] cloud_init_deb but the file does not exist in the guest",
            ))
            .remediation(format!(
                "Copy a cloud-init .deb for this release to {deb} inside the guest (or clear [fix] \
                 cloud_init_deb to use apt-get), then run the audit again."
            ))]);
    }
    // A directory holds cloud-init and the dependencies the guest lacks (an offline guest cannot fetch
    // them): every .deb in it is installed in one transaction.
    let debs = if ctx.root.is_dir(deb) {
        let d = ctx.root.files_in(deb, |n| n.ends_with(".deb"))?;
        if d.is_empty() {
            return Ok(vec![f
                .evidence(Evidence::file(
                    deb,
                    "configured in [fix] cloud_init_deb but the directory holds no .deb file",
                ))
                .remediation(format!(
                    "Put cloud-init's .deb and those of its missing dependencies (e.g. from \
                     `apt-get install --download-only cloud-init` on a machine of the same release) in \
                     {deb}, then run the audit again."
                ))]);
        }
        d
    } else {
        vec![deb.to_string()]
    };
    // apt installs a local .deb (resolving dependencies from its cache) since apt 1.1; older apt needs dpkg.
    let apt_local = ctx
        .facts
        .packages
        .get("apt")
        .map(|p| apt_supports_local_deb(&p.version))
        .unwrap_or(true);
    let argv = |head: &[&'static str]| -> Vec<&str> {
        head.iter()
            .copied()
            .chain(debs.iter().map(String::as_str))
            .collect()
    };
    let mut fix = Fix::default();
    if apt_local {
        fix = fix.command(PlannedCommand::new(
            Phase::Pre,
            order::INSTALL_PACKAGES,
            &argv(&["apt-get", "install", "-y"]),
            "install cloud-init from the local .deb configured in [fix] cloud_init_deb",
        ));
    } else {
        fix = fix
            .command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES,
                &argv(&["dpkg", "-i"]),
                "install cloud-init from the local .deb (this apt predates local .deb installs)",
            ))
            .command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES + 1,
                &["apt-get", "install", "-f", "-y"],
                "complete the dependencies of the cloud-init .deb",
            ));
    }
    Ok(vec![f
        .remediation(format!("apt-get install -y {}", debs.join(" ")))
        .fix(fix)])
}

/// apt ≥ 1.1 installs `apt-get install ./file.deb`.
pub fn apt_supports_local_deb(version: &str) -> bool {
    let v = version.split_once(':').map(|x| x.1).unwrap_or(version);
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let major: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_locales() {
        assert_eq!(upstream_major("22.4.2-1+deb12u1"), Some(22));
        assert_eq!(upstream_major("0.7.6~bzr976-2"), Some(0));
        assert_eq!(upstream_major("1:18.3-6"), Some(18));
        assert!(apt_supports_local_deb("1.4.11"));
        assert!(!apt_supports_local_deb("1.0.9.8.6"));
        assert!(apt_supports_local_deb("2.6.1"));
        assert_eq!(normalize_locale("en_US.UTF-8"), "en_US.utf8");
        assert_eq!(normalize_locale("C"), "C");
    }
}
