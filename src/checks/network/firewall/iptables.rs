//! iptables-save format (iptables-persistent's rules.v4/v6, ufw's user rules) parsed into chains.

use super::*;

/// Split a line like a shell (double/single quotes, backslash escapes).
pub fn shell_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct IptParse {
    pub chains: Chains,
    /// Lines that could not be understood: (line, text, why).
    pub errors: Vec<(usize, String, String)>,
}

/// Parse the `*filter` table of an iptables-save file (also ufw's user.rules).
pub fn parse_iptables_save(text: &str, probe: &Probe) -> IptParse {
    let mut p = IptParse::default();
    let mut table = String::from("filter");
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        if table != "filter" {
            continue;
        }
        if let Some(def) = line.strip_prefix(':') {
            let mut w = def.split_whitespace();
            let name = w.next().unwrap_or("").to_string();
            let pol = w.next().unwrap_or("-");
            let c = p.chains.entry(name).or_default();
            if pol != "-" {
                c.policy = Some(pol.to_string());
                c.policy_line = n;
                c.policy_text = raw.trim_end_matches('\r').to_string();
            }
            continue;
        }
        // `iptables-save -c` prefixes counters: [12:345] -A INPUT ...
        let body = if line.starts_with('[') {
            line.split_once(']').map(|x| x.1.trim()).unwrap_or(line)
        } else {
            line
        };
        let words = shell_split(body);
        match parse_ipt_rule(&words, probe) {
            Ok(Some((chain, cond, target, rate))) => {
                p.chains.entry(chain).or_default().rules.push(Rule {
                    line: n,
                    text: raw.trim_end_matches('\r').to_string(),
                    cond,
                    target,
                    rate_limited: rate,
                });
            }
            Ok(None) => {}
            Err(e) => p
                .errors
                .push((n, raw.trim_end_matches('\r').to_string(), e)),
        }
    }
    p
}

type ParsedRule = (String, Cond, Target, bool);

