//! Check: sshd is installed, enabled and listens on every address (ListenAddress of the old network
//! would keep the instance unreachable).

use super::firewall::unit_enabled;
use crate::checks::cloud_init::ORDER_SYSTEMCTL;
use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Validator,
};
use anyhow::Result;

pub fn checks() -> Vec<Check> {
    vec![check!(
        "network.sshd",
        "sshd is installed, enabled and listens on every address",
        Network,
        Blocker,
        true,
        check_sshd
    )]
}

/// `ListenAddress` lines of an sshd_config outside `Match` blocks: (line, text, address).
pub fn listen_addresses(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut in_match = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let mut it = t.splitn(2, |c: char| c.is_whitespace() || c == '=');
        let kw = it.next().unwrap_or("").to_ascii_lowercase();
        let val = it
            .next()
            .unwrap_or("")
            .trim()
            .trim_start_matches('=')
            .trim();
        if kw == "match" {
            in_match = true;
        }
        if kw == "listenaddress" && !in_match {
            out.push((i + 1, l.trim_end_matches('\r').to_string(), val.to_string()));
        }
    }
    out
}

/// The host part of a ListenAddress value (`10.0.0.5`, `10.0.0.5:22`, `[::1]:22`, `0.0.0.0 rdomain x`).
pub fn listen_host(v: &str) -> String {
    let v = v.split_whitespace().next().unwrap_or("");
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    if v.matches(':').count() == 1 {
        return v.split(':').next().unwrap_or("").to_string();
    }
    v.to_string()
}

fn is_wildcard(h: &str) -> bool {
    matches!(h, "0.0.0.0" | "::" | "*" | "")
}

/// Comment out the given lines (1-based) with `#`, keeping every other byte.
pub fn comment_lines(text: &str, lines: &[usize]) -> String {
    let mut out = String::with_capacity(text.len() + lines.len());
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if lines.contains(&(i + 1)) && !l.trim_start().starts_with('#') {
            out.push('#');
        }
        out.push_str(l);
    }
    out
}

/// Comment out every non-wildcard `ListenAddress` outside Match blocks. Idempotent.
pub fn drop_specific_listen(text: &str) -> String {
    let lines: Vec<usize> = listen_addresses(text)
        .into_iter()
        .filter(|(_, _, v)| !is_wildcard(&listen_host(v)))
        .map(|(l, _, _)| l)
        .collect();
    comment_lines(text, &lines)
}

fn is_systemd(ctx: &Ctx) -> bool {
    if ctx.facts.installed("systemd-sysv") {
        return true;
    }
    ctx.root
        .resolve("/sbin/init")
        .map(|r| r.guest.contains("systemd"))
        .unwrap_or(false)
}

