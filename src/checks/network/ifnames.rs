//! `net.ifnames=0 biosdevname=0` on the kernel command line that the sourced GRUB defaults build
//! (the virtio NIC is then `eth0`).

use super::*;

pub const DEFAULT_GRUB: &str = "/etc/default/grub";
pub(super) const IFNAMES_WORDS: &[(&str, &str)] = &[("net.ifnames", "0"), ("biosdevname", "0")];

pub(super) fn grub_assignment(line: &str, var: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").unwrap_or(t);
    t.strip_prefix(var).is_some_and(|r| r.starts_with('='))
}

/// Does any GRUB_CMDLINE_LINUX / _DEFAULT assignment already carry `net.ifnames=0`?
pub fn grub_has_ifnames0(content: &str) -> bool {
    content.lines().any(|l| {
        (grub_assignment(l, "GRUB_CMDLINE_LINUX")
            || grub_assignment(l, "GRUB_CMDLINE_LINUX_DEFAULT"))
            && l.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=')
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "net.ifnames" && w[1] == "0")
    })
}

/// Does the kernel command line grub-mkconfig builds from these default files (sourced in order, as
/// `GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT`) end up with `net.ifnames=0` (the last `net.ifnames=`
/// wins)? A later assignment (e.g. Ubuntu's grub.d/50-cloudimg-settings.cfg setting
/// GRUB_CMDLINE_LINUX_DEFAULT) replaces what an earlier file set.
pub fn defaults_ifnames0(files: &[(String, String)]) -> bool {
    let (_, env) = crate::checks::boot::grub::parse_defaults(files);
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    format!(
        "{} {}",
        get("GRUB_CMDLINE_LINUX"),
        get("GRUB_CMDLINE_LINUX_DEFAULT")
    )
    .split_whitespace()
    .filter_map(|w| w.strip_prefix("net.ifnames="))
    .next_back()
        == Some("0")
}

/// Add (or correct) `net.ifnames=0 biosdevname=0` in the last `GRUB_CMDLINE_LINUX=` assignment, keeping its
/// quoting; other words and lines are untouched. Appends an assignment when there is none. Idempotent.
pub fn grub_set_ifnames(content: &str) -> Result<String> {
    // An unterminated quote runs to the end of the file in sh: whatever is edited or appended after it is
    // part of that string.
    let parsed = crate::checks::boot::grub::shell::parse(content, &mut Default::default());
    crate::checks::boot::grub::refuse_unterminated(
        &parsed,
        "correct it and add net.ifnames=0 biosdevname=0 by hand",
    )
    .map_err(|e| anyhow::anyhow!("{DEFAULT_GRUB} {e}"))?;
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let idx = lines
        .iter()
        .rposition(|l| grub_assignment(l, "GRUB_CMDLINE_LINUX"));
    let Some(idx) = idx else {
        let mut out = content.to_string();
        crate::checks::boot::grub::push_assignment(
            &mut out,
            "GRUB_CMDLINE_LINUX",
            "net.ifnames=0 biosdevname=0",
        );
        return Ok(out);
    };
    let line = lines[idx];
    let body = line.trim_end_matches('\n').trim_end_matches('\r');
    let eol = &line[body.len()..];
    let eq = body.find('=').unwrap_or(0);
    let (head, val) = body.split_at(eq + 1);
    // Split the value into (open quote, inner, close quote + rest).
    let (open, inner, rest): (&str, String, String) = if let Some(q) =
        val.chars().next().filter(|c| *c == '"' || *c == '\'')
    {
        let Some(end) = val[1..].find(q) else {
            anyhow::bail!(
                "{DEFAULT_GRUB} line {}: GRUB_CMDLINE_LINUX value continues over several lines; add net.ifnames=0 biosdevname=0 by hand",
                idx + 1
            );
        };
        (
            if q == '"' { "\"" } else { "'" },
            val[1..1 + end].to_string(),
            val[1 + end..].to_string(),
        )
    } else {
        let end = val.find(|c: char| c.is_whitespace()).unwrap_or(val.len());
        if val[..end].contains(['"', '\'', '\\', '$', '`']) {
            anyhow::bail!(
                "{DEFAULT_GRUB} line {}: GRUB_CMDLINE_LINUX value uses shell quoting cloudprep does not edit; add net.ifnames=0 biosdevname=0 by hand",
                idx + 1
            );
        }
        ("", val[..end].to_string(), val[end..].to_string())
    };
    let mut words: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
    let mut changed = false;
    for (k, v) in IFNAMES_WORDS {
        let want = format!("{k}={v}");
        let mut found = false;
        for w in words.iter_mut() {
            if w == k || w.starts_with(&format!("{k}=")) {
                found = true;
                if *w != want {
                    *w = want.clone();
                    changed = true;
                }
            }
        }
        if !found {
            words.push(want);
            changed = true;
        }
    }
    if !changed {
        return Ok(content.to_string());
    }
    // Keep the original spacing: append new words to the inner text, replace changed words in place.
    let mut new_inner = inner.clone();
    for (k, v) in IFNAMES_WORDS {
        let want = format!("{k}={v}");
        let toks: Vec<&str> = new_inner.split_whitespace().collect();
        if let Some(old) = toks
            .iter()
            .find(|w| **w == *k || w.starts_with(&format!("{k}=")))
        {
            if *old != want {
                new_inner = ifupdown::replace_word(&new_inner, old, &want);
            }
        } else {
            if !new_inner.trim().is_empty() && !new_inner.ends_with([' ', '\t']) {
                new_inner.push(' ');
            }
            new_inner.push_str(&want);
        }
    }
    let (open, close) = if open.is_empty() {
        ("\"", "\"")
    } else {
        (open, "")
    };
    let rest = if close.is_empty() {
        rest
    } else {
        format!("{close}{rest}")
    };
    let mut out = String::with_capacity(content.len() + 32);
    for (i, l) in lines.iter().enumerate() {
        if i == idx {
            out.push_str(&format!("{head}{open}{new_inner}{rest}{eol}"));
        } else {
            out.push_str(l);
        }
    }
    Ok(out)
}

