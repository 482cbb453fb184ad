//! `/var/lib/dpkg/status`: which packages are installed, and in what state.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `want flag status`, e.g. `install ok installed`.
    pub status: String,
    /// 1-based line of the stanza's `Package:` field.
    pub line: usize,
}

impl Package {
    pub fn is_installed(&self) -> bool {
        self.status.split_whitespace().nth(2) == Some("installed")
    }
    /// Half-installed, unpacked, half-configured, triggers-awaiting/pending, or a reinst-required flag.
    pub fn is_broken(&self) -> bool {
        let mut w = self.status.split_whitespace();
        let (_want, flag, st) = (w.next(), w.next().unwrap_or(""), w.next().unwrap_or(""));
        flag == "reinstreq"
            || matches!(
                st,
                "half-installed"
                    | "unpacked"
                    | "half-configured"
                    | "triggers-awaited"
                    | "triggers-pending"
            )
    }
}

/// Parse the dpkg status file (RFC822-like stanzas, continuation lines start with a space).
pub fn parse_status(text: &str) -> BTreeMap<String, Package> {
    let mut out = BTreeMap::new();
    let mut cur: Option<Package> = None;
    let flush = |cur: &mut Option<Package>, out: &mut BTreeMap<String, Package>| {
        if let Some(p) = cur.take() {
            if !p.name.is_empty() {
                // Multi-arch packages: keep the installed one if several arches are listed.
                match out.get(&p.name) {
                    Some(old) if old.is_installed() && !p.is_installed() => {}
                    _ => {
                        out.insert(p.name.clone(), p);
                    }
                }
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let p = cur.get_or_insert_with(|| Package {
            name: String::new(),
            version: String::new(),
            arch: String::new(),
            status: String::new(),
            line: i + 1,
        });
        match k {
            "Package" => {
                p.name = v.to_string();
                p.line = i + 1;
            }
            "Version" => p.version = v.to_string(),
            "Architecture" => p.arch = v.to_string(),
            "Status" => p.status = v.to_string(),
            _ => {}
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas() {
        let t = "Package: a\nStatus: install ok installed\nVersion: 1\nDescription: x\n more\n\nPackage: b\nStatus: install reinstreq half-installed\n\nPackage: c\nStatus: deinstall ok config-files";
        let m = parse_status(t);
        assert!(m["a"].is_installed());
        assert_eq!(m["a"].version, "1");
        assert!(m["b"].is_broken());
        assert_eq!(m["b"].line, 7);
        assert!(!m["c"].is_installed());
        assert!(!m["c"].is_broken());
    }
}