fn parse_ipt_rule(w: &[String], probe: &Probe) -> std::result::Result<Option<ParsedRule>, String> {
    let mut chain = None;
    let mut cond = Cond::Always;
    let mut target = Target::Continue;
    let mut rate = false;
    let mut neg = false;
    let mut i = 0;
    let val = |i: usize| -> std::result::Result<&str, String> {
        w.get(i + 1)
            .map(|s| s.as_str())
            .ok_or_else(|| format!("{} needs a value", w[i]))
    };
    while i < w.len() {
        let opt = w[i].as_str();
        if opt == "!" {
            neg = true;
            i += 1;
            continue;
        }
        // Old syntax: `-s ! 10.0.0.0/8`.
        let mut take = |i: &mut usize| -> std::result::Result<String, String> {
            let mut v = val(*i)?.to_string();
            if v == "!" {
                neg = !neg;
                *i += 1;
                v = val(*i)?.to_string();
            }
            *i += 2;
            Ok(v)
        };
        let c = match opt {
            "-A" | "--append" | "-I" | "--insert" => {
                chain = Some(take(&mut i)?);
                // `-I CHAIN N`
                if opt.starts_with("-I") || opt == "--insert" {
                    if let Some(n) = w.get(i) {
                        if n.parse::<u32>().is_ok() {
                            i += 1;
                        }
                    }
                }
                continue;
            }
            "-p" | "--protocol" => {
                let v = take(&mut i)?.to_ascii_lowercase();
                let m = matches!(v.as_str(), "tcp" | "6" | "all" | "0");
                Some(if m { Cond::Always } else { Cond::Never })
            }
            "-s" | "--source" | "--src" => Some(addr_cond(&take(&mut i)?, "from")),
            "-d" | "--destination" | "--dst" => Some(addr_cond(&take(&mut i)?, "to")),
            "--src-range" => Some(Cond::Maybe(format!("from {}", take(&mut i)?))),
            "--dst-range" => Some(Cond::Maybe(format!("to {}", take(&mut i)?))),
            "--mac-source" => Some(Cond::Maybe(format!("from MAC {}", take(&mut i)?))),
            "-i" | "--in-interface" => Some(probe.iface(&take(&mut i)?)),
            "-o" | "--out-interface" => {
                take(&mut i)?;
                None
            }
            "-m" | "--match" => {
                let m = take(&mut i)?;
                if matches!(m.as_str(), "recent" | "limit" | "hashlimit" | "connlimit") {
                    rate = true;
                }
                None
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" | "--ports" => {
                let v = take(&mut i)?;
                Some(if probe.port_in(&v) {
                    Cond::Always
                } else {
                    Cond::Never
                })
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                // A client's source port is ephemeral: a specific source port never matches.
                take(&mut i)?;
                Some(Cond::Never)
            }
            "--state" | "--ctstate" => {
                let v = take(&mut i)?.to_ascii_uppercase();
                Some(if v.split(',').any(|s| s == "NEW") {
                    Cond::Always
                } else {
                    Cond::Never
                })
            }
            "--syn" => {
                i += 1;
                Some(Cond::Always)
            }
            "--tcp-flags" => {
                i += 3;
                Some(Cond::Always)
            }
            "--icmp-type" | "--icmpv6-type" => {
                take(&mut i)?;
                Some(Cond::Never)
            }
            "--match-set" => {
                let set = take(&mut i)?;
                let dir = w.get(i).cloned().unwrap_or_default();
                i += 1;
                Some(if dir.starts_with("src") {
                    Cond::Maybe(format!("from ipset {set}"))
                } else {
                    Cond::Maybe(format!("to ipset {set}"))
                })
            }
            "--dst-type" => {
                let v = take(&mut i)?;
                Some(if v == "LOCAL" {
                    Cond::Always
                } else {
                    Cond::Never
                })
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let t = take(&mut i)?;
                target = match t.as_str() {
                    "ACCEPT" => Target::Accept,
                    "DROP" | "REJECT" | "TARPIT" => Target::Drop(t),
                    "RETURN" => Target::Return,
                    "LOG" | "NFLOG" | "ULOG" | "MARK" | "CONNMARK" | "TRACE" | "NOTRACK" | "CT"
                    | "AUDIT" | "SET" | "CLASSIFY" | "TCPMSS" | "DSCP" | "TOS" => Target::Continue,
                    _ if opt.starts_with("-g") || opt == "--goto" => Target::Goto(t),
                    _ => Target::Jump(t),
                };
                None
            }
            "-c" | "--set-counters" => {
                i += 3;
                None
            }
            o if o.starts_with('-') => {
                // Options of modules or targets whose meaning does not change the verdict for a new SSH
                // connection (--comment, --log-prefix, --reject-with, --seconds, --hitcount, --set, ...).
                i += 1;
                if let Some(nv) = w.get(i) {
                    if !nv.starts_with('-') || nv.parse::<i64>().is_ok() {
                        i += 1;
                    }
                }
                None
            }
            other => return Err(format!("unexpected word `{other}`")),
        };
        if let Some(c) = c {
            cond = cond.and(c.negate_if(neg));
        }
        neg = false;
    }
    match chain {
        Some(c) => Ok(Some((c, cond, target, rate))),
        None if w.is_empty() => Ok(None),
        None => Err("not a rule (no -A CHAIN)".into()),
    }
}