/// Does udev of this guest rename NICs to predictable names? Debian before 9 (stretch) and Ubuntu before
/// 15.10 kept kernel names by default even where the udev rule exists.
pub(super) fn predictable_capable(ctx: &Ctx) -> bool {
    if let Some(os) = &ctx.facts.os {
        let major: u32 = os
            .version_id
            .split('.')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let old = match os.id.as_str() {
            "debian" => major > 0 && major < 9,
            "ubuntu" => {
                major > 0 && (major < 15 || (major == 15 && os.version_id.as_str() < "15.10"))
            }
            _ => false,
        };
        if old {
            return false;
        }
    }
    let root = ctx.root;
    [
        "/lib/udev/rules.d/80-net-setup-link.rules",
        "/usr/lib/udev/rules.d/80-net-setup-link.rules",
        "/lib/udev/rules.d/80-net-name-slot.rules",
        "/usr/lib/udev/rules.d/80-net-name-slot.rules",
    ]
    .iter()
    .any(|p| root.exists(p))
}

/// Is predictable naming switched off (kernel command line in /etc/default/grub, or the udev rule
/// masked in /etc)?
pub(super) fn ifnames_disabled(root: &Root) -> Result<bool> {
    let mut paths = vec![DEFAULT_GRUB.to_string()];
    paths.extend(root.files_in("/etc/default/grub.d", |n| n.ends_with(".cfg"))?);
    let mut files = Vec::new();
    for f in paths {
        if let Some(t) = root.read_text(&f)? {
            files.push((f, t));
        }
    }
    if defaults_ifnames0(&files) {
        return Ok(true);
    }
    for p in [
        "/etc/udev/rules.d/80-net-setup-link.rules",
        "/etc/udev/rules.d/80-net-name-slot.rules",
    ] {
        if std::fs::symlink_metadata(root.lexical(p)).is_ok() {
            return Ok(true);
        }
    }
    // The default naming policy masked (`ln -s /dev/null /etc/systemd/network/99-default.link`, udev's
    // README.Debian since buster): no .link names the NIC, it keeps its kernel name.
    let link = root.lexical("/etc/systemd/network/99-default.link");
    if let Ok(m) = std::fs::symlink_metadata(&link) {
        let masked = if m.file_type().is_symlink() {
            std::fs::read_link(&link).is_ok_and(|t| t == std::path::Path::new("/dev/null"))
        } else {
            m.is_file() && m.len() == 0
        };
        if masked {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn grub_fix(root: &Root) -> Fix {
    let mut fix = Fix::default();
    if root.exists(DEFAULT_GRUB) {
        fix = fix
            .edit(FileEdit::rewrite(
                DEFAULT_GRUB,
                Validator::ShellVars,
                grub_set_ifnames,
            ))
            .command(PlannedCommand::new(
                Phase::Post,
                order::UPDATE_GRUB,
                &["update-grub"],
                "regenerate grub.cfg with net.ifnames=0 biosdevname=0",
            ));
    }
    fix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_ifnames_quotes_and_idempotence() {
        let t =
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n# end";
        let out = grub_set_ifnames(t).unwrap();
        assert_eq!(out, "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n# end");
        assert_eq!(grub_set_ifnames(&out).unwrap(), out);
        assert!(grub_has_ifnames0(&out));
        let t = "GRUB_CMDLINE_LINUX='console=ttyS0,115200  net.ifnames=1' # keep\r\n";
        let out = grub_set_ifnames(t).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX='console=ttyS0,115200  net.ifnames=0 biosdevname=0' # keep\r\n"
        );
        let out = grub_set_ifnames("GRUB_CMDLINE_LINUX=quiet\n").unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX=\"quiet net.ifnames=0 biosdevname=0\"\n"
        );
        assert_eq!(grub_set_ifnames(&out).unwrap(), out);
        let out = grub_set_ifnames("GRUB_TIMEOUT=5").unwrap();
        assert_eq!(
            out,
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        );
        assert!(grub_set_ifnames("GRUB_CMDLINE_LINUX=\"a\nb\"\n").is_err());
        // After an unterminated quote sh reads everything as one string: refused, not appended into it.
        assert!(grub_set_ifnames("GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"Debian\n").is_err());
        // A dangling continuation on the last line is ended before the appended assignment.
        assert_eq!(
            grub_set_ifnames("GRUB_TIMEOUT=5 \\\n").unwrap(),
            "GRUB_TIMEOUT=5 \\\n\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        );
        // Composes with another rewriter adding its own words.
        let other = |s: &str| {
            s.replace(
                "GRUB_CMDLINE_LINUX=\"",
                "GRUB_CMDLINE_LINUX=\"console=tty0 ",
            )
        };
        let a = grub_set_ifnames(&other("GRUB_CMDLINE_LINUX=\"\"\n")).unwrap();
        assert_eq!(
            a,
            "GRUB_CMDLINE_LINUX=\"console=tty0 net.ifnames=0 biosdevname=0\"\n"
        );
        assert!(!grub_has_ifnames0(
            "#GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"net.ifnames=1\""
        ));
    }

    #[test]
    fn ifnames0_is_what_the_sourced_defaults_end_with() {
        let f = |v: &[(&str, &str)]| {
            defaults_ifnames0(
                &v.iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let grub = "/etc/default/grub";
        let cloudimg = "/etc/default/grub.d/50-cloudimg-settings.cfg";
        assert!(f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        )]));
        assert!(f(&[(
            grub,
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet net.ifnames=0'\n"
        )]));
        assert!(f(&[
            (grub, "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n"),
            (
                cloudimg,
                "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n"
            )
        ]));
        // Ubuntu cloud image: the grub.d file replaces the _DEFAULT that carried net.ifnames=0 (the line-based
        // check saw it in /etc/default/grub and took predictable naming for disabled).
        assert!(!f(&[
            (grub, "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet net.ifnames=0\"\n"),
            (
                cloudimg,
                "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n"
            )
        ]));
        // A later assignment of the same file wins too; the last net.ifnames= word wins.
        assert!(!f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"quiet\"\n"
        )]));
        assert!(!f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"net.ifnames=1\"\n"
        )]));
        assert!(f(&[(grub, "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX quiet\"\n")]));
        assert!(!f(&[(grub, "#GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n")]));
        assert!(!f(&[(grub, "GRUB_CMDLINE_LINUX=\"xnet.ifnames=0\"\n")]));
        assert!(!f(&[]));
    }
}
