//! Checks: firewall rules and sshd settings that would lock SSH out of the imported instance.
//!
//! The firewall evaluators answer one question: is a NEW TCP connection to the SSH port, from an arbitrary
//! (unknown) client address, to the instance's new (unknown) address, accepted? Each rule's match is
//! evaluated three-valued: it always matches such a packet, never does, or matches only under a condition
//! that depends on addresses we cannot know (`from 10.1.2.0/24`, `to 10.1.2.5`, `on interface ens192`).
//! An accept that is only conditional is what a firewall "restricted to the old network" looks like.

use crate::checks::cloud_init::ORDER_SYSTEMCTL;
use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use crate::config::NamingPolicy;
use anyhow::Result;
use std::collections::BTreeMap;

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "network.firewall-ssh",
            "the firewall lets SSH in from any address",
            Network,
            Blocker,
            false,
            check_firewall
        ),
        check!(
            "network.sshd",
            "sshd is installed, enabled and listens on every address",
            Network,
            Blocker,
            true,
            check_sshd
        ),
    ]
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

// ---------------------------------------------------------------------------------------------------------
// iptables-save format
// ---------------------------------------------------------------------------------------------------------

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
// nftables
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    End,
}

fn nft_tokens(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<(usize, Tok)>, line: usize| {
        if !cur.is_empty() {
            out.push((line, Tok::Word(std::mem::take(cur))));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                flush(&mut cur, &mut out, line);
                line += 1;
            }
            '\n' => {
                flush(&mut cur, &mut out, line);
                out.push((line, Tok::End));
                line += 1;
            }
            ';' => {
                flush(&mut cur, &mut out, line);
                out.push((line, Tok::End));
            }
            '{' => {
                flush(&mut cur, &mut out, line);
                out.push((line, Tok::Open));
            }
            '}' => {
                flush(&mut cur, &mut out, line);
                out.push((line, Tok::Close));
            }
            '#' if cur.is_empty() => {
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '"' => {
                flush(&mut cur, &mut out, line);
                let mut s = String::new();
                for n in chars.by_ref() {
                    if n == '"' {
                        break;
                    }
                    if n == '\n' {
                        line += 1;
                    }
                    s.push(n);
                }
                out.push((line, Tok::Str(s)));
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out, line),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out, line);
    out
}

/// One nftables base chain hooked on input.
#[derive(Debug, Clone, Default)]
pub struct NftRuleset {
    /// (family, table, chain) -> chain
    pub chains: BTreeMap<(String, String, String), Chain>,
    /// Base chains on the input hook: (family, table, chain).
    pub input_chains: Vec<(String, String, String)>,
    pub errors: Vec<(usize, String, String)>,
}

/// A rule's tokens with anonymous sets folded into one element list.
#[derive(Debug, Clone)]
enum RTok {
    W(String),
    S(String),
    Set(Vec<String>),
}

pub fn parse_nft(text: &str, probe: &Probe) -> NftRuleset {
    let toks = nft_tokens(text);
    let lines: Vec<&str> = text.lines().collect();
    let line_text = |n: usize| {
        lines
            .get(n.wrapping_sub(1))
            .unwrap_or(&"")
            .trim_end_matches('\r')
            .to_string()
    };
    let mut rs = NftRuleset::default();
    let mut defines: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;

    // Collect one statement: words until End at depth 0; `{...}` becomes a Set (or a block when `block`).
    fn statement(toks: &[(usize, Tok)], i: &mut usize) -> (usize, Vec<RTok>, bool) {
        let mut out = Vec::new();
        let start = toks.get(*i).map(|t| t.0).unwrap_or(0);
        while *i < toks.len() {
            let (_, t) = &toks[*i];
            match t {
                Tok::End => {
                    *i += 1;
                    if out.is_empty() {
                        continue;
                    }
                    return (start, out, false);
                }
                Tok::Close => return (start, out, false),
                Tok::Open => return (start, out, true),
                Tok::Word(w) => out.push(RTok::W(w.clone())),
                Tok::Str(s) => out.push(RTok::S(s.clone())),
            }
            *i += 1;
        }
        (start, out, false)
    }
    fn set_elems(toks: &[(usize, Tok)], i: &mut usize) -> Vec<String> {
        // at Open
        *i += 1;
        let mut v = Vec::new();
        let mut depth = 1;
        while *i < toks.len() && depth > 0 {
            match &toks[*i].1 {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                Tok::Word(w) => {
                    v.extend(w.split(',').filter(|s| !s.is_empty()).map(str::to_string))
                }
                Tok::Str(s) => v.push(s.clone()),
                Tok::End => {}
            }
            *i += 1;
        }
        v
    }
    fn skip_block(toks: &[(usize, Tok)], i: &mut usize) {
        set_elems(toks, i);
    }
    // A rule inside a chain: statement words, with `{}` sets folded in.
    fn rule(toks: &[(usize, Tok)], i: &mut usize) -> (usize, Vec<RTok>) {
        let mut out = Vec::new();
        let start = toks.get(*i).map(|t| t.0).unwrap_or(0);
        while *i < toks.len() {
            match &toks[*i].1 {
                Tok::End => {
                    *i += 1;
                    if !out.is_empty() {
                        break;
                    }
                    continue;
                }
                Tok::Close => break,
                Tok::Open => {
                    out.push(RTok::Set(set_elems(toks, i)));
                    continue;
                }
                Tok::Word(w) => out.push(RTok::W(w.clone())),
                Tok::Str(s) => out.push(RTok::S(s.clone())),
            }
            *i += 1;
        }
        (start, out)
    }

    let subst = |w: &RTok, defines: &BTreeMap<String, String>| -> RTok {
        match w {
            RTok::W(s) if s.starts_with('$') => match defines.get(&s[1..]) {
                Some(v) => {
                    let v = v.trim();
                    if let Some(inner) = v.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                        RTok::Set(
                            inner
                                .split([',', ' '])
                                .filter(|x| !x.is_empty())
                                .map(str::to_string)
                                .collect(),
                        )
                    } else {
                        RTok::W(v.to_string())
                    }
                }
                None => w.clone(),
            },
            other => other.clone(),
        }
    };

    let add_rule = |rs: &mut NftRuleset,
                    key: (String, String, String),
                    line: usize,
                    words: Vec<RTok>,
                    front: bool,
                    defines: &BTreeMap<String, String>| {
        let words: Vec<RTok> = words.iter().map(|w| subst(w, defines)).collect();
        // Chain properties.
        let first = match words.first() {
            Some(RTok::W(w)) => w.as_str(),
            _ => "",
        };
        let c = rs.chains.entry(key.clone()).or_default();
        if first == "type" {
            let hook = words
                .iter()
                .position(|w| matches!(w, RTok::W(x) if x == "hook"))
                .and_then(|p| words.get(p + 1));
            if matches!(hook, Some(RTok::W(h)) if h == "input") && !rs.input_chains.contains(&key) {
                if c.policy.is_none() {
                    c.policy = Some("accept".into());
                    c.policy_line = line;
                    c.policy_text = line_text(line);
                }
                rs.input_chains.push(key);
            }
            return;
        }
        if first == "policy" {
            if let Some(RTok::W(p)) = words.get(1) {
                c.policy = Some(p.trim_end_matches(';').to_string());
                c.policy_line = line;
                c.policy_text = line_text(line);
            }
            return;
        }
        if matches!(first, "comment" | "devices" | "flags") && words.len() <= 3 {
            return;
        }
        let (cond, target, rate) = nft_rule(&words, probe);
        let r = Rule {
            line,
            text: line_text(line),
            cond,
            target,
            rate_limited: rate,
        };
        if front {
            c.rules.insert(0, r);
        } else {
            c.rules.push(r);
        }
    };

    while i < toks.len() {
        if toks[i].1 == Tok::Close {
            let l = toks[i].0;
            rs.errors.push((l, line_text(l), "unbalanced `}`".into()));
            i += 1;
            continue;
        }
        let before = i;
        let (line, words, opens) = statement(&toks, &mut i);
        let w: Vec<String> = words
            .iter()
            .map(|t| match t {
                RTok::W(s) | RTok::S(s) => s.clone(),
                RTok::Set(_) => String::new(),
            })
            .collect();
        let head = w.first().map(String::as_str).unwrap_or("");
        match head {
            "define" | "redefine" => {
                if let Some(pos) = w.iter().position(|x| x == "=") {
                    let name = w.get(1).cloned().unwrap_or_default();
                    let mut val = w[pos + 1..].join(" ");
                    if opens {
                        val = format!("{{{}}}", set_elems(&toks, &mut i).join(","));
                    }
                    defines.insert(name, val);
                } else if opens {
                    skip_block(&toks, &mut i);
                }
            }
            "table" | "add" | "create" | "insert"
                if w.get(1).map(String::as_str) == Some("table") || head == "table" =>
            {
                let rest = if head == "table" { &w[1..] } else { &w[2..] };
                let (fam, name) = match rest.len() {
                    0 => {
                        rs.errors
                            .push((line, line_text(line), "table without a name".into()));
                        if opens {
                            skip_block(&toks, &mut i);
                        }
                        continue;
                    }
                    1 => ("ip".to_string(), rest[0].clone()),
                    _ => (rest[0].clone(), rest[1].clone()),
                };
                if !opens {
                    continue;
                }
                i += 1; // Open
                        // Table body.
                loop {
                    if i >= toks.len() {
                        break;
                    }
                    if toks[i].1 == Tok::Close {
                        i += 1;
                        break;
                    }
                    let (l2, ws, op2) = statement(&toks, &mut i);
                    let kw = match ws.first() {
                        Some(RTok::W(x)) => x.clone(),
                        _ => String::new(),
                    };
                    if kw == "chain" && op2 {
                        let cname = match ws.get(1) {
                            Some(RTok::W(x)) | Some(RTok::S(x)) => x.clone(),
                            _ => String::new(),
                        };
                        i += 1; // Open
                        let key = (fam.clone(), name.clone(), cname);
                        rs.chains.entry(key.clone()).or_default();
                        loop {
                            if i >= toks.len() {
                                break;
                            }
                            if toks[i].1 == Tok::Close {
                                i += 1;
                                break;
                            }
                            let (l3, rw) = rule(&toks, &mut i);
                            if !rw.is_empty() {
                                add_rule(&mut rs, key.clone(), l3, rw, false, &defines);
                            }
                        }
                    } else if op2 {
                        skip_block(&toks, &mut i);
                    } else if kw == "chain" {
                        // `chain NAME` without a body inside a table: declared, empty.
                        let _ = l2;
                    }
                }
            }
            "add" | "create" | "insert" if w.get(1).map(String::as_str) == Some("chain") => {
                // add chain [family] table chain { type filter hook input priority 0; policy drop; }
                let rest = &w[2..];
                let (fam, table, chain) = match rest.len() {
                    2 => ("ip".to_string(), rest[0].clone(), rest[1].clone()),
                    n if n >= 3 => (rest[0].clone(), rest[1].clone(), rest[2].clone()),
                    _ => {
                        rs.errors
                            .push((line, line_text(line), "chain without a name".into()));
                        continue;
                    }
                };
                let key = (fam, table, chain);
                rs.chains.entry(key.clone()).or_default();
                if opens {
                    i += 1;
                    loop {
                        if i >= toks.len() {
                            break;
                        }
                        if toks[i].1 == Tok::Close {
                            i += 1;
                            break;
                        }
                        let (l3, rw) = rule(&toks, &mut i);
                        if !rw.is_empty() {
                            add_rule(&mut rs, key.clone(), l3, rw, false, &defines);
                        }
                    }
                }
            }
            "add" | "insert" if w.get(1).map(String::as_str) == Some("rule") => {
                // add rule [family] table chain STATEMENTS (the family is optional: ip by default).
                let fams = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
                let (fam, table, chain, skip) =
                    if w.get(2).is_some_and(|f| fams.contains(&f.as_str())) {
                        (
                            w[2].clone(),
                            w.get(3).cloned().unwrap_or_default(),
                            w.get(4).cloned().unwrap_or_default(),
                            5,
                        )
                    } else {
                        (
                            "ip".to_string(),
                            w.get(2).cloned().unwrap_or_default(),
                            w.get(3).cloned().unwrap_or_default(),
                            4,
                        )
                    };
                let mut rw: Vec<RTok> = words.iter().skip(skip).cloned().collect();
                if opens {
                    rw.push(RTok::Set(set_elems(&toks, &mut i)));
                    // The rest of the statement after the set.
                    let (_, more) = rule(&toks, &mut i);
                    rw.extend(more);
                }
                add_rule(
                    &mut rs,
                    (fam, table, chain),
                    line,
                    rw,
                    head == "insert",
                    &defines,
                );
            }
            "flush" | "include" | "delete" | "destroy" | "list" | "" => {
                if opens {
                    skip_block(&toks, &mut i);
                }
                if head == "flush" && w.get(1).map(String::as_str) == Some("ruleset") {
                    rs = NftRuleset::default();
                }
            }
            _ => {
                if opens {
                    skip_block(&toks, &mut i);
                }
                if toks.get(i).map(|t| &t.1) == Some(&Tok::Close) {
                    i += 1;
                }
                rs.errors
                    .push((line, line_text(line), format!("unknown statement `{head}`")));
            }
        }
        if i == before {
            // Never loop on input the parser does not understand.
            i += 1;
        }
    }
    rs
}

