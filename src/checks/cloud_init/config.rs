//! cloud-init's configuration: YAML parsing and editing helpers over strings, and the merged view of
//! cloud.cfg + cloud.cfg.d (the effective datasource list, the installer's leftovers).

use super::*;

/// Parse one cloud-init config file. An empty file (or only comments) is an empty mapping.
pub fn parse_cfg(text: &str) -> std::result::Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Ok(Value::Mapping(Default::default())),
        Ok(v @ Value::Mapping(_)) => Ok(v),
        Ok(_) => Err("not a YAML mapping (cloud-init ignores it)".into()),
        Err(e) => Err(format!("not valid YAML (cloud-init ignores it): {e}")),
    }
}

pub(super) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.iter().find_map(|(k, val)| match k {
        Value::String(s) if s == key => Some(val),
        _ => None,
    })
}

pub(super) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.iter().find_map(|(k, val)| match k {
        Value::String(s) if s.eq_ignore_ascii_case(key) => Some(val),
        _ => None,
    })
}

pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `datasource_list` a parsed file sets (`None` when it does not set it, or sets it to null).
pub fn datasource_list_of(v: &Value) -> Option<Vec<String>> {
    match get(v, "datasource_list")? {
        Value::Sequence(items) => Some(items.iter().filter_map(scalar_string).collect()),
        Value::String(s) => Some(split_list(s)),
        _ => None,
    }
}

pub(super) fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' ', '\t'])
        .map(|x| x.trim().trim_matches(['[', ']', '"', '\'']))
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// 1-based line of the last top-level `key:` in `text` (plain or quoted key at column 0).
pub fn top_key_line(text: &str, key: &str) -> Option<usize> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        if is_top_key(line, key) {
            found = Some(i + 1);
        }
    }
    found
}

pub(super) fn is_top_key(line: &str, key: &str) -> bool {
    for k in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(rest) = line.strip_prefix(&k) {
            if rest.trim_start_matches([' ', '\t']).starts_with(':') {
                return true;
            }
        }
    }
    false
}

/// Is `line` the start of any top-level key (a new YAML node at column 0)?
pub(super) fn is_any_top_key(line: &str) -> bool {
    let Some(c) = line.chars().next() else {
        return false;
    };
    !(c.is_whitespace() || c == '#' || c == '-' || line.starts_with("..."))
        && (line.contains(':') || line.starts_with("---"))
}

