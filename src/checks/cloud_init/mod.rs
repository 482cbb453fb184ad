//! Checks: cloud-init — installed, enabled, the effective `datasource_list` includes the cloud's datasource,
//! no installer leftovers override it, no stale instance state, and the locale module cannot fail the boot.
//!
//! cloud-init reads `/etc/cloud/cloud.cfg`, then `/etc/cloud/cloud.cfg.d/*.cfg` in lexical order; later files
//! take priority (dicts are merged recursively, other values replaced). On a live system ds-identify also
//! honours `ci.ds=` / `ci.datasource=` on the kernel command line.
//!
//! The locale trap: cloud-init's `locale` module runs `update-locale` (package `locales`) for the datasource's
//! locale (en_US.UTF-8 unless configured). Without the package, or with the locale not generated, the module
//! fails and `cloud-config.service` ends failed. With `locales` installed the fix names a locale that exists
//! (the guest's LANG when generated, else C.UTF-8, which cloud-init never regenerates) in `91_cloudprep.cfg`;
//! without it, `locale: false` (the module skips itself: `util.is_false(locale)` in cc_locale.handle, every
//! version since 0.7; newer cloud-init's schema warns about the boolean).

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use anyhow::{bail, Result};
use serde_yaml::Value;

pub const CLOUD_CFG: &str = "/etc/cloud/cloud.cfg";
pub const CFG_D: &str = "/etc/cloud/cloud.cfg.d";
pub const DPKG_CFG: &str = "/etc/cloud/cloud.cfg.d/90_dpkg.cfg";
pub const CLOUDPREP_CFG: &str = "/etc/cloud/cloud.cfg.d/91_cloudprep.cfg";
pub const DISABLED_MARKER: &str = "/etc/cloud/cloud-init.disabled";
pub const DEFAULT_GRUB: &str = "/etc/default/grub";
pub const INSTANCE_LINK: &str = "/var/lib/cloud/instance";
pub const INSTANCES_DIR: &str = "/var/lib/cloud/instances";
/// `cloud-init clean` runs after the file edits, before initramfs/grub regeneration.
pub const ORDER_CLOUD_INIT_CLEAN: u32 = 40;
/// `systemctl enable/unmask` after the files, before debconf.
pub const ORDER_SYSTEMCTL: u32 = 75;

const STRICT_ID_SNIPPET: &str = "datasource:\n  Ec2:\n    strict_id: false\n";
const LOCALE_SNIPPET: &str = "locale: false\n";
const CLOUDPREP_HEADER: &str =
    "# Written by cloudprep for the cloud import (see cloudprep audit).\n";

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "cloud-init.installed",
            "cloud-init is installed",
            CloudInit,
            Blocker,
            true,
            check_installed
        ),
        check!(
            "cloud-init.disabled",
            "cloud-init is not disabled",
            CloudInit,
            Blocker,
            true,
            check_disabled
        ),
        check!(
            "cloud-init.datasource",
            "cloud-init's datasource_list includes the cloud's datasource",
            CloudInit,
            Blocker,
            true,
            check_datasource
        ),
        check!(
            "cloud-init.ec2-strict-id",
            "the Ec2 datasource does not insist on Amazon (strict_id: false)",
            CloudInit,
            Warning,
            true,
            check_strict_id
        ),
        check!(
            "cloud-init.installer-leftovers",
            "no installer leftovers in /etc/cloud/cloud.cfg.d",
            CloudInit,
            Warning,
            true,
            check_leftovers
        ),
        check!(
            "cloud-init.stale-instance",
            "no cloud-init instance state from the old platform",
            CloudInit,
            Warning,
            true,
            check_stale_instance
        ),
        check!(
            "cloud-init.etc-hosts",
            "the hostname from the metadata resolves locally",
            CloudInit,
            Warning,
            true,
            check_etc_hosts
        ),
        check!(
            "cloud-init.locale",
            "cloud-init's locale module can run",
            CloudInit,
            Warning,
            true,
            check_locale
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Pure parsing
// ---------------------------------------------------------------------------------------------------------

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

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.iter().find_map(|(k, val)| match k {
        Value::String(s) if s == key => Some(val),
        _ => None,
    })
}

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.iter().find_map(|(k, val)| match k {
        Value::String(s) if s.eq_ignore_ascii_case(key) => Some(val),
        _ => None,
    })
}

