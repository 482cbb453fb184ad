//! Checks: cloud-init is not disabled, its datasource list reaches the cloud's metadata (Ec2), and the
//! Ec2 datasource does not insist on Amazon (strict_id).

use super::*;

pub(super) const CLOUD_INIT_UNITS: &[&str] = &[
    "cloud-init-local.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
    "cloud-init.target",
];

pub(super) fn check_disabled(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

pub(super) fn check_datasource(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

pub(super) fn strict_id_false(files: &[CfgFile]) -> bool {
    effective_value(files, &["datasource", "Ec2", "strict_id"])
        .is_some_and(|(_, v)| is_false_value(v))
}

pub(super) fn check_strict_id(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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
