//! `cloudprep report merge` and `cloudprep report diff`: read the inputs, call [`crate::fleet`], write the
//! output (atomically with --output), map the outcome to the exit code.

use super::{DiffArgs, FleetFormat, MergeArgs};
use crate::fleet::{self, waivers::Waivers};
use crate::report::{emit, Format};
use anyhow::{Context, Result};

pub fn merge(a: &MergeArgs) -> Result<i32> {
    let waivers = match &a.waivers {
        Some(p) => fleet::load_waivers(p)?,
        None => Waivers::default(),
    };
    let merged = fleet::merge(&fleet::load_inputs(&a.inputs), &waivers);
    for k in &merged.skipped {
        log::warn!("skipped {}: {}", k.source, k.reason);
    }
    let out = match a.format {
        FleetFormat::Text => fleet::text::render(&merged),
        FleetFormat::Json => serde_json::to_string_pretty(&merged)? + "\n",
        FleetFormat::Csv => fleet::csv::render(&merged),
        FleetFormat::Html => fleet::html::render(&merged),
    };
    emit(a.output.as_deref(), &out)?;
    let t = &merged.totals;
    log::info!(
        "merged {} host report(s): {} ready, {} warnings, {} blocked, {} audit error; {} skipped",
        t.hosts,
        t.ready,
        t.warnings,
        t.blocked,
        t.audit_error,
        t.unreadable
    );
    Ok(merged.exit_code())
}

fn read_report(p: &std::path::Path) -> Result<fleet::Fleet> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    fleet::diff::as_fleet(&p.display().to_string(), &text).map_err(anyhow::Error::msg)
}

pub fn diff(a: &DiffArgs) -> Result<i32> {
    let (old, new) = (read_report(&a.old)?, read_report(&a.new)?);
    let d = fleet::diff::diff(&old, &new);
    let out = match a.format {
        Format::Text => fleet::diff::render_text(&d),
        Format::Json => serde_json::to_string_pretty(&d)? + "\n",
    };
    emit(a.output.as_deref(), &out)?;
    Ok(if d.is_empty() { 0 } else { 1 })
}
