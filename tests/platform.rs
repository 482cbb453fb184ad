//! Platform checks on a real debootstrap bookworm root: broken dpkg states, old hypervisor tools, the OS
//! release and architecture, and the untouched guest.
mod common;

use common::{findings, has_evidence, Guest};

/// Append a dpkg status stanza; returns the line of its `Package:` field.
fn add_package(g: &Guest, name: &str, version: &str, status: &str) -> u64 {
    let mut s = g.read("/var/lib/dpkg/status");
    if !s.ends_with("\n\n") {
        s.push('\n');
    }
    let line = s.lines().count() as u64 + 1;
    s.push_str(&format!(
        "Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: amd64\nVersion: {version}\nDescription: planted by the test\n"
    ));
    g.write("/var/lib/dpkg/status", &s);
    line
}

fn platform_ids(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .filter(|i| i.starts_with("platform."))
        .collect()
}

#[test]
fn untouched_bookworm_only_recommends_the_guest_agent() {
    let g = Guest::bookworm();
    let (_, v) = g.audit_json(&[]);
    assert_eq!(platform_ids(&v), vec!["platform.qemu-guest-agent"]);
    assert_eq!(
        findings(&v, "platform.qemu-guest-agent")[0]["severity"],
        "info"
    );
    add_package(
        &g,
        "qemu-guest-agent",
        "1:7.2+dfsg-7",
        "install ok installed",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(platform_ids(&v).is_empty(), "{:?}", platform_ids(&v));
}

#[test]
fn broken_packages_and_vmware_tools() {
    let g = Guest::bookworm();
    let half = add_package(&g, "libfoo1", "1.2-3", "install reinstreq half-installed");
    let unpacked = add_package(&g, "bar-utils", "0.9-1", "install ok unpacked");
    let vmt = add_package(
        &g,
        "open-vm-tools",
        "2:12.2.0-1+deb12u1",
        "install ok installed",
    );
    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let f = findings(&v, "platform.dpkg-health");
    assert_eq!(f.len(), 1);
    // reinstreq: apt refuses everything until it is dealt with.
    assert_eq!(f[0]["severity"], "blocker");
    assert!(has_evidence(
        &v,
        "platform.dpkg-health",
        "/var/lib/dpkg/status",
        Some(half)
    ));
    assert!(has_evidence(
        &v,
        "platform.dpkg-health",
        "/var/lib/dpkg/status",
        Some(unpacked)
    ));
    assert!(f[0]["remediation"]
        .as_str()
        .unwrap()
        .contains("dpkg --configure -a"));
    let h = findings(&v, "platform.hypervisor-tools");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["severity"], "warning");
    assert!(has_evidence(
        &v,
        "platform.hypervisor-tools",
        "/var/lib/dpkg/status",
        Some(vmt)
    ));
    assert!(h[0]["remediation"]
        .as_str()
        .unwrap()
        .contains("apt-get purge open-vm-tools"));
    assert!(h[0]["fix"].is_null(), "not auto-fixed: {}", h[0]["fix"]);
    // VMware's own installer (no dpkg package).
    let g2 = Guest::bookworm();
    std::fs::create_dir_all(g2.path("/etc/vmware-tools")).unwrap();
    let (code, v) = g2.audit_json(&[]);
    assert!(code >= 1);
    assert!(has_evidence(
        &v,
        "platform.hypervisor-tools",
        "/etc/vmware-tools",
        None
    ));
    assert!(findings(&v, "platform.dpkg-health").is_empty());
}

#[test]
fn os_release_and_architecture() {
    let g = Guest::bookworm();
    // An interim Ubuntu release: warning.
    g.remove("/etc/os-release");
    g.write(
        "/etc/os-release",
        "NAME=\"Ubuntu\"\nVERSION_ID=\"23.10\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 23.10\"\n",
    );
    let (_, v) = g.audit_json(&[]);
    let f = findings(&v, "platform.os-supported");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["severity"], "warning");
    assert!(has_evidence(
        &v,
        "platform.os-supported",
        "/etc/os-release",
        None
    ));
    // Not Debian-based at all: blocker.
    g.write(
        "/etc/os-release",
        "NAME=\"CentOS Linux\"\nVERSION_ID=\"7\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\n",
    );
    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    assert_eq!(
        findings(&v, "platform.os-supported")[0]["severity"],
        "blocker"
    );
    // An LTS is fine.
    g.write(
        "/etc/os-release",
        "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"20.04\"\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(findings(&v, "platform.os-supported").is_empty());

    // dpkg's own architecture decides the guest's.
    let status = g.read("/var/lib/dpkg/status");
    let stanzas: Vec<String> = status
        .split("\n\n")
        .map(|s| {
            if s.starts_with("Package: dpkg\n") {
                s.replace("Architecture: amd64", "Architecture: arm64")
            } else {
                s.to_string()
            }
        })
        .collect();
    g.write("/var/lib/dpkg/status", &stanzas.join("\n\n"));
    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let a = findings(&v, "platform.arch");
    assert_eq!(a.len(), 1);
    assert!(a[0]["message"].as_str().unwrap().contains("arm64"));
}
