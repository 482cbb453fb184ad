//! Checks: firewall rules and sshd settings that would lock SSH out of the imported instance.
//!
//! The firewall evaluators answer one question: is a NEW TCP connection to the SSH port, from an arbitrary
//! (unknown) client address, to the instance's new (unknown) address, accepted? Each rule's match is
//! evaluated three-valued: it always matches such a packet, never does, or matches only under a condition
//! that depends on addresses we cannot know (`from 10.1.2.0/24`, `to 10.1.2.5`, `on interface ens192`).
//! An accept that is only conditional is what a firewall "restricted to the old network" looks like.

use crate::checks::{Check, CheckInfo, Ctx, Evidence, Finding, Severity};
use crate::config::NamingPolicy;
use anyhow::Result;
use std::collections::BTreeMap;

pub mod firewalld;
pub mod iptables;
pub mod nft;

use firewalld::builtin_zone_allows_ssh;
pub use firewalld::firewalld_zone;
pub use iptables::{parse_iptables_save, shell_split, IptParse};
pub use nft::{parse_nft, NftRuleset};

pub fn checks() -> Vec<Check> {
    vec![check!(
        "network.firewall-ssh",
        "the firewall lets SSH in from any address",
        Network,
        Blocker,
        false,
        check_firewall
    )]
}

// ---------------------------------------------------------------------------------------------------------
// Three-valued matching
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Always,
    Never,
    /// Matches only under a condition we cannot know (the reason, e.g. "from 10.1.2.0/24").
    Maybe(String),
}

