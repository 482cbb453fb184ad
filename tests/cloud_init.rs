//! cloud-init checks on a real debootstrap bookworm root: the fresh guest (no cloud-init), a guest broken
//! the way installers and old platforms leave it, the plan applied through the library, and a clean guest.
mod common;

use cloudprep::audit::{apply_edits, Selection};
use cloudprep::config::Config;
use cloudprep::guest::root::Root;
use common::{findings, has_evidence, Guest};

/// Append a dpkg status stanza; returns the line of its `Package:` field.
pub fn add_package(g: &Guest, name: &str, version: &str, status: &str) -> u64 {
    let mut s = g.read("/var/lib/dpkg/status");
    if !s.ends_with("\n\n") {
        s.push('\n');
    }
    let line = s.lines().count() as u64 + 1;
    s.push_str(&format!(
        "Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: all\nVersion: {version}\nDescription: planted by the test\n"
    ));
    g.write("/var/lib/dpkg/status", &s);
    line
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn mine(v: &serde_json::Value) -> Vec<String> {
    ids(v)
        .into_iter()
        .filter(|i| i.starts_with("cloud-init."))
        .collect()
}

/// Apply every planned file edit through the library, as `fix` would (without the commands).
fn apply_plan(g: &Guest) -> cloudprep::audit::Audit {
    let root = Root::new(g.root()).unwrap();
    let config = Config::load(&root, None).unwrap();
    let audit = cloudprep::audit::run(&root, &config, &Selection::default());
    for pf in &audit.plan.files {
        assert!(pf.error.is_none(), "{}: {:?}", pf.path, pf.error);
        let cur = root.read_text(&pf.path).unwrap();
        let after = apply_edits(&pf.edits, cur.is_some(), cur.as_deref().unwrap_or("")).unwrap();
        let host = root.resolve(&pf.path).unwrap().host;
        match after {
            Some(t) => {
                std::fs::create_dir_all(host.parent().unwrap()).unwrap();
                std::fs::write(&host, t).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(root.resolve_parent(&pf.path).unwrap().host);
            }
        }
    }
    audit
}

fn command_argv(v: &serde_json::Value) -> Vec<Vec<String>> {
    common::argvs(&v["plan"]["commands"])
}

#[test]
fn fresh_bookworm_needs_cloud_init() {
    let g = Guest::bookworm();
    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let f = findings(&v, "cloud-init.installed");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["severity"], "blocker");
    let cmds = v["plan"]["commands"].as_array().unwrap();
    let install = cmds
        .iter()
        .find(|c| c["argv"] == serde_json::json!(["apt-get", "install", "-y", "cloud-init"]))
        .expect("apt-get install -y cloud-init planned");
    assert_eq!(install["phase"], "pre");
    assert_eq!(install["order"], 10);
    // No datasource_list anywhere: 90_dpkg.cfg is planned exactly as dpkg-reconfigure writes it.
    assert_eq!(findings(&v, "cloud-init.datasource").len(), 1);
    let files = v["plan"]["files"].as_array().unwrap();
    let dpkg = files
        .iter()
        .find(|f| f["path"] == "/etc/cloud/cloud.cfg.d/90_dpkg.cfg")
        .unwrap();
    assert_eq!(dpkg["action"], "create");
    assert!(dpkg["diff"]
        .as_str()
        .unwrap()
        .contains("+datasource_list: [ Ec2, None ]"));

    // A local .deb that is missing: said so, nothing planned to install.
    g.write(
        "/etc/cloudprep/cloudprep.toml",
        "[fix]\ncloud_init_deb = \"/root/cloud-init_22.4.2-1_all.deb\"\n",
    );
    let (_, v) = g.audit_json(&[]);
    let f = findings(&v, "cloud-init.installed");
    assert!(has_evidence(
        &v,
        "cloud-init.installed",
        "/root/cloud-init_22.4.2-1_all.deb",
        None
    ));
    assert!(f[0]["message"].as_str().unwrap().contains("not installed"));
    assert!(!command_argv(&v).iter().any(|c| c[0] == "apt-get"));
    // Present: apt-get installs the local file (bookworm's apt resolves its dependencies).
    g.write("/root/cloud-init_22.4.2-1_all.deb", "!<arch>\n");
    let (_, v) = g.audit_json(&[]);
    assert!(command_argv(&v).contains(&vec![
        "apt-get".to_string(),
        "install".into(),
        "-y".into(),
        "/root/cloud-init_22.4.2-1_all.deb".into()
    ]));

    // A directory (cloud-init plus the dependencies an offline guest lacks): an empty one is reported,
    // otherwise every .deb in it goes to one apt-get transaction, sorted; other files are ignored.
    g.write(
        "/etc/cloudprep/cloudprep.toml",
        "[fix]\ncloud_init_deb = \"/root/offline-debs\"\n",
    );
    g.write("/root/offline-debs/README", "not a package\n");
    let (_, v) = g.audit_json(&[]);
    assert!(has_evidence(
        &v,
        "cloud-init.installed",
        "/root/offline-debs",
        None
    ));
    assert!(!command_argv(&v).iter().any(|c| c[0] == "apt-get"));
    g.write(
        "/root/offline-debs/python3-yaml_6.0-3_amd64.deb",
        "!<arch>\n",
    );
    g.write(
        "/root/offline-debs/cloud-init_22.4.2-1_all.deb",
        "!<arch>\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(command_argv(&v).contains(&vec![
        "apt-get".to_string(),
        "install".into(),
        "-y".into(),
        "/root/offline-debs/cloud-init_22.4.2-1_all.deb".into(),
        "/root/offline-debs/python3-yaml_6.0-3_amd64.deb".into(),
    ]));
}