fn rt_values(t: Option<&RTok>) -> Vec<String> {
    match t {
        Some(RTok::W(w)) | Some(RTok::S(w)) => w.split(',').map(str::to_string).collect(),
        Some(RTok::Set(v)) => v.clone(),
        None => vec![],
    }
}

/// Evaluate one nft rule's match and verdict for the probe (IPv4).
fn nft_rule(words: &[RTok], probe: &Probe) -> (Cond, Target, bool) {
    let mut cond = Cond::Always;
    let mut target = Target::Continue;
    let mut rate = false;
    let w = |k: usize| match words.get(k) {
        Some(RTok::W(s)) => s.as_str(),
        _ => "",
    };
    let mut i = 0;
    while i < words.len() {
        let kw = w(i);
        // Operator after a selector: returns (negated, index of the value).
        let op = |j: usize| -> (bool, usize) {
            match w(j) {
                "!=" | "ne" => (true, j + 1),
                "==" | "eq" => (false, j + 1),
                _ => (false, j),
            }
        };
        let mut add = |c: Cond| cond = std::mem::replace(&mut cond, Cond::Always).and(c);
        match (kw, w(i + 1)) {
            ("iif" | "iifname", _) | ("meta", "iif" | "iifname") => {
                let s = if kw == "meta" { i + 2 } else { i + 1 };
                let (neg, v) = op(s);
                let vals = rt_values(words.get(v));
                let c = vals
                    .iter()
                    .map(|n| probe.iface(n))
                    .fold(Cond::Never, |a, b| match (a, b) {
                        (Cond::Always, _) | (_, Cond::Always) => Cond::Always,
                        (Cond::Maybe(x), _) | (_, Cond::Maybe(x)) => Cond::Maybe(x),
                        _ => Cond::Never,
                    });
                add(c.negate_if(neg));
                i = v + 1;
            }
            ("oif" | "oifname", _) => i += 2,
            ("ct", "state") => {
                let (neg, v) = op(i + 2);
                let has_new = rt_values(words.get(v)).iter().any(|s| s == "new");
                add((if has_new { Cond::Always } else { Cond::Never }).negate_if(neg));
                i = v + 1;
            }
            ("tcp" | "th", "dport") => {
                let (neg, v) = op(i + 2);
                let vals = rt_values(words.get(v));
                let m = if w(v).starts_with('@') {
                    Cond::Maybe(format!("ports in set {}", w(v)))
                } else if vals.iter().any(|p| probe.port_in(p)) {
                    Cond::Always
                } else {
                    Cond::Never
                };
                add(m.negate_if(neg));
                i = v + 1;
            }
            ("tcp" | "th", "sport") => {
                let (neg, v) = op(i + 2);
                add(Cond::Never.negate_if(neg));
                i = v + 1;
            }
            ("tcp", "flags") => {
                let (_, v) = op(i + 2);
                i = v + 1;
                if w(i) == "/" || w(i) == "&" {
                    i += 2;
                    if matches!(w(i), "==" | "!=") {
                        i += 2;
                    }
                }
            }
            ("udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6" | "esp" | "ah", _) => {
                add(Cond::Never);
                i += 2;
                let (_, v) = op(i);
                i = v + 1;
            }
            ("meta", "l4proto") | ("ip", "protocol") => {
                let (neg, v) = op(i + 2);
                let tcp = rt_values(words.get(v))
                    .iter()
                    .any(|p| p == "tcp" || p == "6");
                add((if tcp { Cond::Always } else { Cond::Never }).negate_if(neg));
                i = v + 1;
            }
            ("meta", "nfproto") => {
                let (neg, v) = op(i + 2);
                let v4 = rt_values(words.get(v)).iter().any(|p| p == "ipv4");
                add((if v4 { Cond::Always } else { Cond::Never }).negate_if(neg));
                i = v + 1;
            }
            ("meta", "pkttype") => {
                let (neg, v) = op(i + 2);
                let host = rt_values(words.get(v)).iter().any(|p| p == "host");
                add((if host { Cond::Always } else { Cond::Never }).negate_if(neg));
                i = v + 1;
            }
            ("ip", "saddr") | ("ip", "daddr") => {
                let what = if w(i + 1) == "saddr" { "from" } else { "to" };
                let (neg, v) = op(i + 2);
                let vals = rt_values(words.get(v));
                let c = if w(v).starts_with('@') {
                    Cond::Maybe(format!("{what} set {}", w(v)))
                } else {
                    addr_cond(&vals.join(","), what)
                };
                add(c.negate_if(neg));
                i = v + 1;
            }
            ("ip6", _) => {
                // IPv6 header matches never match the (IPv4) probe.
                add(Cond::Never);
                let (_, v) = op(i + 2);
                i = v + 1;
            }
            ("ip", _) => {
                let (_, v) = op(i + 2);
                i = v + 1;
            }
            ("limit", _) | ("ct", "count") => {
                rate = true;
                i += 1;
            }
            ("accept", _) => {
                target = Target::Accept;
                i += 1;
            }
            ("drop", _) | ("reject", _) => {
                target = Target::Drop(kw.to_string());
                i += 1;
            }
            ("return", _) => {
                target = Target::Return;
                i += 1;
            }
            ("jump", c) => {
                target = Target::Jump(c.to_string());
                i += 2;
            }
            ("goto", c) => {
                target = Target::Goto(c.to_string());
                i += 2;
            }
            _ => i += 1,
        }
    }
    (cond, target, rate)
}