impl Cond {
    fn and(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::Never, _) | (_, Cond::Never) => Cond::Never,
            (Cond::Always, x) | (x, Cond::Always) => x,
            (Cond::Maybe(a), Cond::Maybe(b)) => Cond::Maybe(format!("{a}, {b}")),
        }
    }
    fn negate_if(self, neg: bool) -> Cond {
        if !neg {
            return self;
        }
        match self {
            Cond::Always => Cond::Never,
            Cond::Never => Cond::Always,
            // "not from 10.0.0.0/8" lets an arbitrary address in.
            Cond::Maybe(_) => Cond::Always,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Accept,
    /// DROP or REJECT (the name).
    Drop(String),
    Return,
    Jump(String),
    Goto(String),
    /// Non-terminating (LOG, counters, marks).
    Continue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub text: String,
    pub cond: Cond,
    pub target: Target,
    /// A rate-limit/recent match: passes the first connection, so only an accept can match it.
    pub rate_limited: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// ACCEPT/DROP/REJECT for built-in/base chains, None for user chains.
    pub policy: Option<String>,
    pub policy_line: usize,
    pub policy_text: String,
    pub rules: Vec<Rule>,
}

/// What the packet's environment looks like in the cloud.
#[derive(Debug, Clone)]
pub struct Probe {
    pub port: u16,
    /// Interface names the cloud NIC will have for sure (e.g. `eth0` with net.ifnames=0).
    pub cloud_ifaces: Vec<String>,
}

impl Probe {
    pub fn new(port: u16, naming: NamingPolicy) -> Probe {
        Probe {
            port,
            cloud_ifaces: match naming {
                NamingPolicy::Eth0 => vec!["eth0".into()],
                NamingPolicy::Predictable => vec![],
            },
        }
    }

    fn iface(&self, name: &str) -> Cond {
        let name = name.trim_matches('"');
        if name == "lo" || (name.starts_with("lo") && name.ends_with('+')) {
            return Cond::Never;
        }
        if name == "+" || name == "*" {
            return Cond::Always;
        }
        let matches = |n: &str| match name.strip_suffix(['+', '*']) {
            Some(prefix) => n.starts_with(prefix),
            None => n == name,
        };
        if self.cloud_ifaces.iter().any(|n| matches(n)) {
            Cond::Always
        } else {
            Cond::Maybe(format!("only on interface {name}"))
        }
    }

    /// Does a port spec (`22`, `ssh`, `20:25`, `20-25`, `22,80`) include the SSH port?
    pub fn port_in(&self, spec: &str) -> bool {
        spec.split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .any(|s| match s.split_once([':', '-']) {
                Some((a, b)) => {
                    let a = if a.is_empty() { Some(0) } else { port_num(a) };
                    let b = if b.is_empty() {
                        Some(65535)
                    } else {
                        port_num(b)
                    };
                    matches!((a, b), (Some(a), Some(b)) if a <= self.port && self.port <= b)
                }
                None => port_num(s) == Some(self.port),
            })
    }
}

fn port_num(s: &str) -> Option<u16> {
    match s.trim().trim_matches('"') {
        "ssh" => Some(22),
        "http" | "www" => Some(80),
        "https" => Some(443),
        "smtp" => Some(25),
        "domain" => Some(53),
        n => n.parse().ok(),
    }
}

fn is_any_addr(a: &str) -> bool {
    matches!(
        a.trim(),
        "0.0.0.0/0" | "::/0" | "0/0" | "0.0.0.0/0.0.0.0" | "::"
    )
}

fn addr_cond(values: &str, what: &str) -> Cond {
    let vals: Vec<&str> = values
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if vals.iter().any(|v| is_any_addr(v)) {
        Cond::Always
    } else {
        Cond::Maybe(format!("{what} {}", vals.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Open,
    /// Accepted only under conditions: (line, text, condition) of each accepting rule, and the drop point.
    Restricted {
        accepts: Vec<(usize, String, String)>,
        drop: (usize, String),
    },
    /// Dropped for every source: the rule or policy line.
    Blocked {
        drop: (usize, String),
    },
}

enum Outcome {
    Accept,
    Drop(usize, String),
    Fallthrough,
}

pub type Chains = BTreeMap<String, Chain>;

/// Evaluate `start` (a base chain) for the probe packet. `policy` overrides the chain's own policy.
pub fn evaluate(chains: &Chains, start: &str, policy: Option<(&str, usize, &str)>) -> Reach {
    let mut restricted = Vec::new();
    let mut budget = 100_000usize;
    let out = eval_chain(chains, start, 0, &mut restricted, &mut budget);
    let drop = match out {
        Outcome::Accept => return Reach::Open,
        Outcome::Drop(l, t) => (l, t),
        Outcome::Fallthrough => {
            let chain = chains.get(start);
            let (pol, line, text) = match policy {
                Some((p, l, t)) => (p.to_string(), l, t.to_string()),
                None => match chain.and_then(|c| c.policy.clone()) {
                    Some(p) => {
                        let c = chain.unwrap();
                        (p, c.policy_line, c.policy_text.clone())
                    }
                    None => return Reach::Open,
                },
            };
            if pol.eq_ignore_ascii_case("ACCEPT") {
                return Reach::Open;
            }
            (line, text)
        }
    };
    if restricted.is_empty() {
        Reach::Blocked { drop }
    } else {
        Reach::Restricted {
            accepts: restricted,
            drop,
        }
    }
}

fn eval_chain(
    chains: &Chains,
    name: &str,
    depth: usize,
    restricted: &mut Vec<(usize, String, String)>,
    budget: &mut usize,
) -> Outcome {
    let Some(chain) = chains.get(name) else {
        return Outcome::Fallthrough;
    };
    // Jump loops (iptables-restore rejects them, a hand-written file may not): bounded depth and work.
    if depth > 32 || *budget == 0 {
        return Outcome::Fallthrough;
    }
    *budget -= 1;
    for r in &chain.rules {
        let cond = match (&r.cond, &r.target) {
            // Rate limits/recent lists let the first connection through: a rate-matched rule only
            // accepts it, never drops or diverts it (`-m recent --update ... -j ufw-user-limit`).
            (_, t) if r.rate_limited && *t != Target::Accept => Cond::Never,
            (c, _) => c.clone(),
        };
        match cond {
            Cond::Never => continue,
            Cond::Always => match &r.target {
                Target::Accept => return Outcome::Accept,
                Target::Drop(_) => return Outcome::Drop(r.line, r.text.clone()),
                Target::Return => return Outcome::Fallthrough,
                Target::Continue => continue,
                Target::Jump(c) => match eval_chain(chains, c, depth + 1, restricted, budget) {
                    Outcome::Fallthrough => continue,
                    o => return o,
                },
                Target::Goto(c) => return eval_chain(chains, c, depth + 1, restricted, budget),
            },
            Cond::Maybe(why) => match &r.target {
                Target::Accept => restricted.push((r.line, r.text.clone(), why)),
                Target::Jump(c) | Target::Goto(c) => {
                    let mut sub = Vec::new();
                    if let Outcome::Accept = eval_chain(chains, c, depth + 1, &mut sub, budget) {
                        restricted.push((r.line, r.text.clone(), why));
                    }
                    restricted.extend(sub);
                }
                _ => continue,
            },
        }
    }
    Outcome::Fallthrough
}

// Checks
// ---------------------------------------------------------------------------------------------------------

pub(crate) fn unit_enabled(ctx: &Ctx, units: &[&str]) -> bool {
    let dirs = [
        "/etc/systemd/system/multi-user.target.wants",
        "/etc/systemd/system/sysinit.target.wants",
        "/etc/systemd/system/network-pre.target.wants",
        "/etc/systemd/system/basic.target.wants",
        "/etc/systemd/system/sockets.target.wants",
    ];
    // The wants/ link itself (its target may live in /lib or /usr/lib: do not follow it).
    dirs.iter().any(|d| {
        units.iter().any(|u| {
            ctx.root
                .resolve_parent(format!("{d}/{u}"))
                .is_ok_and(|r| std::fs::symlink_metadata(r.host).is_ok())
        })
    })
}

fn reach_finding(
    info: &CheckInfo,
    path: &str,
    what: &str,
    reach: &Reach,
    port: u16,
    remediation: &str,
    v6: bool,
) -> Option<Finding> {
    let sev = if v6 {
        Severity::Warning
    } else {
        Severity::Blocker
    };
    let fam = if v6 { " (IPv6)" } else { "" };
    match reach {
        Reach::Open => None,
        Reach::Blocked { drop } => Some(
            Finding::new(
                info,
                format!(
                    "{what}{fam} drops a new SSH connection (tcp/{port}) from any address: the imported instance \
                     will not be reachable over SSH"
                ),
            )
            .severity(sev)
            .evidence(Evidence::line(path, drop.0, &drop.1))
            .remediation(remediation.to_string()),
        ),
        Reach::Restricted { accepts, drop } => {
            let conds: Vec<&str> = accepts.iter().map(|a| a.2.as_str()).collect();
            Some(
                Finding::new(
                    info,
                    format!(
                        "{what}{fam}: SSH (tcp/{port}) only allowed {}: the cloud's addresses will differ, so \
                         SSH is dropped",
                        conds.join("; ")
                    ),
                )
                .severity(sev)
                .evidences(accepts.iter().map(|a| {
                    if a.1.starts_with("rich rule") {
                        Evidence::file(path, format!("line {}: {}", a.0, a.2))
                    } else {
                        Evidence::line(path, a.0, &a.1)
                    }
                }))
                .evidence(Evidence::line(path, drop.0, &drop.1))
                .remediation(remediation.to_string()),
            )
        }
    }
}

fn parse_errors_evidence(path: &str, errs: &[(usize, String, String)]) -> Vec<Evidence> {
    errs.iter()
        .map(|(l, t, why)| Evidence::line(path, *l, &format!("{t}  (skipped: {why})")))
        .collect()
}

/// Files an iptables-restore in a boot script loads (ifupdown hooks, rc.local).
fn restored_files(ctx: &Ctx) -> Result<Vec<String>> {
    let mut scripts = vec![
        "/etc/network/interfaces".to_string(),
        "/etc/rc.local".to_string(),
    ];
    scripts.extend(ctx.root.files_in("/etc/network/interfaces.d", |_| true)?);
    scripts.extend(ctx.root.files_in("/etc/network/if-pre-up.d", |_| true)?);
    scripts.extend(ctx.root.files_in("/etc/network/if-up.d", |_| true)?);
    let mut out = Vec::new();
    for s in scripts {
        let Ok(Some(t)) = ctx.root.read_text(&s) else {
            continue;
        };
        for p in restore_paths(&t) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Rule files loaded by `iptables-restore`/`ip6tables-restore` in a script or ifupdown stanza.
pub fn restore_paths(text: &str) -> Vec<String> {
    let re =
        regex::Regex::new(r"ip6?tables-restore\b(?:\s+-[-a-zA-Z]+)*\s*<?\s*(/[^\s;|&)]+)").unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for c in re.captures_iter(line) {
            let p = c[1].to_string();
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn check_firewall(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let port = ctx.config.network.ssh_port;
    let probe = Probe::new(port, ctx.config.network.interface_naming);
    let mut out = Vec::new();

    // iptables rules restored at boot.
    let persistent =
        ctx.facts.installed("iptables-persistent") || ctx.facts.installed("netfilter-persistent");
    let mut files: Vec<String> = Vec::new();
    if persistent {
        files.push("/etc/iptables/rules.v4".into());
        files.push("/etc/iptables/rules.v6".into());
    }
    for f in restored_files(ctx)? {
        if !files.contains(&f) {
            files.push(f);
        }
    }
    for path in &files {
        let Some(text) = ctx.root.read_text(path)? else {
            continue;
        };
        let v6 = path.ends_with(".v6") || path.contains("ip6") || path.contains("6.rules");
        let p = parse_iptables_save(&text, &probe);
        let reach = evaluate(&p.chains, "INPUT", None);
        let rem = format!(
            "before the migration allow SSH from anywhere, e.g. `{} -I INPUT -p tcp --dport {port} -j ACCEPT` \
             and save it with `netfilter-persistent save` (or edit {path}: add `-A INPUT -p tcp --dport {port} \
             -j ACCEPT` before the DROP/REJECT rules and set `:INPUT ACCEPT` if the policy is DROP); restrict \
             SSH with the cloud's security groups instead",
            if v6 { "ip6tables" } else { "iptables" }
        );
        if let Some(f) = reach_finding(
            info,
            path,
            &format!("iptables rules in {path}"),
            &reach,
            port,
            &rem,
            v6,
        ) {
            out.push(f.evidences(parse_errors_evidence(path, &p.errors)));
        }
    }

    // nftables.
    if ctx.facts.installed("nftables") && unit_enabled(ctx, &["nftables.service"]) {
        let path = "/etc/nftables.conf";
        if let Some(text) = ctx.root.read_text(path)? {
            let rs = parse_nft(&text, &probe);
            for key in &rs.input_chains {
                if key.0 == "ip6" {
                    continue;
                }
                // Jumps are relative to the table.
                let scoped: Chains = rs
                    .chains
                    .iter()
                    .filter(|(k, _)| k.0 == key.0 && k.1 == key.1)
                    .map(|(k, v)| (k.2.clone(), v.clone()))
                    .collect();
                let reach = evaluate(&scoped, &key.2, None);
                let rem = format!(
                    "add `tcp dport {port} accept` near the top of chain {} in table {} {} of {path} (before any \
                     drop/reject, not limited to `ip saddr`), check it with `nft -c -f {path}`; restrict SSH with \
                     the cloud's security groups instead",
                    key.2, key.0, key.1
                );
                if let Some(f) = reach_finding(
                    info,
                    path,
                    &format!("nftables chain {} {} {} in {path}", key.0, key.1, key.2),
                    &reach,
                    port,
                    &rem,
                    false,
                ) {
                    out.push(f.evidences(parse_errors_evidence(path, &rs.errors)));
                }
            }
        }
    }

    // ufw.
    if ctx.facts.installed("ufw") {
        if let Some(conf) = ctx.root.read_text("/etc/ufw/ufw.conf")? {
            let enabled = conf.lines().enumerate().find(|(_, l)| {
                let l = l.trim();
                l.starts_with("ENABLED=")
                    && crate::guest::facts::unquote(&l["ENABLED=".len()..])
                        .eq_ignore_ascii_case("yes")
            });
            if let Some((en_line, en_text)) = enabled {
                let defaults = ctx.root.read_text("/etc/default/ufw")?.unwrap_or_default();
                let (pol, pol_line, pol_text) = defaults
                    .lines()
                    .enumerate()
                    .find_map(|(i, l)| {
                        l.trim()
                            .strip_prefix("DEFAULT_INPUT_POLICY=")
                            .map(|v| (crate::guest::facts::unquote(v), i + 1, l.to_string()))
                    })
                    .unwrap_or(("DROP".into(), en_line + 1, en_text.to_string()));
                let pol_path = if defaults.is_empty() {
                    "/etc/ufw/ufw.conf"
                } else {
                    "/etc/default/ufw"
                };
                for (rules_path, v6) in [
                    ("/etc/ufw/user.rules", false),
                    ("/etc/ufw/user6.rules", true),
                ] {
                    let Some(text) = ctx.root.read_text(rules_path)? else {
                        continue;
                    };
                    let p = parse_iptables_save(&text, &probe);
                    let reach = evaluate(
                        &p.chains,
                        "ufw-user-input",
                        Some((&pol, pol_line, &pol_text)),
                    );
                    let rem = format!(
                        "before the migration: ufw allow {port}/tcp (or ufw allow OpenSSH)"
                    );
                    if let Some(mut f) = reach_finding(
                        info,
                        rules_path,
                        &format!(
                            "ufw is enabled (/etc/ufw/ufw.conf line {}) and {rules_path}",
                            en_line + 1
                        ),
                        &reach,
                        port,
                        &rem,
                        v6,
                    ) {
                        // The drop point is ufw's default policy, not a line of user.rules.
                        if let Reach::Blocked { drop } | Reach::Restricted { drop, .. } = &reach {
                            if drop.0 == pol_line && drop.1 == pol_text {
                                f.evidence.retain(|e| {
                                    !(e.path == rules_path
                                        && e.line == Some(pol_line)
                                        && e.text == pol_text)
                                });
                                f.evidence
                                    .push(Evidence::line(pol_path, pol_line, &pol_text));
                            }
                        }
                        f.evidence
                            .insert(0, Evidence::line("/etc/ufw/ufw.conf", en_line + 1, en_text));
                        out.push(f.evidences(parse_errors_evidence(rules_path, &p.errors)));
                    }
                }
            }
        }
    }

    // firewalld.
    if ctx.facts.installed("firewalld") && unit_enabled(ctx, &["firewalld.service"]) {
        let conf = ctx
            .root
            .read_text("/etc/firewalld/firewalld.conf")?
            .unwrap_or_default();
        let zone = conf
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("DefaultZone=")
                    .map(|z| z.trim().to_string())
            })
            .unwrap_or_else(|| "public".into());
        let etc = format!("/etc/firewalld/zones/{zone}.xml");
        let usr = format!("/usr/lib/firewalld/zones/{zone}.xml");
        let found = match ctx.root.read_text(&etc)? {
            Some(t) => Some((etc.clone(), t)),
            None => ctx.root.read_text(&usr)?.map(|t| (usr.clone(), t)),
        };
        let rem = format!(
            "before the migration: firewall-cmd --permanent --zone={zone} --add-service=ssh && firewall-cmd --reload"
        );
        match found {
            Some((path, xml)) => {
                let reach = firewalld_zone(&xml, &probe);
                if let Some(f) = reach_finding(
                    info,
                    &path,
                    &format!("firewalld's default zone {zone} ({path})"),
                    &reach,
                    port,
                    &rem,
                    false,
                ) {
                    out.push(f);
                }
            }
            None if !builtin_zone_allows_ssh(&zone) || port != 22 => out.push(
                Finding::new(
                    info,
                    format!("firewalld's default zone {zone} does not allow SSH (tcp/{port})"),
                )
                .evidence(Evidence::file(
                    "/etc/firewalld/firewalld.conf",
                    format!("DefaultZone={zone}"),
                ))
                .remediation(rem),
            ),
            None => {}
        }
    }
    for f in &mut out {
        let mut seen: Vec<Evidence> = Vec::new();
        f.evidence.retain(|e| {
            let dup = seen.contains(e);
            seen.push(e.clone());
            !dup
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn probe() -> Probe {
        Probe::new(22, NamingPolicy::Eth0)
    }

    #[test]
    fn jump_loops_terminate() {
        let t = "*filter\n:INPUT DROP [0:0]\n:a - [0:0]\n-A INPUT -j a\n-A a -j a\n-A a -j a\n-A a -s 10.0.0.0/8 -j a\n-A a -j a\nCOMMIT\n";
        let start = std::time::Instant::now();
        let r = evaluate(&parse_iptables_save(t, &probe()).chains, "INPUT", None);
        assert!(matches!(r, Reach::Blocked { .. }), "{r:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn restore_scripts() {
        let t = "auto eth0\niface eth0 inet static\n  pre-up iptables-restore < /etc/iptables.up.rules\n  pre-up /sbin/ip6tables-restore -n /etc/ip6tables.rules\n# pre-up iptables-restore < /etc/old.rules\n";
        assert_eq!(
            restore_paths(t),
            vec!["/etc/iptables.up.rules", "/etc/ip6tables.rules"]
        );
        assert_eq!(
            restore_paths("#!/bin/sh\n/sbin/iptables-restore </etc/firewall.v4 || true\n"),
            vec!["/etc/firewall.v4"]
        );
    }
}
