//! The fleet report as text: totals, the host table, the checks by number of failing hosts, skipped inputs.

use super::{push_line, Fleet, FleetHost};

fn opt<T: ToString>(v: Option<T>, unit: &str) -> String {
    v.map(|x| format!("{}{unit}", x.to_string()))
        .unwrap_or_else(|| "?".into())
}

/// One line per NIC: name, MAC, addresses, gateway.
pub fn nics(h: &FleetHost) -> Vec<String> {
    match &h.nics {
        None => vec!["(not recorded: offline root)".into()],
        Some(n) => n
            .iter()
            .map(|n| {
                format!(
                    "{} {} {}{}",
                    n.name,
                    n.mac.as_deref().unwrap_or("-"),
                    if n.addresses.is_empty() {
                        "-".into()
                    } else {
                        n.addresses.join(",")
                    },
                    n.gateway
                        .as_deref()
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                )
            })
            .collect(),
    }
}

pub fn render(f: &Fleet) -> String {
    let t = &f.totals;
    let mut s = format!(
        "cloudprep fleet report: {} host(s): {} ready, {} with warnings, {} blocked, {} audit error; {} unreadable report(s)\n\n",
        t.hosts, t.ready, t.warnings, t.blocked, t.audit_error, t.unreadable
    );
    s.push_str(&format!(
        "{:<24} {:<11} {:>3} {:>3}  {:<7} {:<10} {:>5}  {:<28} {}\n",
        "HOST", "STATUS", "B", "W", "FW", "FLAVOUR", "DISK", "OS", "BLOCKERS"
    ));
    for h in &f.hosts {
        push_line(
            &mut s,
            &format!(
                "{:<24} {:<11} {:>3} {:>3}  {:<7} {:<10} {:>5}  {:<28} {}",
                h.name,
                h.status.label(),
                h.blockers,
                h.warnings,
                h.firmware,
                format!(
                    "{}/{}",
                    opt(h.flavour.vcpus, "cpu"),
                    opt(h.flavour.ram_mib, "M")
                ),
                opt(h.min_disk_gib, "G"),
                h.os.as_deref().unwrap_or("unknown OS"),
                h.blocker_ids.join(",")
            ),
        );
        for n in nics(h) {
            push_line(&mut s, &format!("{:<24}   nic: {n}", ""));
        }
    }
    if !f.checks.is_empty() {
        s.push_str("\nCHECKS BY FAILING HOSTS\n");
        for c in &f.checks {
            push_line(
                &mut s,
                &format!(
                    "{:>5} host(s)  {:<8} {:<36} {}{}",
                    c.hosts_failing,
                    c.severity.to_string(),
                    c.id,
                    c.title,
                    if c.hosts_waived > 0 {
                        format!(" ({} waived)", c.hosts_waived)
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
    if !f.skipped.is_empty() {
        s.push_str("\nSKIPPED (not merged)\n");
        for k in &f.skipped {
            push_line(&mut s, &format!("  {}: {}", k.source, k.reason));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, report};
    use super::super::{merge, waivers::Waivers, Input};
    use super::*;
    use serde_json::json;

    #[test]
    fn text_has_totals_hosts_nics_checks_and_skipped() {
        let f = merge(
            &[
                Input {
                    source: "web\u{1b}[31m1.json".into(),
                    content: Ok(report(
                        json!([finding("fstab.device-names", "blocker", "open")]),
                        "bios",
                    )),
                },
                Input {
                    source: "bad.json".into(),
                    content: Ok("{".into()),
                },
            ],
            &Waivers::default(),
        );
        let t = render(&f);
        assert!(
            t.contains("1 host(s): 0 ready, 0 with warnings, 1 blocked"),
            "{t}"
        );
        assert!(t.contains("1 unreadable"), "{t}");
        assert!(
            t.contains("nic: eth0 52:54:00:12:34:56 10.0.0.5/24 via 10.0.0.1"),
            "{t}"
        );
        assert!(
            t.contains("    1 host(s)  blocker  fstab.device-names"),
            "{t}"
        );
        assert!(t.contains("bad.json: truncated JSON"), "{t}");
        assert!(
            !t.contains('\u{1b}'),
            "control characters are not printed raw"
        );
        assert!(t.starts_with("cloudprep fleet report: 1 host(s)"), "{t}");
        assert!(t.contains("\nweb?[31m1 "), "{t}");
        assert_eq!(t.lines().filter(|l| l.contains("nic:")).count(), 1, "{t}");
    }
}
