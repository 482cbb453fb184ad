//! Checks: the old platform's installer leftovers and the state of the old instance under /var/lib/cloud.

use super::*;

pub(super) fn check_leftovers(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

pub(super) fn check_stale_instance(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