fn scalar_string(v: &Value) -> Option<String> {
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

fn split_list(s: &str) -> Vec<String> {
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

fn is_top_key(line: &str, key: &str) -> bool {
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
fn is_any_top_key(line: &str) -> bool {
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

fn is_cmdline_assignment(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
    t.starts_with("GRUB_CMDLINE_LINUX")
        && t.split_once('=').is_some_and(|(name, _)| {
            let name = name.trim_end_matches('+');
            name == "GRUB_CMDLINE_LINUX" || name == "GRUB_CMDLINE_LINUX_DEFAULT"
        })
}

/// Positions of `word` in `s` delimited by start/end, whitespace or a quote.
fn word_positions(s: &str, word: &str) -> Vec<usize> {
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

fn remove_word(line: &str, word: &str) -> String {
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

fn is_false_value(v: &Value) -> bool {
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

fn leftovers_handled_elsewhere(ctx: &Ctx) -> bool {
    let id = "cloud-init.installer-leftovers";
    !(ctx.config.is_skipped(id) || ctx.config.waivers.contains_key(id))
}

fn target_list(ctx: &Ctx) -> Vec<String> {
    let t = &ctx.config.cloud.datasource_list;
    if t.is_empty() {
        vec!["Ec2".into(), "None".into()]
    } else {
        t.clone()
    }
}

fn wants_ec2(target: &[String]) -> bool {
    target.iter().any(|t| t.eq_ignore_ascii_case("Ec2"))
}

fn cloudprep_cfg_edit(snippet: &'static str) -> FileEdit {
    cloudprep_cfg_edit_owned(snippet.to_string())
}

fn cloudprep_cfg_edit_owned(snippet: String) -> FileEdit {
    FileEdit::rewrite(CLOUDPREP_CFG, Validator::CloudInit, move |c| {
        ensure_snippet(c, &snippet)
    })
}

// ---------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------

fn check_installed(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    if ctx.facts.installed("cloud-init") {
        return Ok(vec![]);
    }
    if ctx.facts.packages.is_empty() {
        // No dpkg database: nothing to say about packages (reported by platform checks).
        return Ok(vec![]);
    }
    let mut f = Finding::new(
        info,
        "the cloud-init package is not installed: in the cloud nothing fetches the instance's SSH key, \
         hostname or network configuration from the metadata service, so the imported instance cannot be \
         logged into",
    );
    if let Some(p) = ctx.facts.packages.get("cloud-init") {
        f = f.evidence(Evidence::line(
            "/var/lib/dpkg/status",
            p.line,
            &format!("Package: cloud-init (Status: {})", p.status),
        ));
    } else {
        f = f.evidence(Evidence::file(
            "/var/lib/dpkg/status",
            "no cloud-init package stanza",
        ));
    }
    let deb = ctx.config.fix.cloud_init_deb.trim();
    if deb.is_empty() {
        return Ok(vec![f
            .remediation("apt-get install -y cloud-init (needs the guest's package sources reachable)")
            .fix(Fix::default().command(crate::checks::apt_update()).command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES,
                &["apt-get", "install", "-y", "cloud-init"],
                "install cloud-init so the instance picks up its SSH key and network from the metadata service",
            )))]);
    }
    if !ctx.root.exists(deb) {
        return Ok(vec![f
            .evidence(Evidence::file(
                deb,
                "configured in [fix] cloud_init_deb but the file does not exist in the guest",
            ))
            .remediation(format!(
                "Copy a cloud-init .deb for this release to {deb} inside the guest (or clear [fix] \
                 cloud_init_deb to use apt-get), then run the audit again."
            ))]);
    }
    // A directory holds cloud-init and the dependencies the guest lacks (an offline guest cannot fetch
    // them): every .deb in it is installed in one transaction.
    let debs = if ctx.root.is_dir(deb) {
        let d = ctx.root.files_in(deb, |n| n.ends_with(".deb"))?;
        if d.is_empty() {
            return Ok(vec![f
                .evidence(Evidence::file(
                    deb,
                    "configured in [fix] cloud_init_deb but the directory holds no .deb file",
                ))
                .remediation(format!(
                    "Put cloud-init's .deb and those of its missing dependencies (e.g. from \
                     `apt-get install --download-only cloud-init` on a machine of the same release) in \
                     {deb}, then run the audit again."
                ))]);
        }
        d
    } else {
        vec![deb.to_string()]
    };
    // apt installs a local .deb (resolving dependencies from its cache) since apt 1.1; older apt needs dpkg.
    let apt_local = ctx
        .facts
        .packages
        .get("apt")
        .map(|p| apt_supports_local_deb(&p.version))
        .unwrap_or(true);
    let argv = |head: &[&'static str]| -> Vec<&str> {
        head.iter()
            .copied()
            .chain(debs.iter().map(String::as_str))
            .collect()
    };
    let mut fix = Fix::default();
    if apt_local {
        fix = fix.command(PlannedCommand::new(
            Phase::Pre,
            order::INSTALL_PACKAGES,
            &argv(&["apt-get", "install", "-y"]),
            "install cloud-init from the local .deb configured in [fix] cloud_init_deb",
        ));
    } else {
        fix = fix
            .command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES,
                &argv(&["dpkg", "-i"]),
                "install cloud-init from the local .deb (this apt predates local .deb installs)",
            ))
            .command(PlannedCommand::new(
                Phase::Pre,
                order::INSTALL_PACKAGES + 1,
                &["apt-get", "install", "-f", "-y"],
                "complete the dependencies of the cloud-init .deb",
            ));
    }
    Ok(vec![f
        .remediation(format!("apt-get install -y {}", debs.join(" ")))
        .fix(fix)])
}

/// apt ≥ 1.1 installs `apt-get install ./file.deb`.
pub fn apt_supports_local_deb(version: &str) -> bool {
    let v = version.split_once(':').map(|x| x.1).unwrap_or(version);
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let major: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 1)
}

const CLOUD_INIT_UNITS: &[&str] = &[
    "cloud-init-local.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
    "cloud-init.target",
];

fn check_disabled(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if ctx.root.exists(DISABLED_MARKER) {
        out.push(
            Finding::new(
                info,
                format!(
                    "{DISABLED_MARKER} exists: cloud-init's systemd generator skips every cloud-init unit, so \
                     in the cloud no SSH key or network configuration is fetched"
                ),
            )
            .evidence(Evidence::file(DISABLED_MARKER, "marker file present"))
            .remediation(format!("rm {DISABLED_MARKER}"))
            .fix(Fix::default().edit(FileEdit::remove(DISABLED_MARKER))),
        );
    }
    // cloud-init=disabled on the kernel command line, from /etc/default/grub (and grub.d snippets).
    let word = "cloud-init=disabled";
    let mut grub_files = vec![DEFAULT_GRUB.to_string()];
    grub_files.extend(
        ctx.root
            .files_in("/etc/default/grub.d", |n| n.ends_with(".cfg"))?,
    );
    let mut in_config = false;
    for p in &grub_files {
        let Some(text) = ctx.root.read_text(p)? else {
            continue;
        };
        let lines = cmdline_word_lines(&text, word);
        if lines.is_empty() {
            continue;
        }
        in_config = true;
        out.push(
            Finding::new(
                info,
                format!(
                    "{p} puts `{word}` on the kernel command line: cloud-init will not run in the cloud"
                ),
            )
            .evidences(lines.iter().map(|(n, l)| Evidence::line(p, *n, l)))
            .remediation(format!("remove `{word}` from GRUB_CMDLINE_LINUX in {p}, then run update-grub"))
            .fix(
                Fix::default()
                    .edit(FileEdit::rewrite(p, Validator::ShellVars, move |c| {
                        Ok(drop_cmdline_word(c, "cloud-init=disabled"))
                    }))
                    .command(PlannedCommand::new(
                        Phase::Post,
                        order::UPDATE_GRUB,
                        &["update-grub"],
                        "regenerate grub.cfg with the new kernel command line",
                    )),
            ),
        );
    }
    if let Some(cmdline) = &ctx.facts.kernel_cmdline {
        if !in_config && cmdline.split_whitespace().any(|t| t == word) {
            out.push(
                Finding::new(
                    info,
                    format!(
                        "the running kernel was booted with `{word}` although /etc/default/grub does not set \
                         it: grub.cfg was edited by hand or another boot loader entry is in use"
                    ),
                )
                .evidence(Evidence::file("/proc/cmdline", cmdline.clone()))
                .remediation("run update-grub so grub.cfg is regenerated from /etc/default/grub")
                .fix(Fix::default().command(PlannedCommand::new(
                    Phase::Post,
                    order::UPDATE_GRUB,
                    &["update-grub"],
                    "regenerate grub.cfg without cloud-init=disabled",
                ))),
            );
        }
    }
    // Masked units (symlinks to /dev/null in /etc/systemd/system).
    for unit in CLOUD_INIT_UNITS {
        let p = format!("/etc/systemd/system/{unit}");
        let Ok(r) = ctx.root.resolve_parent(&p) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(&r.host) {
            if target == std::path::Path::new("/dev/null") {
                out.push(
                    Finding::new(
                        info,
                        format!("{unit} is masked: that cloud-init stage never runs"),
                    )
                    .evidence(Evidence::file(&p, "symlink to /dev/null (masked)"))
                    .remediation(format!("systemctl unmask {unit}"))
                    // A symlink: FileEdit (content-based) does not apply; systemctl works offline too.
                    .fix(Fix::default().command(PlannedCommand::new(
                        Phase::Post,
                        ORDER_SYSTEMCTL,
                        &["systemctl", "unmask", unit],
                        "unmask the cloud-init unit",
                    ))),
                );
            }
        }
    }
    Ok(out)
}

fn check_datasource(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let target = target_list(ctx);
    let files = load_config(ctx)?;
    let eff = effective_datasource(&files);
    let cmdline = ctx
        .facts
        .kernel_cmdline
        .as_deref()
        .and_then(cmdline_datasources);
    let want = format!("[ {} ]", target.join(", "));
    let bad_files: Vec<Evidence> = files
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| Evidence::file(&f.path, e.clone())))
        .collect();

    if let Some(ds) = &cmdline {
        if !includes_target(ds, &target) {
            return Ok(vec![Finding::new(
                info,
                format!(
                    "the kernel command line selects datasource(s) {} (ci.ds=/ci.datasource=/ds=), which overrides \
                     every config file and does not include {want}",
                    ds.join(", ")
                ),
            )
            .evidence(Evidence::file(
                "/proc/cmdline",
                ctx.facts.kernel_cmdline.clone().unwrap_or_default(),
            ))
            .remediation("remove ci.ds=/ci.datasource=/ds= from GRUB_CMDLINE_LINUX in /etc/default/grub and run update-grub")]);
        }
    }

    let (message, evidence) = match &eff {
        Some(e) if includes_target(&e.list, &target) => return Ok(vec![]),
        Some(e) => (
            format!(
                "cloud-init's effective datasource_list is [ {} ] (set last by {}), which does not start with / \
                 include the cloud's datasource {want}: on first boot in the cloud cloud-init detects another \
                 datasource or none, so the SSH key and network configuration from the cloud's EC2-style \
                 metadata are never applied",
                e.list.join(", "),
                e.evidence.path
            ),
            vec![e.evidence.clone()],
        ),
        None => (
            format!(
                "no datasource_list is set in {CLOUD_CFG} or {CFG_D}/*.cfg: cloud-init (ds-identify) probes \
                 every datasource and may pick another one than the cloud's {want} (or none)"
            ),
            vec![Evidence::file(DPKG_CFG, "absent or without datasource_list")],
        ),
    };
    let mut fix = Fix::default();
    let list = target.clone();
    fix = fix.edit(FileEdit::create(
        DPKG_CFG,
        0o644,
        Validator::CloudInit,
        move |_| Ok(render_dpkg_cfg(&list)),
    ));
    let mut overriding = Vec::new();
    let dpkg_name = DPKG_CFG.rsplit('/').next().unwrap_or_default();
    let leftovers_elsewhere = leftovers_handled_elsewhere(ctx);
    for f in &files {
        if f.path == CLOUD_CFG || f.name.as_str() <= dpkg_name {
            continue;
        }
        let Some(v) = &f.value else { continue };
        let Some(list) = datasource_list_of(v) else {
            continue;
        };
        if includes_target(&list, &target) {
            continue;
        }
        if leftovers_elsewhere && classify_leftover(&f.name, Some(v)).is_some() {
            // cloud-init.installer-leftovers removes this file.
            continue;
        }
        let line = top_key_line(&f.text, "datasource_list").unwrap_or(1);
        overriding.push(Evidence::line(
            &f.path,
            line,
            f.text.lines().nth(line - 1).unwrap_or(""),
        ));
        fix = fix.edit(FileEdit::rewrite(&f.path, Validator::CloudInit, |c| {
            let out = comment_out_top_key(c, "datasource_list");
            parse_cfg(&out).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(out)
        }));
    }
    if wants_ec2(&target) && !strict_id_false(&files) {
        fix = fix.edit(cloudprep_cfg_edit(STRICT_ID_SNIPPET));
    }
    {
        // Debian's postinst rewrites 90_dpkg.cfg from debconf on every upgrade: keep debconf in step.
        let sel = format!(
            "cloud-init cloud-init/datasources multiselect {}\n",
            target.join(", ")
        );
        fix = fix.command(
            PlannedCommand::new(
                Phase::Post,
                order::DEBCONF,
                &["debconf-set-selections"],
                "record the datasource choice in debconf so a cloud-init upgrade does not rewrite 90_dpkg.cfg",
            )
            .with_stdin(sel),
        );
    }
    Ok(vec![Finding::new(info, message)
        .evidences(evidence)
        .evidences(overriding)
        .evidences(bad_files)
        .remediation(format!(
            "write {DPKG_CFG} as `dpkg-reconfigure cloud-init` does (datasource_list: {want}), comment out \
             datasource_list in any later file, and set the same in debconf"
        ))
        .fix(fix)])
}