/// Comment out the top-level `key` and its value (indented lines, column-0 `- item` lines of a block list,
/// multi-line flow lists) by prefixing `#`. Every other line stays byte-identical. Idempotent.
pub fn comment_out_top_key(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if is_top_key(body, key) {
            in_key = true;
            out.push('#');
            out.push_str(line);
            continue;
        }
        if in_key {
            if is_any_top_key(body) {
                in_key = false;
            } else if body.trim().is_empty() || body.trim_start().starts_with('#') {
                out.push_str(line);
                continue;
            } else {
                out.push('#');
                out.push_str(line);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// 90_dpkg.cfg exactly as `dpkg-reconfigure cloud-init` writes it.
pub fn render_dpkg_cfg(list: &[String]) -> String {
    format!(
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ {} ]\n",
        list.join(", ")
    )
}

/// Ensure `snippet` (one top-level key block) is in our own 91_cloudprep.cfg. Composable with other snippets
/// and idempotent; refuses to add a second definition of a top-level key someone else wrote there.
pub fn ensure_snippet(content: &str, snippet: &str) -> Result<String> {
    if content.contains(snippet) {
        return Ok(content.to_string());
    }
    let key = snippet.split(':').next().unwrap_or_default();
    if top_key_line(content, key).is_some() {
        bail!("{CLOUDPREP_CFG} already sets `{key}` differently: edit it by hand to contain:\n{snippet}");
    }
    let mut out = if content.trim().is_empty() {
        CLOUDPREP_HEADER.to_string()
    } else {
        let mut c = content.to_string();
        if !c.ends_with('\n') {
            c.push('\n');
        }
        c
    };
    out.push_str(snippet);
    parse_cfg(&out).map_err(|e| anyhow::anyhow!("{CLOUDPREP_CFG} would be invalid: {e}"))?;
    Ok(out)
}

/// Datasources named on a kernel command line (`ci.ds=`, `ci.datasource=`; `ds=nocloud…` selects NoCloud).
pub fn cmdline_datasources(cmdline: &str) -> Option<Vec<String>> {
    let mut found = None;
    for tok in cmdline.split_whitespace() {
        if let Some(v) = tok
            .strip_prefix("ci.ds=")
            .or_else(|| tok.strip_prefix("ci.datasource="))
        {
            found = Some(split_list(v));
        } else if let Some(v) = tok.strip_prefix("ds=") {
            let name = v.split(';').next().unwrap_or("");
            if name.to_ascii_lowercase().starts_with("nocloud") {
                found = Some(vec!["NoCloud".to_string()]);
            }
        }
    }
    found
}

/// Does `effective` contain every datasource of `target` (case-insensitive) and start with the target's
/// first one? ds-identify keeps only the datasources it detects: with OpenStack (or NoCloud, with a stale
/// seed) listed before Ec2, an OpenStack cloud is detected as such and Ec2 is never tried.
pub fn includes_target(effective: &[String], target: &[String]) -> bool {
    let first_ok = match (effective.first(), target.first()) {
        (Some(e), Some(t)) => e.eq_ignore_ascii_case(t),
        (_, None) => true,
        (None, Some(_)) => false,
    };
    first_ok
        && target
            .iter()
            .all(|t| effective.iter().any(|e| e.eq_ignore_ascii_case(t)))
}

/// A cloud.cfg.d file an OS installer (subiquity, curtin, debian-installer) left behind, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub reason: String,
    pub sets_datasource: Option<Vec<String>>,
    pub disables_network: bool,
}

pub fn classify_leftover(name: &str, value: Option<&Value>) -> Option<Leftover> {
    let lname = name.to_ascii_lowercase();
    let disables_network = value
        .and_then(|v| get(v, "network"))
        .and_then(|n| get(n, "config"))
        .and_then(scalar_string)
        .is_some_and(|s| s.eq_ignore_ascii_case("disabled"));
    let sets_datasource = value.and_then(datasource_list_of);
    let reason = if lname == "99-installer.cfg" {
        "written by the Ubuntu installer (subiquity): it pins the installer's own datasource"
    } else if lname.contains("subiquity") {
        "written by the Ubuntu installer (subiquity)"
    } else if lname.contains("curtin")
        && value
            .and_then(|v| get(v, "network"))
            .is_some_and(|n| !n.is_null())
    {
        "written by curtin: it pins the installer's network configuration (the old static addresses and MACs)"
    } else if lname.contains("curtin") {
        "written by curtin (the installer's image writer)"
    } else if lname == "99-disable-network-config.cfg" || disables_network {
        "disables cloud-init's network configuration (`network: {config: disabled}`)"
    } else {
        return None;
    };
    Some(Leftover {
        reason: reason.to_string(),
        sets_datasource,
        disables_network,
    })
}

/// Remove `cloud-init=disabled` from the `GRUB_CMDLINE_LINUX*` assignments of an /etc/default/grub-style
/// file, touching nothing else (other words, quoting, comments, CRLF). Idempotent.
pub fn drop_cmdline_word(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if is_cmdline_assignment(line) {
            out.push_str(&remove_word(line, word));
        } else {
            out.push_str(line);
        }
    }
    out
}

pub(super) fn is_cmdline_assignment(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
    t.starts_with("GRUB_CMDLINE_LINUX")
        && t.split_once('=').is_some_and(|(name, _)| {
            let name = name.trim_end_matches('+');
            name == "GRUB_CMDLINE_LINUX" || name == "GRUB_CMDLINE_LINUX_DEFAULT"
        })
}

/// Positions of `word` in `s` delimited by start/end, whitespace or a quote.
pub(super) fn word_positions(s: &str, word: &str) -> Vec<usize> {
    let delim =
        |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '=');
    let mut v = Vec::new();
    let mut from = 0;
    while let Some(p) = s[from..].find(word) {
        let at = from + p;
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        if delim(before) && (after.is_none_or(|c| c.is_whitespace() || c == '"' || c == '\'')) {
            v.push(at);
        }
        from = at + word.len();
    }
    v
}

