//! `cloudprep firstboot`: the first boot in the cloud (GRUB on the new boot disk, the report, once only).

use super::*;

/// Whole disks under a block device `MAJ:MIN`, following partitions to their disk and device-mapper / md
/// devices to their slaves (LVM, RAID 1: GRUB goes on every disk). `sys` is normally `/sys`.
pub fn disks_of_dev(sys: &Path, majmin: &str) -> Result<Vec<String>> {
    let p = sys.join("dev/block").join(majmin);
    let real = std::fs::canonicalize(&p).with_context(|| format!("resolving {}", p.display()))?;
    let mut out = Vec::new();
    disks_of_path(sys, &real, &mut out, 0)?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn disks_of_path(sys: &Path, dev: &Path, out: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 8 {
        bail!("block device stack too deep at {}", dev.display());
    }
    if dev.join("partition").exists() {
        let disk = dev
            .parent()
            .and_then(|d| d.file_name())
            .ok_or_else(|| anyhow!("no parent disk for {}", dev.display()))?;
        out.push(disk.to_string_lossy().into_owned());
        return Ok(());
    }
    let slaves = dev.join("slaves");
    let mut names: Vec<String> = std::fs::read_dir(&slaves)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        let name = dev
            .file_name()
            .ok_or_else(|| anyhow!("bad device path {}", dev.display()))?;
        out.push(name.to_string_lossy().into_owned());
        return Ok(());
    }
    for n in names {
        let s = std::fs::canonicalize(sys.join("class/block").join(&n))
            .with_context(|| format!("resolving slave {n}"))?;
        disks_of_path(sys, &s, out, depth + 1)?;
    }
    Ok(())
}

/// The disk(s) holding `/boot` (or `/` when /boot is not a separate mount) on the running system.
pub fn boot_disks_live(root_prefix: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = crate::guest::facts::parse_mountinfo(&text);
    let find = |t: &str| mounts.iter().rev().find(|m| m.target == t).cloned();
    let boot = if root_prefix == "/" {
        find("/boot").or_else(|| find("/"))
    } else {
        None
    }
    .ok_or_else(|| anyhow!("no mount for /boot or / in /proc/self/mountinfo"))?;
    if boot.dev.starts_with("0:") {
        bail!(
            "{} ({}) has no backing block device ({})",
            boot.target,
            boot.fstype,
            boot.dev
        );
    }
    let d = disks_of_dev(Path::new("/sys"), &boot.dev)?;
    if d.is_empty() {
        bail!("no disk found under {}", boot.dev);
    }
    Ok(d)
}

/// The debconf answer that makes later grub-pc upgrades install to the new disks.
pub fn debconf_install_devices(devices: &[String]) -> String {
    format!(
        "grub-pc grub-pc/install_devices multiselect {}\n",
        devices.join(", ")
    )
}

#[derive(Debug, Serialize)]
struct FirstbootSteps {
    grub: String,
    hypervisor_tools: String,
}

/// The machine's DMI system UUID (the hypervisor's VM id; the instance id in OpenStack), when it means
/// something: absent, unreadable, all-zero and all-F values (hypervisors that set none) give None.
pub fn product_uuid(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let u = t.trim().to_ascii_lowercase();
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
        || hex.chars().all(|c| c == '0')
        || hex.chars().all(|c| c == 'f')
    {
        return None;
    }
    Some(u)
}

pub const DMI_PRODUCT_UUID: &str = "/sys/class/dmi/id/product_uuid";

/// The first-boot marker: when written on a live machine it names that machine (its DMI UUID), so the
/// first-boot unit does nothing if the prepared source VM is powered on again on its old hypervisor.
pub fn firstboot_marker(at: u64, source_uuid: Option<&str>) -> String {
    let mut m = format!(
        "# Written by `cloudprep premigrate` at {at}: cloudprep-firstboot.service runs once on the first \
         boot in the cloud.\n"
    );
    if let Some(u) = source_uuid {
        m.push_str(&format!(
            "# The machine prepared (DMI product UUID): the first boot does nothing while it is this one.\n\
             source_product_uuid = \"{u}\"\n"
        ));
    }
    m
}