fn strict_id_false(files: &[CfgFile]) -> bool {
    effective_value(files, &["datasource", "Ec2", "strict_id"])
        .is_some_and(|(_, v)| is_false_value(v))
}

fn check_strict_id(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let target = target_list(ctx);
    if !wants_ec2(&target) {
        return Ok(vec![]);
    }
    let files = load_config(ctx)?;
    // When the datasource list is wrong, cloud-init.datasource's fix also writes strict_id.
    match effective_datasource(&files) {
        Some(e) if includes_target(&e.list, &target) => {}
        _ => return Ok(vec![]),
    }
    if strict_id_false(&files) {
        return Ok(vec![]);
    }
    let mut f = Finding::new(
        info,
        "datasource.Ec2.strict_id is not false: on a cloud that is not Amazon EC2 the Ec2 datasource logs a \
         loud \"not running on Amazon EC2\" warning at every boot (and with strict_id: true refuses to run)",
    );
    f = match effective_value(&files, &["datasource", "Ec2", "strict_id"]) {
        Some((file, v)) => f.evidence(Evidence::file(
            &file.path,
            format!(
                "datasource.Ec2.strict_id: {}",
                scalar_string(v).unwrap_or_default()
            ),
        )),
        None => f.evidence(Evidence::file(CFG_D, "datasource.Ec2.strict_id not set")),
    };
    Ok(vec![f
        .remediation(format!("add to {CLOUDPREP_CFG}:\n{STRICT_ID_SNIPPET}"))
        .fix(
            Fix::default().edit(cloudprep_cfg_edit(STRICT_ID_SNIPPET)),
        )])
}