#[test]
fn broken_cloud_init_is_reported_and_fixed() {
    let g = Guest::bookworm();
    add_package(&g, "cloud-init", "22.4.2-1+deb12u1", "install ok installed");
    g.write(
        "/etc/cloud/cloud.cfg",
        "# The top level settings are used as module\n# and base configuration.\n#datasource_list: [ Ec2 ]\nusers:\n   - default\ndisable_root: true\n",
    );
    // Flow style, as an old dpkg-reconfigure wrote it for a NoCloud seed.
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ NoCloud, ConfigDrive ]\n",
    );
    // Block style in a later local file: it wins over 90_dpkg.cfg.
    g.write(
        "/etc/cloud/cloud.cfg.d/95-local.cfg",
        "# local override\napt_preserve_sources_list: true\ndatasource_list:\n- NoCloud\n- None\n\nmanage_etc_hosts: true\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        "datasource:\n  None:\n    metadata:\n      instance-id: 3b2a1c\n    userdata_raw: \"#cloud-config\\n\"\ndatasource_list: [None]\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg",
        "network: {config: disabled}\n",
    );
    g.write("/etc/cloud/cloud-init.disabled", "");
    let grub = g.read("/etc/default/grub").replace(
        "GRUB_CMDLINE_LINUX=\"\"",
        "GRUB_CMDLINE_LINUX=\"cloud-init=disabled net.ifnames=0\"",
    );
    g.write("/etc/default/grub", &grub);
    let grub_line = grub
        .lines()
        .position(|l| l.contains("cloud-init=disabled"))
        .unwrap() as u64
        + 1;
    std::fs::create_dir_all(g.path("/var/lib/cloud/instances/i-0old1234/sem")).unwrap();
    std::os::unix::fs::symlink(
        "/var/lib/cloud/instances/i-0old1234",
        g.path("/var/lib/cloud/instance"),
    )
    .unwrap();
    g.write(
        "/var/lib/cloud/data/previous-datasource",
        "DataSourceNoCloud: DataSourceNoCloud [seed=/var/lib/cloud/seed/nocloud][dsmode=net]\n",
    );

    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    let m = mine(&v);
    assert!(!m.contains(&"cloud-init.installed".to_string()), "{m:?}");
    // The effective list comes from the last file that sets it (99-installer.cfg).
    let ds = findings(&v, "cloud-init.datasource");
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["severity"], "blocker");
    assert!(
        ds[0]["message"].as_str().unwrap().contains("[ None ]"),
        "{}",
        ds[0]["message"]
    );
    assert!(has_evidence(
        &v,
        "cloud-init.datasource",
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        Some(6)
    ));
    // 95-local.cfg also overrides 90_dpkg.cfg: its block-style list is evidence and gets commented out.
    assert!(has_evidence(
        &v,
        "cloud-init.datasource",
        "/etc/cloud/cloud.cfg.d/95-local.cfg",
        Some(3)
    ));
    let left = findings(&v, "cloud-init.installer-leftovers");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|f| f["severity"] == "blocker"));
    assert!(has_evidence(
        &v,
        "cloud-init.installer-leftovers",
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        Some(6)
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.installer-leftovers",
        "/etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg",
        Some(1)
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.disabled",
        "/etc/cloud/cloud-init.disabled",
        None
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.disabled",
        "/etc/default/grub",
        Some(grub_line)
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.stale-instance",
        "/var/lib/cloud/instance",
        None
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.stale-instance",
        "/var/lib/cloud/data/previous-datasource",
        Some(1)
    ));
    let cmds = command_argv(&v);
    assert!(cmds.contains(&vec!["update-grub".to_string()]));
    assert!(cmds.contains(&vec![
        "cloud-init".to_string(),
        "clean".into(),
        "--logs".into()
    ]));

    // Apply the planned edits through the library and audit again.
    apply_plan(&g);
    assert_eq!(
        g.read("/etc/cloud/cloud.cfg.d/90_dpkg.cfg"),
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n"
    );
    assert!(!g.path("/etc/cloud/cloud.cfg.d/99-installer.cfg").exists());
    assert!(!g.path("/etc/cloud/cloud-init.disabled").exists());
    let local = g.read("/etc/cloud/cloud.cfg.d/95-local.cfg");
    assert_eq!(
        local,
        "# local override\napt_preserve_sources_list: true\n#datasource_list:\n#- NoCloud\n#- None\n\nmanage_etc_hosts: true\n"
    );
    for p in [
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "/etc/cloud/cloud.cfg.d/95-local.cfg",
        "/etc/cloud/cloud.cfg.d/91_cloudprep.cfg",
    ] {
        let y: serde_yaml::Value = serde_yaml::from_str(&g.read(p)).unwrap();
        assert!(y.is_mapping(), "{p}");
    }
    // Only the word goes (other checks may rewrite the same line for console= / net.ifnames=0).
    let new_grub = g.read("/etc/default/grub");
    assert!(!new_grub.contains("cloud-init=disabled"), "{new_grub}");
    assert!(new_grub.contains("net.ifnames=0"), "{new_grub}");
    assert!(
        new_grub.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet"),
        "{new_grub}"
    );
    common::sh("sh", &["-n", g.path("/etc/default/grub").to_str().unwrap()]);

    let (code, v) = g.audit_json(&[]);
    let m = mine(&v);
    for gone in [
        "cloud-init.datasource",
        "cloud-init.disabled",
        "cloud-init.installer-leftovers",
        "cloud-init.ec2-strict-id",
        "cloud-init.locale",
    ] {
        assert!(
            !m.contains(&gone.to_string()),
            "{gone} still reported: {m:?}"
        );
    }
    // The stale instance is cleaned by a command (cloud-init clean), which the library apply does not run.
    assert_eq!(m, vec!["cloud-init.stale-instance".to_string()]);
    assert!(code >= 1);
}

