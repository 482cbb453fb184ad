//! Check: the new hostname resolves (/etc/hosts names only the old one and manage_etc_hosts is off).

use super::*;

pub(super) const ETC_HOSTS_SNIPPET: &str = "manage_etc_hosts: localhost\n";

/// Lines of an /etc/hosts file that give `name` a loopback address other than 127.0.0.1 (Debian's and
/// Ubuntu's `127.0.1.1 hostname`): `(line number, line)`.
pub fn loopback_host_lines(hosts: &str, name: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, l) in hosts.lines().enumerate() {
        let t = l.split('#').next().unwrap_or("").trim();
        let mut it = t.split_whitespace();
        let Some(ip) = it.next() else { continue };
        if !ip.starts_with("127.") || ip == "127.0.0.1" {
            continue;
        }
        if it.any(|n| n == name || n.split('.').next() == Some(name)) {
            out.push((i + 1, l.trim_end_matches('\r').to_string()));
        }
    }
    out
}

pub(super) fn check_etc_hosts(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let files = load_config(ctx)?;
    // cloud-init keeps the old name, or already manages /etc/hosts.
    if effective_value(&files, &["preserve_hostname"]).is_some_and(|(_, v)| !is_false_value(v))
        || effective_value(&files, &["manage_etc_hosts"]).is_some_and(|(_, v)| !is_false_value(v))
    {
        return Ok(vec![]);
    }
    let Some(hostname) = ctx.root.read_text("/etc/hostname")? else {
        return Ok(vec![]);
    };
    let Some(old) = hostname
        .lines()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('.').next().unwrap_or(l).to_string())
    else {
        return Ok(vec![]);
    };
    let Some(hosts) = ctx.root.read_text("/etc/hosts")? else {
        return Ok(vec![]);
    };
    let lines = loopback_host_lines(&hosts, &old);
    if lines.is_empty() {
        return Ok(vec![]);
    }
    let ev = lines
        .iter()
        .map(|(n, l)| Evidence::line("/etc/hosts", *n, l))
        .collect::<Vec<_>>();
    Ok(vec![Finding::new(
        info,
        format!(
            "cloud-init names the instance from the metadata service, but /etc/hosts gives only the old name \
             {old:?} a local address and cloud-init leaves /etc/hosts alone (manage_etc_hosts is off): the new \
             hostname does not resolve unless the cloud's DNS knows it, and sudo warns \"unable to resolve host\" \
             on every call"
        ),
    )
    .evidences(ev)
    .remediation(format!(
        "set `{}` in {CLOUDPREP_CFG}: cloud-init then points 127.0.1.1 at the instance's hostname on every boot",
        ETC_HOSTS_SNIPPET.trim_end()
    ))
    .fix(Fix::default().edit(cloudprep_cfg_edit_owned(ETC_HOSTS_SNIPPET.to_string())))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_lines_name_the_old_host() {
        let h = "127.0.0.1\tlocalhost legacy-vm\n127.0.1.1\tlegacy-vm.example.com legacy-vm\r\n\
                 # 127.0.1.1 legacy-vm\n::1 localhost ip6-localhost\n10.0.2.15 legacy-vm\n\
                 127.0.1.1 other # legacy-vm\n127.0.2.1\tlegacy-vm.corp\ngarbage\n";
        let l = loopback_host_lines(h, "legacy-vm");
        assert_eq!(
            l.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![2, 7],
            "{l:?}"
        );
        assert_eq!(l[0].1, "127.0.1.1\tlegacy-vm.example.com legacy-vm");
        assert!(loopback_host_lines(h, "legacy").is_empty());
        assert!(loopback_host_lines("", "x").is_empty());
    }
}