fn check_sshd(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if ctx.facts.packages.is_empty() {
        return Ok(out);
    }
    if !ctx.facts.installed("openssh-server") {
        out.push(
            Finding::new(
                info,
                "openssh-server is not installed: the imported instance cannot be logged into with the cloud's \
                 SSH key",
            )
            .evidence(Evidence::file("/var/lib/dpkg/status", "no installed openssh-server"))
            .remediation("apt-get install -y openssh-server")
            .fix(Fix::default().command(crate::checks::apt_update()).command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES,
                &["apt-get", "install", "-y", "openssh-server"],
                "install the SSH server",
            ))),
        );
        return Ok(out);
    }
    // Enabled at boot?
    if is_systemd(ctx) {
        let masked = ["ssh.service", "sshd.service"].iter().find_map(|u| {
            let p = format!("/etc/systemd/system/{u}");
            let r = ctx.root.resolve_parent(&p).ok()?;
            let t = std::fs::read_link(&r.host).ok()?;
            (t == std::path::Path::new("/dev/null")).then_some(p)
        });
        if let Some(p) = masked {
            out.push(
                Finding::new(info, "ssh.service is masked: sshd never starts")
                    .evidence(Evidence::file(&p, "symlink to /dev/null (masked)"))
                    .remediation("systemctl unmask ssh.service && systemctl enable ssh.service")
                    .fix(
                        Fix::default()
                            .command(PlannedCommand::new(
                                Phase::Post,
                                ORDER_SYSTEMCTL,
                                &["systemctl", "unmask", "ssh.service"],
                                "unmask sshd",
                            ))
                            .command(PlannedCommand::new(
                                Phase::Post,
                                ORDER_SYSTEMCTL + 1,
                                &["systemctl", "enable", "ssh.service"],
                                "start sshd at boot",
                            )),
                    ),
            );
        } else if !unit_enabled(ctx, &["ssh.service", "sshd.service", "ssh.socket"]) {
            out.push(
                Finding::new(
                    info,
                    "ssh.service is not enabled (no multi-user.target.wants/ssh.service, no ssh.socket): sshd \
                     does not start at boot",
                )
                .evidence(Evidence::file(
                    "/etc/systemd/system/multi-user.target.wants/ssh.service",
                    "absent",
                ))
                .remediation("systemctl enable ssh.service")
                .fix(Fix::default().command(PlannedCommand::new(
                    Phase::Post,
                    ORDER_SYSTEMCTL,
                    &["systemctl", "enable", "ssh.service"],
                    "start sshd at boot",
                ))),
            );
        }
    } else if ctx.facts.installed("upstart") {
        if let Some(t) = ctx.root.read_text("/etc/init/ssh.override")? {
            if let Some((i, l)) = t.lines().enumerate().find(|(_, l)| l.trim() == "manual") {
                out.push(
                    Finding::new(
                        info,
                        "/etc/init/ssh.override says `manual`: sshd does not start at boot",
                    )
                    .evidence(Evidence::line("/etc/init/ssh.override", i + 1, l))
                    .remediation("rm /etc/init/ssh.override")
                    .fix(Fix::default().edit(FileEdit::remove("/etc/init/ssh.override"))),
                );
            }
        }
    } else {
        let links = ctx.root.list_dir("/etc/rc2.d")?;
        if !links
            .iter()
            .any(|n| n.starts_with('S') && (n.ends_with("ssh") || n.ends_with("sshd")))
        {
            out.push(
                Finding::new(
                    info,
                    "no /etc/rc2.d/S??ssh link: sshd does not start at boot (sysvinit)",
                )
                .evidence(Evidence::file("/etc/rc2.d", "no S??ssh"))
                .remediation("update-rc.d ssh enable")
                .fix(Fix::default().command(PlannedCommand::new(
                    Phase::Post,
                    ORDER_SYSTEMCTL,
                    &["update-rc.d", "ssh", "enable"],
                    "start sshd at boot",
                ))),
            );
        }
    }
    // ListenAddress bound to the old address.
    let mut cfgs = vec!["/etc/ssh/sshd_config".to_string()];
    cfgs.extend(
        ctx.root
            .files_in("/etc/ssh/sshd_config.d", |n| n.ends_with(".conf"))?,
    );
    let mut all = Vec::new();
    for p in &cfgs {
        if let Some(t) = ctx.root.read_text(p)? {
            for (l, text, v) in listen_addresses(&t) {
                all.push((p.clone(), l, text, listen_host(&v)));
            }
        }
    }
    if !all.is_empty() && !all.iter().any(|a| is_wildcard(&a.3)) {
        let mut fix = Fix::default();
        let mut seen = Vec::new();
        for a in &all {
            if !seen.contains(&a.0) {
                seen.push(a.0.clone());
                fix = fix.edit(FileEdit::rewrite(&a.0, Validator::None, |c| {
                    Ok(drop_specific_listen(c))
                }));
            }
        }
        let addrs: Vec<&str> = all.iter().map(|a| a.3.as_str()).collect();
        out.push(
            Finding::new(
                info,
                format!(
                    "sshd only listens on {}: the instance gets a new address in the cloud, sshd cannot bind it \
                     and SSH is unreachable",
                    addrs.join(", ")
                ),
            )
            .evidences(all.iter().map(|a| Evidence::line(&a.0, a.1, &a.2)))
            .remediation("comment out the ListenAddress lines (sshd then listens on every address), check with `sshd -t`")
            .fix(fix),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_listen() {
        let t = "Port 22\nListenAddress 10.1.2.5\n#ListenAddress 0.0.0.0\n  listenaddress=192.168.0.9:2222\nMatch User bob\n  ListenAddress 1.2.3.4\n";
        let l = listen_addresses(t);
        assert_eq!(l.len(), 2);
        assert_eq!(listen_host(&l[0].2), "10.1.2.5");
        assert_eq!(listen_host(&l[1].2), "192.168.0.9");
        assert_eq!(listen_host("[::1]:22"), "::1");
        assert_eq!(listen_host("fe80::1"), "fe80::1");
        let out = drop_specific_listen(t);
        assert_eq!(
            out,
            "Port 22\n#ListenAddress 10.1.2.5\n#ListenAddress 0.0.0.0\n#  listenaddress=192.168.0.9:2222\nMatch User bob\n  ListenAddress 1.2.3.4\n"
        );
        assert_eq!(drop_specific_listen(&out), out);
        assert!(listen_addresses(&out).is_empty());
        assert_eq!(
            drop_specific_listen("ListenAddress 0.0.0.0\r\nListenAddress ::"),
            "ListenAddress 0.0.0.0\r\nListenAddress ::"
        );
    }
}