// ---------------------------------------------------------------------------------------------------------
// firewalld
// ---------------------------------------------------------------------------------------------------------

fn xml_attr(tag: &str, name: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"\b{name}\s*=\s*["']([^"']*)["']"#)).ok()?;
    re.captures(tag).map(|c| c[1].to_string())
}

/// Evaluate a firewalld zone file for the SSH port: None when SSH is open to everyone.
pub fn firewalld_zone(xml: &str, probe: &Probe) -> Reach {
    let tag_re = regex::Regex::new(r"(?s)<(/?)([a-zA-Z-]+)([^>]*?)(/?)>").unwrap();
    let line_of = |pos: usize| xml[..pos].matches('\n').count() + 1;
    let mut in_rule: Option<(usize, Vec<String>, bool, bool)> = None; // (line, sources, port ok, accept)
    let mut accepts = Vec::new();
    let mut zone_line = (1, String::new());
    for c in tag_re.captures_iter(xml) {
        let whole = c.get(0).unwrap();
        let closing = &c[1] == "/";
        let name = &c[2];
        let attrs = &c[3];
        let line = line_of(whole.start());
        match (name, closing) {
            ("zone", false) => {
                zone_line = (line, whole.as_str().to_string());
                if let Some(t) = xml_attr(attrs, "target") {
                    if t.eq_ignore_ascii_case("ACCEPT") {
                        return Reach::Open;
                    }
                }
            }
            ("rule", false) => in_rule = Some((line, vec![], false, false)),
            ("rule", true) => {
                if let Some((l, src, port, acc)) = in_rule.take() {
                    if port && acc {
                        if src.is_empty() {
                            return Reach::Open;
                        }
                        accepts.push((
                            l,
                            format!("rich rule at line {l}"),
                            format!("from {}", src.join(", ")),
                        ));
                    }
                }
            }
            ("source", false) => {
                if let Some(r) = in_rule.as_mut() {
                    if let Some(a) = xml_attr(attrs, "address").or_else(|| xml_attr(attrs, "ipset"))
                    {
                        if xml_attr(attrs, "invert").as_deref() != Some("true") && !is_any_addr(&a)
                        {
                            r.1.push(a);
                        }
                    }
                }
            }
            ("accept", false) => {
                if let Some(r) = in_rule.as_mut() {
                    r.3 = true;
                }
            }
            ("service", false) | ("port", false) => {
                let ok = if name == "service" {
                    xml_attr(attrs, "name").as_deref() == Some("ssh") && probe.port == 22
                } else {
                    xml_attr(attrs, "protocol").as_deref() != Some("udp")
                        && xml_attr(attrs, "port").is_some_and(|p| probe.port_in(&p))
                };
                match in_rule.as_mut() {
                    Some(r) => r.2 |= ok,
                    None if ok => return Reach::Open,
                    None => {}
                }
            }
            _ => {}
        }
    }
    if accepts.is_empty() {
        Reach::Blocked { drop: zone_line }
    } else {
        Reach::Restricted {
            accepts,
            drop: zone_line,
        }
    }
}