fn check_leftovers(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let target = target_list(ctx);
    let files = load_config(ctx)?;
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.path != CLOUD_CFG) {
        let Some(l) = classify_leftover(&f.name, f.value.as_ref()) else {
            continue;
        };
        let mut sev = Severity::Warning;
        let mut msg = format!("{} is an installer leftover: {}", f.path, l.reason);
        let mut ev = Vec::new();
        if let Some(ds) = &l.sets_datasource {
            let line = top_key_line(&f.text, "datasource_list").unwrap_or(1);
            ev.push(Evidence::line(
                &f.path,
                line,
                f.text.lines().nth(line - 1).unwrap_or(""),
            ));
            if !includes_target(ds, &target) {
                sev = Severity::Blocker;
                msg.push_str(&format!(
                    "; it sets datasource_list: [ {} ], overriding the cloud's datasource",
                    ds.join(", ")
                ));
            }
        }
        if l.disables_network {
            let line = top_key_line(&f.text, "network").unwrap_or(1);
            ev.push(Evidence::line(
                &f.path,
                line,
                f.text.lines().nth(line - 1).unwrap_or(""),
            ));
            msg.push_str(
                "; cloud-init will not write the instance's network configuration from the metadata service",
            );
        }
        if ev.is_empty() {
            ev.push(Evidence::file(&f.path, l.reason.clone()));
        }
        out.push(
            Finding::new(info, msg)
                .severity(sev)
                .evidences(ev)
                .remediation(format!("rm {} (cloudprep keeps a backup)", f.path))
                .fix(Fix::default().edit(FileEdit::remove(&f.path))),
        );
    }
    Ok(out)
}

