//! `/etc/cloudprep/cloudprep.toml` (read under `--root`). Optional; every key has a default.

use crate::export::{Compression, Consistency, ImageFormat};
use crate::guest::root::Root;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CONFIG_PATH: &str = "/etc/cloudprep/cloudprep.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub cloud: CloudConfig,
    pub network: NetworkConfig,
    pub checks: ChecksConfig,
    /// Waivers: check id -> reason. A waived finding is reported as `waived` and does not count in the exit code.
    pub waivers: BTreeMap<String, String>,
    /// Old device name -> what it is, for devices the audit cannot probe (e.g. an offline image):
    /// `"/dev/sdb1" = "UUID=0a1b…"`.
    pub devices: BTreeMap<String, String>,
    pub fix: FixConfig,
    pub export: ExportConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// cloud-init datasources, written the way `dpkg-reconfigure cloud-init` does.
    pub datasource_list: Vec<String>,
    /// Disk bus of the target cloud: `virtio` (virtio-blk: the guest's disk will be /dev/vda) or `scsi`
    /// (virtio-scsi: /dev/sda).
    pub disk_bus: DiskBus,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    Virtio,
    Scsi,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AddressPolicy {
    /// Convert static addressing to DHCP (the cloud hands out addresses by DHCP).
    Dhcp,
    /// Keep static addressing (reported as a warning only).
    Keep,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NamingPolicy {
    /// `net.ifnames=0` on the kernel command line: the first NIC is `eth0`, as the major importers do.
    Eth0,
    /// Keep predictable names; the configuration must then match the name the virtio NIC gets.
    Predictable,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub addressing: AddressPolicy,
    pub interface_naming: NamingPolicy,
    /// TCP port SSH must stay reachable on (firewall check).
    pub ssh_port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChecksConfig {
    /// Check ids (or id prefixes ending in `.`, e.g. `network.`) never run.
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FixConfig {
    /// Guest path of a cloud-init .deb to install when the guest has no network (empty: use apt-get),
    /// or of a directory whose .deb files (cloud-init and its missing dependencies) are installed at once.
    pub cloud_init_deb: String,
    /// Remove the old hypervisor's guest tools on the first boot in the cloud.
    pub remove_hypervisor_tools: bool,
    /// Add `console=tty0 console=ttyS0,115200` to the kernel command line.
    pub serial_console: bool,
    /// Seconds a command of the fix (apt-get, update-initramfs, update-grub, ...) may run before it is
    /// stopped and reported as failed (0: no limit).
    pub command_timeout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Export the disk in the pre-migration unit.
    pub enabled: bool,
    /// Where the pre-migration unit writes the image (a file path or a block device).
    pub output: String,
    pub format: ImageFormat,
    pub compress: Compression,
    pub consistency: Consistency,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            datasource_list: vec!["Ec2".into(), "None".into()],
            disk_bus: DiskBus::Virtio,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            addressing: AddressPolicy::Dhcp,
            interface_naming: NamingPolicy::Eth0,
            ssh_port: 22,
        }
    }
}

impl FixConfig {
    /// The time limit of one command (`command_timeout`; 0 means none).
    pub fn command_limit(&self) -> std::time::Duration {
        match self.command_timeout {
            0 => std::time::Duration::MAX,
            s => std::time::Duration::from_secs(s),
        }
    }
}

impl Default for FixConfig {
    fn default() -> Self {
        FixConfig {
            cloud_init_deb: String::new(),
            remove_hypervisor_tools: false,
            serial_console: true,
            command_timeout: 1800,
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            enabled: false,
            output: String::new(),
            format: ImageFormat::Raw,
            compress: Compression::None,
            consistency: Consistency::Readonly,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let c: Config = toml::from_str(text)?;
        Ok(c)
    }

    /// Parse and check the check ids it names (`[checks] skip`, `[waivers]`) against the registry.
    pub fn parse_checked(text: &str) -> Result<Config> {
        let c = Config::parse(text)?;
        crate::audit::check_patterns("[checks] skip", &c.checks.skip)?;
        crate::audit::check_ids("[waivers]", &c.waivers.keys().collect::<Vec<_>>())?;
        Ok(c)
    }

    /// Load from an explicit host path, or `/etc/cloudprep/cloudprep.toml` under the root (absent: defaults).
    pub fn load(root: &Root, explicit: Option<&std::path::Path>) -> Result<Config> {
        if let Some(p) = explicit {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            return Config::parse_checked(&text)
                .with_context(|| format!("parsing {}", p.display()));
        }
        match root.read_text(CONFIG_PATH)? {
            None => Ok(Config::default()),
            Some(text) => Config::parse_checked(&text)
                .with_context(|| format!("parsing {}", root.display(CONFIG_PATH))),
        }
    }

    pub fn is_skipped(&self, id: &str) -> bool {
        matches_ids(&self.checks.skip, id)
    }
}

/// Does `id` match one of `patterns` (exact id, or a prefix ending in `.`, or an area name like `network`)?
pub fn matches_ids(patterns: &[String], id: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim();
        p == id || (p.ends_with('.') && id.starts_with(p)) || id.split('.').next() == Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.cloud.datasource_list, vec!["Ec2", "None"]);
        let c = Config::parse(
            "[cloud]\ndatasource_list = [\"OpenStack\"]\n[waivers]\n\"firewall.ssh\" = \"ok\"\n",
        )
        .unwrap();
        assert_eq!(c.cloud.datasource_list, vec!["OpenStack"]);
        assert_eq!(c.waivers.len(), 1);
        assert_eq!(c.network.ssh_port, 22);
    }

    #[test]
    fn enumerated_values_are_checked() {
        let c = Config::parse(
            "[cloud]\ndisk_bus = \"scsi\"\n[export]\nformat = \"qcow2\"\ncompress = \"zstd\"\nconsistency = \"freeze\"\n",
        )
        .unwrap();
        assert_eq!(c.cloud.disk_bus, DiskBus::Scsi);
        assert_eq!(c.export.format, ImageFormat::Qcow2);
        assert_eq!(c.export.compress, Compression::Zstd);
        assert_eq!(c.export.consistency, Consistency::Freeze);
        for (bad, key) in [
            ("[cloud]\ndisk_bus = \"virtio-scsi\"\n", "virtio-scsi"),
            ("[cloud]\ndisk_bus = \"SCSI\"\n", "SCSI"),
            ("[export]\nformat = \"vmdk\"\n", "vmdk"),
            ("[export]\ncompress = \"xz\"\n", "xz"),
            ("[export]\nconsistency = \"snapshot\"\n", "snapshot"),
        ] {
            let e = format!("{:#}", Config::parse(bad).unwrap_err());
            assert!(e.contains(key) && e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_ids_are_refused_with_the_nearest() {
        let e = format!(
            "{:#}",
            Config::parse_checked("[checks]\nskip = [\"network.udev-persistant-net\"]\n")
                .unwrap_err()
        );
        assert!(
            e.contains("[checks] skip") && e.contains("network.udev-persistent-net"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Config::parse_checked("[waivers]\n\"network.\" = \"prefixes are not waivers\"\n")
                .unwrap_err()
        );
        assert!(e.contains("[waivers]") && e.contains("`network.`"), "{e}");
        assert!(Config::parse_checked("[checks]\nskip = [\"\"]\n").is_err());
        let ok = "[checks]\nskip = [\"network.\", \"platform\", \"boot.serial-console\"]\n\
                  [waivers]\n\"network.firewall-ssh\" = \"port 22 is open upstream\"\n";
        assert!(Config::parse_checked(ok).is_ok());
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = Config::parse("[cloud]\ndatasources = []\n").unwrap_err();
        assert!(format!("{e:#}").contains("datasources"), "{e:#}");
    }

    #[test]
    fn shipped_config_parses_to_defaults() {
        let text = include_str!("../packaging/cloudprep.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn id_patterns() {
        let p = vec![
            "network.".to_string(),
            "boot.serial-console".to_string(),
            "cloud-init".to_string(),
        ];
        assert!(matches_ids(&p, "network.udev-persistent-net"));
        assert!(matches_ids(&p, "boot.serial-console"));
        assert!(matches_ids(&p, "cloud-init.installed"));
        assert!(!matches_ids(&p, "boot.grub-mbr"));
    }
}
