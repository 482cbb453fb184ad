//! Recommendations derived from the facts: minimum flavour, image min_disk/min_ram, Glance properties,
//! and the `openstack image create` line.

use crate::guest::facts::{BootMode, Facts};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Recommendations {
    pub min_vcpus: Option<usize>,
    pub min_ram_mib: Option<u64>,
    pub min_disk_gib: Option<u64>,
    /// Glance image properties this image should carry.
    pub properties: BTreeMap<String, String>,
    pub disk_format: String,
    pub image_create: String,
}

const GIB: u64 = 1 << 30;

pub fn recommend(f: &Facts, installed_qemu_agent: bool) -> Recommendations {
    let mut props = BTreeMap::new();
    props.insert("hw_disk_bus".to_string(), "virtio".to_string());
    props.insert("hw_vif_model".to_string(), "virtio".to_string());
    if let Some(os) = &f.os {
        if !os.id.is_empty() {
            props.insert("os_distro".into(), os.id.clone());
        }
        if !os.version_id.is_empty() {
            props.insert("os_version".into(), os.version_id.clone());
        }
    }
    if f.boot_mode == Some(BootMode::Uefi) {
        props.insert("hw_firmware_type".into(), "uefi".into());
        props.insert("hw_machine_type".into(), "q35".into());
    }
    if installed_qemu_agent {
        props.insert("hw_qemu_guest_agent".into(), "yes".into());
    }
    // The image's min_disk is the size of the disk holding /, rounded up to whole GiB.
    let root_disk = f.root_device.as_deref().and_then(|dev| {
        let name = dev.trim_start_matches("/dev/");
        f.disks
            .iter()
            .find(|d| d.name == name || d.partitions.iter().any(|p| p == name))
    });
    let min_disk_gib = root_disk.map(|d| d.size.div_ceil(GIB).max(1));
    let min_ram_mib = f.memory_bytes.map(|b| {
        let mib = b.div_ceil(1 << 20);
        // Memory reported by the kernel is a little below the VM's configured size: round up to 256 MiB.
        mib.div_ceil(256) * 256
    });
    let name =
        f.os.as_ref()
            .map(|o| {
                format!(
                    "{}-{}-migrated",
                    if o.id.is_empty() { "linux" } else { &o.id },
                    o.version_id
                )
            })
            .unwrap_or_else(|| "migrated-vm".into());
    let mut cmd =
        String::from("openstack image create --disk-format raw --container-format bare --private");
    if let Some(d) = min_disk_gib {
        cmd.push_str(&format!(" --min-disk {d}"));
    }
    if let Some(r) = min_ram_mib {
        cmd.push_str(&format!(" --min-ram {r}"));
    }
    for (k, v) in &props {
        cmd.push_str(&format!(" --property {k}={v}"));
    }
    cmd.push_str(&format!(" --file disk.raw --progress {name}"));
    Recommendations {
        min_vcpus: f.cpus,
        min_ram_mib,
        min_disk_gib,
        properties: props,
        disk_format: "raw".into(),
        image_create: cmd,
    }
}