/// The instance cloud-init set up during this boot, from its run-time records in /run (a tmpfs: present
/// only on a running system where cloud-init ran): `(instance id, datasource)`, e.g. `("i-0ab", "Ec2")`.
pub fn current_instance(instance_data: &str, result: &str) -> Option<(String, String)> {
    let data: serde_json::Value = serde_json::from_str(instance_data).ok()?;
    let res: serde_json::Value = serde_json::from_str(result).ok()?;
    let iid = data.get("v1")?.get("instance_id")?.as_str()?.to_string();
    // result.json (after the final stage) has v1.errors; status.json (updated by every stage, so already
    // there for units ordered after cloud-init.service) has v1.<stage>.errors.
    let v1 = res.get("v1")?.as_object()?;
    let failed = match v1.get("errors") {
        Some(e) => !e.as_array()?.is_empty(),
        None => v1.values().any(|st| {
            st.get("errors")
                .and_then(|e| e.as_array())
                .is_some_and(|e| !e.is_empty())
        }),
    };
    if failed {
        return None;
    }
    // "DataSourceEc2", "DataSourceEc2Local", "DataSourceOpenStack [net,ver=2]", ...
    let ds = v1.get("datasource")?.as_str()?;
    let ds = ds.strip_prefix("DataSource")?;
    let ds = ds.split([' ', '[']).next()?.trim_end_matches("Local");
    (!iid.is_empty() && !ds.is_empty()).then(|| (iid, ds.to_string()))
}