/// The source machine's UUID recorded in a first-boot marker (None for markers without one).
pub fn marker_source_uuid(marker: &str) -> Option<String> {
    marker.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "source_product_uuid")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    })
}

pub fn firstboot(target: &Target) -> Result<i32> {
    let root = Root::new(&target.root)?;
    let Some(marker) = root.read_text(FIRSTBOOT_MARKER)? else {
        println!("cloudprep firstboot: nothing to do ({FIRSTBOOT_MARKER} is absent)");
        return Ok(EXIT_OK);
    };
    if root.is_live() {
        if let (Some(src), Some(now)) = (
            marker_source_uuid(&marker),
            product_uuid(Path::new(DMI_PRODUCT_UUID)),
        ) {
            if src == now {
                println!(
                    "cloudprep firstboot: this is still the machine prepared for the migration (DMI \
                     product UUID {now}), not its copy in the cloud: nothing done, stays armed"
                );
                return Ok(EXIT_OK);
            }
        }
    }
    let config = Config::load(&root, target.config.as_deref())?;
    let facts = crate::guest::facts::Facts::gather(&root);
    let mut failed = false;

    let limit = config.fix.command_limit();
    // 1. GRUB into the MBR of the new boot disk, and debconf told so.
    let grub: String = if !facts.installed("grub-pc") {
        "skipped: grub-pc is not installed".into()
    } else if !root.is_live() {
        "skipped: the boot disk of an offline root is unknown".into()
    } else {
        match boot_disks_live("/") {
            Err(e) => {
                failed = true;
                format!("failed: {e:#}")
            }
            Ok(disks) => {
                let devs: Vec<String> = disks.iter().map(|d| format!("/dev/{d}")).collect();
                let mut res = Ok(());
                for d in &devs {
                    println!("cloudprep firstboot: grub-install {d}");
                    if let Err(e) = run_in_guest(&root, &["grub-install", d], None, limit) {
                        res = Err(e);
                        break;
                    }
                }
                let res = res.and_then(|_| {
                    run_in_guest(
                        &root,
                        &["debconf-set-selections"],
                        Some(&debconf_install_devices(&devs)),
                        limit,
                    )
                    .map(|_| ())
                });
                match res {
                    Ok(()) => format!("installed on {}", devs.join(", ")),
                    Err(e) => {
                        failed = true;
                        format!("failed: {e:#}")
                    }
                }
            }
        }
    };
    println!("cloudprep firstboot: grub: {grub}");

    // 2. The old hypervisor's tools.
    let tools: Vec<&str> = HYPERVISOR_TOOLS
        .iter()
        .copied()
        .filter(|p| facts.installed(p))
        .collect();
    let hypervisor_tools: String = if !config.fix.remove_hypervisor_tools {
        "kept (fix.remove_hypervisor_tools = false)".into()
    } else if tools.is_empty() {
        "none installed".into()
    } else {
        let mut argv = vec!["apt-get", "purge", "-y", "-q"];
        argv.extend(&tools);
        match run_in_guest(&root, &argv, None, limit) {
            Ok(_) => format!("purged {}", tools.join(" ")),
            Err(e) => {
                failed = true;
                format!("failed: {e:#}")
            }
        }
    };
    println!("cloudprep firstboot: hypervisor tools: {hypervisor_tools}");
    let steps = FirstbootSteps {
        grub,
        hypervisor_tools,
    };
    drop(facts);

    // 3. The audit, now on the cloud's hardware.
    let audit = audit::run(&root, &config, &Selection::default());
    let code = audit.exit_code();
    // The report stays exactly the schema'd audit report; the steps go beside it.
    let report = crate::report::to_json(&audit);
    write_guest(
        &root,
        FIRSTBOOT_REPORT,
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    write_guest(
        &root,
        "/var/lib/cloudprep/firstboot-steps.json",
        &(serde_json::to_string_pretty(&steps)? + "\n"),
    )?;
    println!(
        "cloudprep firstboot: audit exit {code}, report {}",
        root.display(FIRSTBOOT_REPORT)
    );

    // 4. Once only.
    remove_guest(&root, FIRSTBOOT_MARKER)?;
    disable_unit(&root, FIRSTBOOT_UNIT)?;
    Ok(if failed { EXIT_FAILURE } else { code })
}
