//! Check: interface names that change on the cloud's virtio NIC.

use super::*;

pub(super) fn check_names(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let naming = ctx.config.network.interface_naming;
    let named: Vec<&Cfg> = st
        .cfgs
        .iter()
        .filter(|c| c.name.as_deref().is_some_and(is_physical))
        .collect();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let ev: Vec<Evidence> = named
        .iter()
        .map(|c| {
            Evidence::line(
                &c.path,
                c.line,
                &format!(
                    "{} ({} {})",
                    c.name.as_deref().unwrap_or(""),
                    c.family,
                    match &c.method {
                        Method::Dhcp => "dhcp",
                        Method::Static => "static",
                        Method::Other(m) => m,
                    }
                ),
            )
        })
        .collect();
    let mut out = Vec::new();
    match naming {
        NamingPolicy::Eth0 => {
            let map = st.rename_map(naming);
            let disabled = ifnames_disabled(ctx.root)?;
            let capable = predictable_capable(ctx);
            if map.is_empty() && (disabled || !capable) {
                return Ok(out);
            }
            let mut msg = String::new();
            if !map.is_empty() {
                msg.push_str(&format!(
                    "the configuration names interfaces by their predictable names ({}), which depend on the \
                     PCI slot: on the cloud's virtio NIC they change (ens192 on VMware becomes ens3 or enp0s3 on KVM)",
                    map.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if capable && !disabled {
                if !msg.is_empty() {
                    msg.push_str("; ");
                }
                msg.push_str(
                    "udev renames NICs to predictable names (no net.ifnames=0 on the kernel command line), so \
                     a configuration for eth0 never matches",
                );
            }
            let mut fix = Fix::default();
            if capable && !disabled {
                fix = grub_fix(ctx.root);
            }
            for e in rename_edits(&st, &map) {
                fix = fix.edit(e);
            }
            let rem = format!(
                "Use kernel names: add `net.ifnames=0 biosdevname=0` to GRUB_CMDLINE_LINUX in {DEFAULT_GRUB}, run \
                 update-grub{}.",
                if map.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", and rename {} in the network configuration",
                        map.iter()
                            .map(|(o, n)| format!("{o} to {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            let mut f = Finding::new(info, msg).evidences(ev).remediation(rem);
            // cloud-init's DHCP fallback (written for whatever the NIC is called) still brings the
            // instance up when its output is read: then the dead configuration is a warning.
            if cloud_init_covers(ctx, &st)? {
                f = f.severity(Severity::Warning);
                f.message.push_str(
                    "; cloud-init's fallback configuration still brings the NIC up with DHCP, but this \
                     configuration (and its static settings) would never apply",
                );
            }
            if !fix.edits.is_empty() {
                f = f.fix(fix);
            }
            out.push(f);
        }
        NamingPolicy::Predictable => {
            // Predictable names change with the PCI slot; kernel names (eth0) never appear when udev renames.
            let renames = predictable_capable(ctx) && !ifnames_disabled(ctx.root)?;
            let mut pred: Vec<&str> = named
                .iter()
                .filter_map(|c| c.name.as_deref())
                .filter(|n| is_predictable(n) || renames)
                .collect();
            pred.dedup();
            if pred.is_empty() {
                return Ok(out);
            }
            out.push(
                Finding::new(
                    info,
                    format!(
                        "the configuration names {}, but the name of the cloud's virtio NIC will differ: \
                         predictable names depend on the PCI slot, and kernel names (eth0) are replaced by \
                         predictable ones unless net.ifnames=0 is set ([network] interface_naming = \
                         \"predictable\": not fixed automatically)",
                        pred.join(", ")
                    ),
                )
                .evidences(ev)
                .remediation(
                    "Match the interface by a name pattern (netplan `match: name: \"en*\"`, networkd Name=en*) or \
                     switch to interface_naming = \"eth0\".",
                ),
            );
        }
    }
    Ok(out)
}