fn check_stale_instance(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let link = ctx.root.resolve_parent(INSTANCE_LINK)?;
    let link_meta = std::fs::symlink_metadata(&link.host).ok();
    // Already running in the cloud: the state is this instance's own when cloud-init set it up this boot,
    // without errors, from one of the configured datasources (None means no cloud was found).
    let status = match ctx.root.read_text("/run/cloud-init/result.json") {
        Ok(Some(r)) => Ok(Some(r)),
        _ => ctx.root.read_text("/run/cloud-init/status.json"),
    };
    if let (Ok(Some(d)), Ok(Some(r))) = (
        ctx.root.read_text("/run/cloud-init/instance-data.json"),
        status,
    ) {
        if let Some((iid, ds)) = current_instance(&d, &r) {
            let configured = effective_datasource(&load_config(ctx)?)
                .map(|e| e.list)
                .unwrap_or_default();
            let target = std::fs::read_link(&link.host).ok();
            let link_is_current = target
                .as_ref()
                .and_then(|t| t.file_name())
                .is_some_and(|n| n.to_string_lossy() == iid);
            if link_is_current
                && !ds.eq_ignore_ascii_case("None")
                && configured.iter().any(|c| c.eq_ignore_ascii_case(&ds))
            {
                return Ok(vec![]);
            }
        }
    }
    let installed = ctx.facts.installed("cloud-init");
    let instances = ctx.root.list_dir(INSTANCES_DIR)?;
    let stale_dirs = installed && !instances.is_empty();
    if link_meta.is_none() && !stale_dirs {
        return Ok(vec![]);
    }
    let mut ev = Vec::new();
    if let Some(m) = &link_meta {
        let text = if m.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(&link.host)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else {
            "present".to_string()
        };
        ev.push(Evidence::file(INSTANCE_LINK, text));
    }
    if !instances.is_empty() {
        ev.push(Evidence::file(INSTANCES_DIR, instances.join(" ")));
    }
    for p in [
        "/var/lib/cloud/data/previous-datasource",
        "/var/lib/cloud/data/instance-id",
    ] {
        if let Ok(Some(t)) = ctx.root.read_text(p) {
            if let Some(first) = t.lines().next() {
                ev.push(Evidence::line(p, 1, first));
            }
        }
    }
    let version = ctx
        .facts
        .packages
        .get("cloud-init")
        .filter(|p| p.is_installed())
        .map(|p| p.version.clone());
    let has_clean = version
        .as_deref()
        .and_then(upstream_major)
        .is_some_and(|m| m >= 18);
    let fix = if installed && has_clean {
        Fix::default().command(PlannedCommand::new(
            Phase::Post,
            ORDER_CLOUD_INIT_CLEAN,
            &["cloud-init", "clean", "--logs"],
            "forget the old platform's instance so the first boot in the cloud runs every module fresh",
        ))
    } else if link_meta
        .as_ref()
        .is_some_and(|m| m.file_type().is_symlink())
    {
        // The link points at a directory: a content-based FileEdit cannot move it, rm -f removes the link.
        Fix::default().command(PlannedCommand::new(
            Phase::Post,
            ORDER_CLOUD_INIT_CLEAN,
            &["rm", "-f", INSTANCE_LINK],
            "forget the old platform's instance (cloud-init clean is not available)",
        ))
    } else {
        Fix::default()
    };
    Ok(vec![Finding::new(
        info,
        "cloud-init state from the old platform is present: the first boot in the cloud usually sees a new \
         instance id, but per-instance semaphores and data/previous-datasource can make modules (SSH keys, \
         users) be skipped or the old datasource be tried first",
    )
    .evidences(ev)
    .remediation(if installed {
        "cloud-init clean --logs".to_string()
    } else {
        format!("rm {INSTANCE_LINK}")
    })
    .fix(fix)])
}

