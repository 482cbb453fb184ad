//! Check: a static /etc/resolv.conf with the old network's name servers.

use super::*;

/// `nameserver` lines of a resolv.conf: (line, address).
pub fn resolv_nameservers(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| (i + 1, w.next().unwrap_or("").to_string()))
        })
        .collect()
}

pub(super) fn check_resolv(ctx: &Ctx, _info: &CheckInfo) -> Result<Vec<Finding>> {
    let info = _info;
    let path = "/etc/resolv.conf";
    let lex = ctx.root.lexical(path);
    let Ok(meta) = std::fs::symlink_metadata(&lex) else {
        return Ok(Vec::new());
    };
    if meta.file_type().is_symlink() {
        return Ok(Vec::new());
    }
    let Some(text) = ctx.root.read_text(path)? else {
        return Ok(Vec::new());
    };
    let ns = resolv_nameservers(&text);
    if ns.is_empty() {
        return Ok(Vec::new());
    }
    let st = gather(ctx)?;
    let mut why = Vec::new();
    if ctx.facts.installed("resolvconf") {
        why.push("resolvconf is installed but /etc/resolv.conf is not its symlink (../run/resolvconf/resolv.conf), so the DNS servers DHCP hands out never reach it".to_string());
    }
    let networkd_only = !st.networkd.is_empty()
        || st.netplan.iter().any(|f| {
            f.parsed.renderer.as_deref().unwrap_or("networkd") == "networkd"
                && !f.parsed.ifaces.is_empty()
        });
    if networkd_only && !ctx.facts.installed("resolvconf") {
        why.push("systemd-networkd never writes /etc/resolv.conf (it needs the systemd-resolved stub symlink)".to_string());
    }
    let mut ev: Vec<Evidence> = ns
        .iter()
        .map(|(l, n)| Evidence::line(path, *l, &format!("nameserver {n}")))
        .collect();
    for f in ["/etc/dhcp/dhclient.conf", "/etc/dhcp3/dhclient.conf"] {
        if let Some(t) = ctx.root.read_text(f)? {
            for (i, l) in t.lines().enumerate() {
                let s = l.trim_start();
                if !s.starts_with('#')
                    && (s.starts_with("supersede domain-name-servers")
                        || s.starts_with("prepend domain-name-servers"))
                {
                    why.push(format!("{f} overrides the DHCP-provided DNS servers"));
                    ev.push(Evidence::line(f, i + 1, l));
                }
            }
        }
    }
    if why.is_empty() {
        return Ok(Vec::new());
    }
    let mut f = Finding::new(
        info,
        format!(
            "/etc/resolv.conf is a static file naming the old network's DNS servers ({}), and {}: name resolution \
             in the cloud would use unreachable servers",
            ns.iter().map(|n| n.1.as_str()).collect::<Vec<_>>().join(", "),
            why.join("; ")
        ),
    )
    .evidences(ev)
    .remediation(
        "Let DHCP manage DNS: with resolvconf run `dpkg-reconfigure resolvconf` (or `ln -sf ../run/resolvconf/resolv.conf \
         /etc/resolv.conf`); with systemd-networkd enable systemd-resolved and link /etc/resolv.conf to \
         /run/systemd/resolve/stub-resolv.conf; remove `supersede domain-name-servers` from dhclient.conf.",
    );
    // With resolvconf, hand /etc/resolv.conf back to it (the static file goes to the backup area).
    if ctx.facts.installed("resolvconf") {
        f = f.fix(
            Fix::default()
                .edit(FileEdit::remove(path))
                .command(PlannedCommand::new(
                    Phase::Post,
                    RESOLV_LINK_ORDER,
                    &["ln", "-sfn", "../run/resolvconf/resolv.conf", path],
                    "let resolvconf manage /etc/resolv.conf (DNS servers from DHCP)",
                )),
        );
    }
    Ok(vec![f])
}