#[test]
fn stale_instance_without_cloud_init_removes_the_link() {
    let g = Guest::bookworm();
    std::fs::create_dir_all(g.path("/var/lib/cloud/instances/iid-datasource-none")).unwrap();
    std::os::unix::fs::symlink(
        "/var/lib/cloud/instances/iid-datasource-none",
        g.path("/var/lib/cloud/instance"),
    )
    .unwrap();
    let (_, v) = g.audit_json(&[]);
    assert_eq!(findings(&v, "cloud-init.stale-instance").len(), 1);
    let rm = vec![
        "rm".to_string(),
        "-f".into(),
        "/var/lib/cloud/instance".into(),
    ];
    assert!(command_argv(&v).contains(&rm));
    // What the planned command does, run in the guest root: the finding goes.
    common::sh(
        "chroot",
        &[
            g.root().to_str().unwrap(),
            "rm",
            "-f",
            "/var/lib/cloud/instance",
        ],
    );
    assert!(g
        .path("/var/lib/cloud/instances/iid-datasource-none")
        .is_dir());
    let (_, v) = g.audit_json(&[]);
    assert!(findings(&v, "cloud-init.stale-instance").is_empty());
}

#[test]
fn clean_guest_has_no_cloud_init_findings() {
    let g = Guest::bookworm();
    add_package(&g, "cloud-init", "22.4.2-1+deb12u1", "install ok installed");
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/91_cloudprep.cfg",
        "datasource:\n  Ec2:\n    strict_id: false\nlocale: false\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_eq!(mine(&v), Vec::<String>::new());
    // A later file switching to a list that still includes the target is fine too.
    g.write(
        "/etc/cloud/cloud.cfg.d/95-more.cfg",
        "datasource_list:\n  - Ec2\n  - OpenStack\n  - None\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_eq!(mine(&v), Vec::<String>::new());
    // Debian's default list (what `apt-get install cloud-init` writes) names Ec2, but after OpenStack:
    // ds-identify detects OpenStack on the cloud and never tries Ec2.
    g.remove("/etc/cloud/cloud.cfg.d/95-more.cfg");
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ NoCloud, ConfigDrive, OpenNebula, DigitalOcean, Azure, AltCloud, OVF, MAAS, GCE, OpenStack, CloudSigma, SmartOS, Bigstep, Scaleway, AliYun, Ec2, CloudStack, Hetzner, IBMCloud, Oracle, Exoscale, RbxCloud, UpCloud, VMware, Vultr, LXD, NWCS, Akamai, None ]\n",
    );
    let (code, v) = g.audit_json(&[]);
    assert_eq!(code, 2);
    assert_eq!(mine(&v), vec!["cloud-init.datasource".to_string()]);
    assert!(has_evidence(
        &v,
        "cloud-init.datasource",
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        Some(2)
    ));
}