fn check_locale(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let files = load_config(ctx)?;
    let configured = effective_value(&files, &["locale"]);
    if let Some((_, v)) = configured {
        if is_false_value(v) {
            return Ok(vec![]);
        }
    }
    let locale = configured
        .and_then(|(_, v)| scalar_string(v))
        .unwrap_or_else(|| "en_US.UTF-8".to_string());
    let has_locales_pkg = ctx.facts.installed("locales") || ctx.facts.installed("locales-all");
    let mut ev = Vec::new();
    let why = if !has_locales_pkg {
        ev.push(Evidence::file(
            "/var/lib/dpkg/status",
            "package locales (update-locale, locale-gen) not installed",
        ));
        format!(
            "the `locales` package is not installed: cloud-init's locale module runs update-locale for \
             {locale} and fails, leaving cloud-config.service failed on every first boot"
        )
    } else if locale_generated(ctx, &locale)? {
        return Ok(vec![]);
    } else {
        ev.push(Evidence::file(
            "/usr/lib/locale/locale-archive",
            format!("{locale} is not generated"),
        ));
        if let Ok(Some(t)) = ctx.root.read_text("/etc/locale.gen") {
            let enabled: Vec<&str> = t
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .collect();
            ev.push(Evidence::file(
                "/etc/locale.gen",
                if enabled.is_empty() {
                    "no locale enabled".to_string()
                } else {
                    format!("enabled: {}", enabled.join(", "))
                },
            ));
        }
        format!(
            "the locale {locale} cloud-init's locale module applies is not generated: update-locale refuses \
             it and the module fails, leaving cloud-config.service failed"
        )
    };
    if let Some((f, _)) = configured {
        let line = top_key_line(&f.text, "locale").unwrap_or(1);
        ev.push(Evidence::line(
            &f.path,
            line,
            f.text.lines().nth(line - 1).unwrap_or(""),
        ));
    }
    // With `locales` installed, name a locale that exists: the guest's own LANG when it is generated, else
    // C.UTF-8 (built into libc, never regenerated by cloud-init): valid for cloud-init's schema. Without
    // `locales` update-locale itself is missing, so only `locale: false` (the module skips itself; the schema
    // of newer cloud-init warns about the boolean) keeps cloud-config.service from failing.
    let snippet = if has_locales_pkg {
        let lang = ctx
            .root
            .read_text("/etc/default/locale")
            .ok()
            .flatten()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("LANG=")
                        .map(|v| v.trim().trim_matches('"').to_string())
                })
            })
            .filter(|l| !l.is_empty() && locale_generated(ctx, l).unwrap_or(false));
        format!(
            "locale: {}\n",
            lang.unwrap_or_else(|| "C.UTF-8".to_string())
        )
    } else {
        LOCALE_SNIPPET.to_string()
    };
    let mut fix = Fix::default();
    if configured.is_none() {
        fix = fix.edit(cloudprep_cfg_edit_owned(snippet.clone()));
    }
    Ok(vec![Finding::new(info, why)
        .evidences(ev)
        .remediation(format!(
            "set `{}` in {CLOUDPREP_CFG} (cloud-init then applies a locale the guest has), or install \
             `locales` and generate {locale}",
            snippet.trim_end()
        ))
        .fix(fix)])
}