/// firewalld's shipped zones that allow ssh.
fn builtin_zone_allows_ssh(zone: &str) -> bool {
    matches!(
        zone,
        "public"
            | "external"
            | "dmz"
            | "work"
            | "home"
            | "internal"
            | "trusted"
            | "FedoraServer"
            | "FedoraWorkstation"
    )
}

// ---------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------

fn unit_enabled(ctx: &Ctx, units: &[&str]) -> bool {
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

// ---------------------------------------------------------------------------------------------------------
// sshd
// ---------------------------------------------------------------------------------------------------------

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

    fn probe() -> Probe {
        Probe::new(22, NamingPolicy::Eth0)
    }

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
    fn nft_policy_drop() {
        let t = "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tct state established,related accept\n\t\tiif \"lo\" accept\n\t\tip protocol icmp accept\n\t\ttcp dport { 80, 443 } accept\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n\t}\n}\n";
        let rs = parse_nft(t, &probe());
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        assert_eq!(rs.input_chains.len(), 1);
        let k = &rs.input_chains[0];
        let scoped: Chains = rs
            .chains
            .iter()
            .filter(|(kk, _)| kk.1 == k.1)
            .map(|(kk, v)| (kk.2.clone(), v.clone()))
            .collect();
        match evaluate(&scoped, "input", None) {
            Reach::Blocked { drop } => assert_eq!(drop.0, 7),
            r => panic!("{r:?}"),
        }
    }

    fn nft_reach(t: &str) -> Reach {
        let rs = parse_nft(t, &probe());
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        let k = rs.input_chains.first().expect("an input chain").clone();
        let scoped: Chains = rs
            .chains
            .iter()
            .filter(|(kk, _)| kk.0 == k.0 && kk.1 == k.1)
            .map(|(kk, v)| (kk.2.clone(), v.clone()))
            .collect();
        evaluate(&scoped, &k.2, None)
    }

    #[test]
    fn nft_variants() {
        // Debian's default: policy accept.
        assert_eq!(
            nft_reach("table inet filter {\n  chain input {\n    type filter hook input priority filter;\n  }\n}\n"),
            Reach::Open
        );
        // saddr-restricted accept.
        let r = nft_reach("define mgmt = 10.1.2.0/24\ntable ip filter {\n chain input { type filter hook input priority 0; policy drop;\n  ip saddr $mgmt tcp dport ssh counter accept\n }\n}\n");
        match r {
            Reach::Restricted { accepts, .. } => assert_eq!(accepts[0].2, "from 10.1.2.0/24"),
            r => panic!("{r:?}"),
        }
        // Multi-line set and a jump.
        let r = nft_reach("table inet fw {\n chain ssh { tcp dport 22 accept }\n chain input {\n  type filter hook input priority 0\n  policy drop\n  tcp dport {\n   80,\n   443\n  } accept\n  meta l4proto tcp jump ssh\n }\n}\n");
        assert_eq!(r, Reach::Open);
        // Command style.
        let r = nft_reach("add table inet filter\nadd chain inet filter input { type filter hook input priority 0 ; policy drop ; }\nadd rule inet filter input tcp dport 22 ip saddr { 192.168.1.0/24, 10.0.0.0/8 } accept\n");
        assert!(matches!(r, Reach::Restricted { .. }), "{r:?}");
        // Explicit drop after a restricted accept, with comment strings.
        let r = nft_reach("table inet f {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 22 ip saddr 10.0.0.0/8 accept comment \"mgmt accept\"\n  tcp dport 22 drop\n }\n}\n");
        match r {
            Reach::Restricted { drop, .. } => assert_eq!(drop.0, 5),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn firewalld_zones() {
        let public = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <service name=\"dhcpv6-client\"/>\n</zone>\n";
        assert_eq!(firewalld_zone(public, &probe()), Reach::Open);
        let rich = "<?xml version=\"1.0\"?>\n<zone>\n  <service name=\"http\"/>\n  <rule family=\"ipv4\">\n    <source address=\"10.1.2.0/24\"/>\n    <service name=\"ssh\"/>\n    <accept/>\n  </rule>\n</zone>\n";
        match firewalld_zone(rich, &probe()) {
            Reach::Restricted { accepts, .. } => assert_eq!(accepts[0].2, "from 10.1.2.0/24"),
            r => panic!("{r:?}"),
        }
        let drop = "<zone target=\"DROP\">\n</zone>\n";
        assert!(matches!(
            firewalld_zone(drop, &probe()),
            Reach::Blocked { .. }
        ));
        assert_eq!(
            firewalld_zone("<zone target=\"ACCEPT\"/>", &probe()),
            Reach::Open
        );
        assert_eq!(
            firewalld_zone(
                "<zone><port protocol=\"tcp\" port=\"20-30\"/></zone>",
                &probe()
            ),
            Reach::Open
        );
    }

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

    #[test]
    fn nft_garbage_terminates() {
        for t in [
            "table inet x {\n chain input { type filter hook input priority 0; policy drop;\n  tcp dport { 22, \n}\n}}}}\n{{{ add rule\nadd rule\ninsert rule inet\n",
            "}}}}",
            "{",
            "table",
            "table inet t { chain c {",
            "add chain inet t input { type filter hook input priority 0; policy drop;",
            "define x = { 1, 2\ntable ip t { set s { type ipv4_addr; elements = { 1.2.3.4 } } }",
        ] {
            let _ = parse_nft(t, &probe());
        }
        let rs = parse_nft(
            "}\ntable inet t { chain input { type filter hook input priority 0; policy drop; } }\n",
            &probe(),
        );
        assert_eq!(rs.errors.len(), 1);
        assert_eq!(rs.input_chains.len(), 1);
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
