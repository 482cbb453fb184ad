//! `cloudprep fix` really installs cloud-init inside the guest (apt-get in the chroot, from the guest's own
//! package sources: the Debian archive, a registry this machine reaches) and configures the EC2 datasource
//! the way `dpkg-reconfigure cloud-init` does; cloud-init's own schema validator accepts what was written.
mod common;

use common::Guest;

#[test]
fn fix_installs_and_configures_cloud_init() {
    common::require_root();
    let g = Guest::bookworm();
    assert!(!g
        .read("/var/lib/dpkg/status")
        .contains("Package: cloud-init\n"));
    let out = g.cloudprep(&["fix", "--yes", "--only", "cloud-init."]);
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.code().unwrap_or(9) <= 1, "fix failed:\n{log}");

    let status = cloudprep::guest::dpkg::parse_status(&g.read("/var/lib/dpkg/status"));
    assert!(
        status.get("cloud-init").is_some_and(|p| p.is_installed()),
        "cloud-init not installed:\n{log}"
    );
    let dpkg_cfg = g.read("/etc/cloud/cloud.cfg.d/90_dpkg.cfg");
    assert!(
        dpkg_cfg.contains("datasource_list: [ Ec2, None ]"),
        "{dpkg_cfg}"
    );
    // debconf agrees, so a cloud-init upgrade keeps the list.
    let sel = common::sh(
        "chroot",
        &[g.root().to_str().unwrap(), "debconf-show", "cloud-init"],
    );
    assert!(sel.contains("Ec2, None"), "{sel}");
    // cloud-init's own schema validator on each file cloudprep wrote (as a #cloud-config document: the
    // schema of system config keys is the same).
    for f in [
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "/etc/cloud/cloud.cfg.d/91_cloudprep.cfg",
    ] {
        let doc = format!("#cloud-config\n{}", g.read(f));
        g.write("/tmp/cloudprep-schema.yaml", &doc);
        let out = std::process::Command::new("chroot")
            .args([
                g.root().to_str().unwrap(),
                "cloud-init",
                "schema",
                "-c",
                "/tmp/cloudprep-schema.yaml",
            ])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("Valid"),
            "cloud-init schema rejects {f}:\n{doc}\n{said}"
        );
    }

    // The cloud-init checks pass now.
    let (_code, r) = g.audit_json(&["--only", "cloud-init."]);
    let open: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(open.is_empty(), "{open:#?}");

    // Rollback restores the files and names the install it cannot undo.
    let out = g.cloudprep(&["rollback"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("apt-get install -y cloud-init"),
        "rollback must name the irreversible install:\n{said}"
    );
    assert!(!g.path("/etc/cloud/cloud.cfg.d/91_cloudprep.cfg").exists());
}