const ETC_HOSTS_SNIPPET: &str = "manage_etc_hosts: localhost\n";

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

fn check_etc_hosts(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

fn locale_generated(ctx: &Ctx, locale: &str) -> Result<bool> {
    let norm = normalize_locale(locale);
    let lower = norm.to_ascii_lowercase();
    if matches!(lower.as_str(), "c" | "posix" | "c.utf8") {
        return Ok(true);
    }
    for d in [&norm, &locale.to_string()] {
        if ctx.root.is_dir(format!("/usr/lib/locale/{d}")) {
            return Ok(true);
        }
    }
    if let Some(bytes) = ctx.root.read("/usr/lib/locale/locale-archive")? {
        let needle = norm.as_bytes();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
    }
    Ok(false)
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

    #[test]
    fn current_instance_from_run_records() {
        let data = r#"{"v1": {"instance_id": "i-0e2e5c2107", "cloud_name": "aws"}}"#;
        let ok = r#"{"v1": {"datasource": "DataSourceEc2", "errors": []}}"#;
        assert_eq!(
            current_instance(data, ok),
            Some(("i-0e2e5c2107".into(), "Ec2".into()))
        );
        let local = r#"{"v1": {"datasource": "DataSourceEc2Local", "errors": []}}"#;
        assert_eq!(current_instance(data, local).unwrap().1, "Ec2");
        let os = r#"{"v1": {"datasource": "DataSourceOpenStack [net,ver=2]", "errors": []}}"#;
        assert_eq!(current_instance(data, os).unwrap().1, "OpenStack");
        let failed = r#"{"v1": {"datasource": "DataSourceEc2", "errors": ["boom"]}}"#;
        assert_eq!(current_instance(data, failed), None);
        // status.json while the later stages are still to run.
        let status = r#"{"v1": {"datasource": "DataSourceEc2", "stage": null,
            "init-local": {"errors": [], "finished": 1.0}, "init": {"errors": [], "finished": 2.0},
            "modules-config": {"errors": [], "finished": null}}}"#;
        assert_eq!(current_instance(data, status).unwrap().1, "Ec2");
        let status_failed = r#"{"v1": {"datasource": "DataSourceEc2",
            "init": {"errors": ["no metadata"]}}}"#;
        assert_eq!(current_instance(data, status_failed), None);
        assert_eq!(current_instance("{}", ok), None);
        assert_eq!(current_instance(data, "not json"), None);
        assert_eq!(
            current_instance(data, r#"{"v1": {"datasource": null, "errors": []}}"#),
            None
        );
    }

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

    #[test]
    fn versions_and_locales() {
        assert_eq!(upstream_major("22.4.2-1+deb12u1"), Some(22));
        assert_eq!(upstream_major("0.7.6~bzr976-2"), Some(0));
        assert_eq!(upstream_major("1:18.3-6"), Some(18));
        assert!(apt_supports_local_deb("1.4.11"));
        assert!(!apt_supports_local_deb("1.0.9.8.6"));
        assert!(apt_supports_local_deb("2.6.1"));
        assert_eq!(normalize_locale("en_US.UTF-8"), "en_US.utf8");
        assert_eq!(normalize_locale("C"), "C");
    }
}