// ---------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::super::tests::probe;
    use super::*;

    const RULES_OLD_NET: &str = "# Generated by iptables-save v1.4.21 on Tue Mar  3 10:00:00 2015
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [12:1234]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 10.1.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -m comment --comment \"web \\\"public\\\"\" -j ACCEPT
COMMIT
# Completed on Tue Mar  3 10:00:00 2015
";

    #[test]
    fn iptables_restricted_to_old_network() {
        let p = parse_iptables_save(RULES_OLD_NET, &probe());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        match evaluate(&p.chains, "INPUT", None) {
            Reach::Restricted { accepts, drop } => {
                assert_eq!(accepts.len(), 1);
                assert_eq!(accepts[0].0, 8);
                assert_eq!(accepts[0].2, "from 10.1.2.0/24");
                assert_eq!(drop.0, 3);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn iptables_open_and_blocked() {
        let open = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            evaluate(&parse_iptables_save(open, &probe()).chains, "INPUT", None),
            Reach::Open
        );
        let range = "*filter\r\n:INPUT DROP [0:0]\r\n-A INPUT -p tcp -m tcp --dport 1:1024 -m state --state NEW -j ACCEPT\r\nCOMMIT\r\n";
        assert_eq!(
            evaluate(&parse_iptables_save(range, &probe()).chains, "INPUT", None),
            Reach::Open
        );
        let rej = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 192.168.0.0/16 -p tcp --dport ssh -j ACCEPT\n-A INPUT -p tcp --dport 22 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n";
        match evaluate(&parse_iptables_save(rej, &probe()).chains, "INPUT", None) {
            Reach::Restricted { drop, .. } => assert_eq!(drop.0, 4),
            r => panic!("{r:?}"),
        }
        let blocked = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 80 -j ACCEPT\n-A INPUT -p tcp ! --dport 22 -j ACCEPT\nCOMMIT\n";
        assert!(matches!(
            evaluate(
                &parse_iptables_save(blocked, &probe()).chains,
                "INPUT",
                None
            ),
            Reach::Blocked { drop: (2, _) }
        ));
        // Loopback-only and established-only accepts do not count.
        let lo = "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\nCOMMIT\n";
        assert!(matches!(
            evaluate(&parse_iptables_save(lo, &probe()).chains, "INPUT", None),
            Reach::Blocked { .. }
        ));
        // Other tables are ignored; a policy ACCEPT with no rules is open.
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(
            evaluate(&parse_iptables_save(nat, &probe()).chains, "INPUT", None),
            Reach::Open
        );
    }

    #[test]
    fn iptables_user_chains_and_garbage() {
        let t = "*filter\n:INPUT DROP [0:0]\n:ssh-in - [0:0]\nthis is garbage\n[5:300] -A INPUT -p tcp --dport 22 -j ssh-in\n-A ssh-in -s 10.0.0.0/8 -j ACCEPT\n-A ssh-in -j RETURN\nCOMMIT\n";
        let p = parse_iptables_save(t, &probe());
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].0, 4);
        match evaluate(&p.chains, "INPUT", None) {
            Reach::Restricted { accepts, .. } => assert_eq!(accepts[0].2, "from 10.0.0.0/8"),
            r => panic!("{r:?}"),
        }
        let t2 = "*filter\n:INPUT DROP [0:0]\n:ssh-in - [0:0]\n-A INPUT -p tcp --dport 22 -j ssh-in\n-A ssh-in -m recent --update --seconds 60 --hitcount 4 -j DROP\n-A ssh-in -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            evaluate(&parse_iptables_save(t2, &probe()).chains, "INPUT", None),
            Reach::Open
        );
        // Old negation syntax and interface matching.
        let t3 = "*filter\n:INPUT DROP [0:0]\n-A INPUT -s ! 10.0.0.0/8 -i eth0 -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            evaluate(&parse_iptables_save(t3, &probe()).chains, "INPUT", None),
            Reach::Open
        );
        let t4 =
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -i ens192 -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        assert!(matches!(
            evaluate(&parse_iptables_save(t4, &probe()).chains, "INPUT", None),
            Reach::Restricted { .. }
        ));
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split(r#"-A INPUT -m comment --comment "a \"b\" c" -j ACCEPT"#),
            vec![
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "ACCEPT"
            ]
        );
    }
}
