//! The fleet waiver file (TOML): check ids waived for the whole wave, or for the hosts matching a glob.
//!
//! ```toml
//! # every host
//! [waivers]
//! "network.static-address" = "Neutron ports keep the old fixed addresses"
//!
//! # only some hosts (shell-style glob over the inventory host name: `*`, `?`)
//! [[waiver]]
//! check = "fstab.device-names"
//! hosts = "db-*"
//! reason = "the database hosts are rebuilt, not migrated"
//! ```
//!
//! A check id may also be an `area.` prefix (`network.`), as in `--only`/`--skip`.

use anyhow::{bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waivers {
    #[serde(default)]
    waivers: BTreeMap<String, String>,
    #[serde(default)]
    waiver: Vec<Waiver>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    pub check: String,
    #[serde(default)]
    pub hosts: Option<String>,
    pub reason: String,
}

impl Waivers {
    pub fn parse(text: &str) -> Result<Waivers> {
        let w: Waivers = toml::from_str(text)?;
        for (id, reason) in w
            .waivers
            .iter()
            .chain(w.waiver.iter().map(|w| (&w.check, &w.reason)))
        {
            if id.trim().is_empty() {
                bail!("a waiver without a check id");
            }
            if reason.trim().is_empty() {
                bail!("the waiver of {id} gives no reason");
            }
        }
        Ok(w)
    }

    /// The reason `check` is waived on `host`, if it is.
    pub fn reason(&self, host: &str, check: &str) -> Option<&str> {
        let id_matches = |w: &str| w == check || (w.ends_with('.') && check.starts_with(w));
        if let Some((_, r)) = self.waivers.iter().find(|(id, _)| id_matches(id)) {
            return Some(r);
        }
        self.waiver
            .iter()
            .find(|w| id_matches(&w.check) && w.hosts.as_deref().is_none_or(|g| glob(g, host)))
            .map(|w| w.reason.as_str())
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character, everything else literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("web*", "web1"));
        assert!(glob("*", ""));
        assert!(glob("db-?.example.*", "db-1.example.com"));
        assert!(!glob("db-?", "db-12"));
        assert!(glob("*a*b", "xxaxxb"));
        assert!(!glob("*a*b", "xxaxxbc"));
        assert!(!glob("web", "web1"));
    }

    #[test]
    fn reasons_by_id_prefix_and_host() {
        let w = Waivers::parse(
            "[waivers]\n\"network.\" = \"network redone by hand\"\n[[waiver]]\ncheck = \"grub.x\"\nhosts = \"a*\"\nreason = \"r\"\n",
        )
        .unwrap();
        assert_eq!(
            w.reason("h", "network.static"),
            Some("network redone by hand")
        );
        assert_eq!(w.reason("abc", "grub.x"), Some("r"));
        assert_eq!(w.reason("b", "grub.x"), None);
        assert_eq!(w.reason("abc", "grub.y"), None);
    }

    #[test]
    fn bad_waiver_files_are_errors() {
        assert!(
            Waivers::parse("[[waiver]]\ncheck = \"x.y\"\n").is_err(),
            "no reason"
        );
        assert!(Waivers::parse("[[waiver]]\ncheck = \"x.y\"\nreason = \" \"\n").is_err());
        assert!(Waivers::parse("[waiverz]\n").is_err(), "unknown table");
        let e = Waivers::parse("[waivers\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
    }
}