pub(super) fn remove_word(line: &str, word: &str) -> String {
    let Some(eq) = line.find('=') else {
        return line.to_string();
    };
    let (head, value) = line.split_at(eq + 1);
    let mut value = value.to_string();
    while let Some(&at) = word_positions(&value, word).first() {
        let end = at + word.len();
        // Drop the spaces before the word; if none (word first), the spaces after it.
        let ws_before = value[..at]
            .chars()
            .rev()
            .take_while(|c| *c == ' ' || *c == '\t')
            .count();
        let (start, stop) = if ws_before > 0 {
            (at - ws_before, end)
        } else {
            let ws_after = value[end..]
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .count();
            (at, end + ws_after)
        };
        value.replace_range(start..stop, "");
    }
    format!("{head}{value}")
}

/// Lines (1-based) of GRUB_CMDLINE_LINUX* assignments containing `word`.
pub fn cmdline_word_lines(text: &str, word: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            is_cmdline_assignment(l)
                && l.split_once('=')
                    .is_some_and(|(_, v)| !word_positions(v, word).is_empty())
        })
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Leading numeric component of a Debian version (`22.4.2-1` → 22, `0.7.6~bzr` → 0, `1:18.3` → 18).
pub fn upstream_major(version: &str) -> Option<u64> {
    let v = version.split_once(':').map(|x| x.1).unwrap_or(version);
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Normalise a locale name the way glibc names its directories (`en_US.UTF-8` → `en_US.utf8`).
pub fn normalize_locale(name: &str) -> String {
    match name.split_once('.') {
        Some((lang, cs)) => {
            let cs: String = cs
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            format!("{lang}.{cs}")
        }
        None => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading the guest
// ---------------------------------------------------------------------------------------------------------

/// One cloud-init config file in evaluation order.
#[derive(Debug, Clone)]
pub struct CfgFile {
    pub path: String,
    pub name: String,
    pub text: String,
    pub value: Option<Value>,
    pub error: Option<String>,
}

/// cloud.cfg then cloud.cfg.d/*.cfg in lexical order. Unreadable/invalid files are kept with their error
/// (cloud-init ignores them).
pub fn load_config(ctx: &Ctx) -> Result<Vec<CfgFile>> {
    let mut paths = vec![CLOUD_CFG.to_string()];
    paths.extend(ctx.root.files_in(CFG_D, |n| n.ends_with(".cfg"))?);
    let mut out = Vec::new();
    for p in paths {
        let name = p.rsplit('/').next().unwrap_or(&p).to_string();
        match ctx.root.read_text(&p) {
            Ok(None) => {}
            Ok(Some(text)) => {
                let (value, error) = match parse_cfg(&text) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                out.push(CfgFile {
                    path: p,
                    name,
                    text,
                    value,
                    error,
                });
            }
            Err(e) => out.push(CfgFile {
                path: p,
                name,
                text: String::new(),
                value: None,
                error: Some(format!("{e:#}")),
            }),
        }
    }
    Ok(out)
}

/// Where the effective datasource_list comes from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub list: Vec<String>,
    pub evidence: Evidence,
}

pub fn effective_datasource(files: &[CfgFile]) -> Option<Effective> {
    let mut eff = None;
    for f in files {
        if let Some(list) = f.value.as_ref().and_then(datasource_list_of) {
            let line = top_key_line(&f.text, "datasource_list").unwrap_or(1);
            let text = f.text.lines().nth(line - 1).unwrap_or("").to_string();
            eff = Some(Effective {
                list,
                evidence: Evidence::line(&f.path, line, &text),
            });
        }
    }
    eff
}

/// The effective value of a nested key path, merged the way cloud-init merges (later files win).
pub fn effective_value<'a>(
    files: &'a [CfgFile],
    path: &[&str],
) -> Option<(&'a CfgFile, &'a Value)> {
    let mut eff = None;
    for f in files {
        let Some(mut v) = f.value.as_ref() else {
            continue;
        };
        let mut ok = true;
        for (i, k) in path.iter().enumerate() {
            // Datasource names are matched case-insensitively by cloud-init's config lookups.
            let next = if i == 0 { get(v, k) } else { get_ci(v, k) };
            match next {
                Some(n) => v = n,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && !v.is_null() {
            eff = Some((f, v));
        }
    }
    eff
}

pub(super) fn is_false_value(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        other => scalar_string(other).is_some_and(|s| {
            matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "no" | "false"
            )
        }),
    }
}

pub(super) fn leftovers_handled_elsewhere(ctx: &Ctx) -> bool {
    let id = "cloud-init.installer-leftovers";
    !(ctx.config.is_skipped(id) || ctx.config.waivers.contains_key(id))
}

pub(super) fn target_list(ctx: &Ctx) -> Vec<String> {
    let t = &ctx.config.cloud.datasource_list;
    if t.is_empty() {
        vec!["Ec2".into(), "None".into()]
    } else {
        t.clone()
    }
}

pub(super) fn wants_ec2(target: &[String]) -> bool {
    target.iter().any(|t| t.eq_ignore_ascii_case("Ec2"))
}

pub(super) fn cloudprep_cfg_edit(snippet: &'static str) -> FileEdit {
    cloudprep_cfg_edit_owned(snippet.to_string())
}

pub(super) fn cloudprep_cfg_edit_owned(snippet: String) -> FileEdit {
    FileEdit::rewrite(CLOUDPREP_CFG, Validator::CloudInit, move |c| {
        ensure_snippet(c, &snippet)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_and_block_lists() {
        let v = parse_cfg("# c\ndatasource_list: [ NoCloud, ConfigDrive ]\n").unwrap();
        assert_eq!(
            datasource_list_of(&v).unwrap(),
            vec!["NoCloud", "ConfigDrive"]
        );
        let v = parse_cfg("datasource_list:\n  - NoCloud\n  - 'None'\nfoo: 1\n").unwrap();
        assert_eq!(datasource_list_of(&v).unwrap(), vec!["NoCloud", "None"]);
        let v = parse_cfg("datasource_list:\n- Ec2\n- None\r\n").unwrap();
        assert_eq!(datasource_list_of(&v).unwrap(), vec!["Ec2", "None"]);
        let v = parse_cfg("datasource_list: Ec2\n").unwrap();
        assert_eq!(datasource_list_of(&v).unwrap(), vec!["Ec2"]);
        let v = parse_cfg("").unwrap();
        assert!(datasource_list_of(&v).is_none());
        let v = parse_cfg("datasource_list:\n").unwrap();
        assert!(datasource_list_of(&v).is_none());
        assert!(parse_cfg("datasource_list: [ NoCloud\n\tbad: :\n").is_err());
        assert!(parse_cfg("- a\n- b\n").is_err());
    }

    #[test]
    fn key_lines() {
        let t = "# datasource_list: [x]\ndatasource:\n  Ec2: {}\ndatasource_list : [a]\n\"datasource_list\": [b]\n";
        assert_eq!(top_key_line(t, "datasource_list"), Some(5));
        assert_eq!(top_key_line(t, "datasource"), Some(2));
        assert_eq!(
            top_key_line("  datasource_list: [a]\n", "datasource_list"),
            None
        );
    }

    #[test]
    fn comment_out_keeps_other_lines() {
        let t = "a: 1\ndatasource_list:\n- NoCloud\n  # keep\n\n- None\ndatasource:\n  None: {}\r\nno_eol: x";
        let out = comment_out_top_key(t, "datasource_list");
        assert_eq!(
            out,
            "a: 1\n#datasource_list:\n#- NoCloud\n  # keep\n\n#- None\ndatasource:\n  None: {}\r\nno_eol: x"
        );
        assert_eq!(comment_out_top_key(&out, "datasource_list"), out);
        let v = parse_cfg(&out).unwrap();
        assert!(datasource_list_of(&v).is_none());
        let t = "datasource_list: [ NoCloud,\n   ConfigDrive ]\nx: 1\n";
        assert_eq!(
            comment_out_top_key(t, "datasource_list"),
            "#datasource_list: [ NoCloud,\n#   ConfigDrive ]\nx: 1\n"
        );
    }

    #[test]
    fn dpkg_cfg_format() {
        let s = render_dpkg_cfg(&["Ec2".into(), "None".into()]);
        assert_eq!(
            s,
            "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n"
        );
        assert_eq!(
            datasource_list_of(&parse_cfg(&s).unwrap()).unwrap(),
            vec!["Ec2", "None"]
        );
    }

    #[test]
    fn snippets_compose() {
        let a = ensure_snippet("", STRICT_ID_SNIPPET).unwrap();
        let b = ensure_snippet(&a, LOCALE_SNIPPET).unwrap();
        assert_eq!(ensure_snippet(&b, STRICT_ID_SNIPPET).unwrap(), b);
        assert_eq!(ensure_snippet(&b, LOCALE_SNIPPET).unwrap(), b);
        let v = parse_cfg(&b).unwrap();
        assert!(is_false_value(get(&v, "locale").unwrap()));
        let s = get(
            get(get(&v, "datasource").unwrap(), "Ec2").unwrap(),
            "strict_id",
        )
        .unwrap();
        assert!(is_false_value(s));
        assert!(ensure_snippet("locale: en_GB.UTF-8", LOCALE_SNIPPET).is_err());
        // No trailing newline in the existing file.
        let c = ensure_snippet("x: 1", LOCALE_SNIPPET).unwrap();
        assert_eq!(c, "x: 1\nlocale: false\n");
    }

    #[test]
    fn cmdline() {
        assert_eq!(
            cmdline_datasources("ro quiet ci.ds=Ec2,None").unwrap(),
            vec!["Ec2", "None"]
        );
        assert_eq!(
            cmdline_datasources("ds=nocloud;s=http://10.0.0.1/").unwrap(),
            vec!["NoCloud"]
        );
        assert!(cmdline_datasources("root=/dev/sda1 ro").is_none());
        assert!(includes_target(
            &["ec2".into(), "None".into()],
            &["Ec2".into(), "None".into()]
        ));
        assert!(!includes_target(&["NoCloud".into()], &["Ec2".into()]));
        // Debian's default list includes Ec2, but OpenStack comes first and wins on an OpenStack cloud.
        let debian_default: Vec<String> = "NoCloud, ConfigDrive, OpenNebula, OpenStack, Ec2, None"
            .split(", ")
            .map(String::from)
            .collect();
        assert!(!includes_target(
            &debian_default,
            &["Ec2".into(), "None".into()]
        ));
        assert!(includes_target(
            &["Ec2".into(), "OpenStack".into(), "None".into()],
            &["Ec2".into(), "None".into()]
        ));
        assert!(!includes_target(&[], &["Ec2".into()]));
    }

    #[test]
    fn grub_word_removal() {
        let t = "# GRUB_CMDLINE_LINUX=\"cloud-init=disabled\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet cloud-init=disabled\"\r\nGRUB_CMDLINE_LINUX='cloud-init=disabled console=tty0'\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX\tcloud-init=disabled\"\nGRUB_CMDLINE_LINUX=\"xcloud-init=disabled cloud-init=disabledx\"\nGRUB_TIMEOUT=5";
        let out = drop_cmdline_word(t, "cloud-init=disabled");
        assert_eq!(
            out,
            "# GRUB_CMDLINE_LINUX=\"cloud-init=disabled\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\r\nGRUB_CMDLINE_LINUX='console=tty0'\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX\"\nGRUB_CMDLINE_LINUX=\"xcloud-init=disabled cloud-init=disabledx\"\nGRUB_TIMEOUT=5"
        );
        assert_eq!(drop_cmdline_word(&out, "cloud-init=disabled"), out);
        assert_eq!(cmdline_word_lines(t, "cloud-init=disabled").len(), 3);
        assert_eq!(cmdline_word_lines(t, "cloud-init=disabled")[0].0, 2);
        // Unquoted and the only word.
        assert_eq!(
            drop_cmdline_word(
                "GRUB_CMDLINE_LINUX=cloud-init=disabled\n",
                "cloud-init=disabled"
            ),
            "GRUB_CMDLINE_LINUX=\n"
        );
    }

    #[test]
    fn leftovers() {
        let v = parse_cfg("datasource_list: [ None ]\ndatasource:\n  None:\n    userdata_raw: x\n")
            .unwrap();
        let l = classify_leftover("99-installer.cfg", Some(&v)).unwrap();
        assert_eq!(l.sets_datasource.unwrap(), vec!["None"]);
        let v = parse_cfg("network: {config: disabled}\n").unwrap();
        assert!(
            classify_leftover("50-mine.cfg", Some(&v))
                .unwrap()
                .disables_network
        );
        assert!(classify_leftover("50-curtin-networking.cfg", None).is_some());
        let v = parse_cfg(
            "network:\n  version: 2\n  ethernets:\n    ens192:\n      addresses: [10.1.2.5/24]\n",
        )
        .unwrap();
        let l = classify_leftover("50-curtin-networking.cfg", Some(&v)).unwrap();
        assert!(l.reason.contains("static"), "{}", l.reason);
        assert!(!l.disables_network);
        assert!(classify_leftover("90_dpkg.cfg", Some(&parse_cfg("").unwrap())).is_none());
    }
}