#[test]
fn old_hostname_pinned_in_etc_hosts_gets_manage_etc_hosts() {
    let g = Guest::bookworm();
    g.write("/etc/hostname", "legacy-vm\n");
    g.write(
        "/etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tlegacy-vm.corp.example legacy-vm\n\n::1 localhost ip6-localhost\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(mine(&v).contains(&"cloud-init.etc-hosts".to_string()));
    assert!(has_evidence(
        &v,
        "cloud-init.etc-hosts",
        "/etc/hosts",
        Some(2)
    ));
    // An operator's choice to keep the old name is respected.
    g.write(
        "/etc/cloud/cloud.cfg.d/95-keep.cfg",
        "preserve_hostname: true\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(!mine(&v).contains(&"cloud-init.etc-hosts".to_string()));
    g.remove("/etc/cloud/cloud.cfg.d/95-keep.cfg");

    apply_plan(&g);
    let cfg = g.read("/etc/cloud/cloud.cfg.d/91_cloudprep.cfg");
    let y: serde_yaml::Value = serde_yaml::from_str(&cfg).unwrap();
    assert_eq!(y["manage_etc_hosts"].as_str(), Some("localhost"), "{cfg}");
    // /etc/hosts itself is left to cloud-init.
    assert!(g
        .read("/etc/hosts")
        .contains("127.0.1.1\tlegacy-vm.corp.example legacy-vm\n"));
    let (_, v) = g.audit_json(&[]);
    assert!(!mine(&v).contains(&"cloud-init.etc-hosts".to_string()));
}
