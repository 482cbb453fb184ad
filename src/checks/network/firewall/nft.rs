//! nftables rulesets (/etc/nftables.conf and what it includes) parsed into chains.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::super::tests::probe;
    use super::*;

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
}
