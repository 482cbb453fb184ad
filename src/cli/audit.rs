//! `cloudprep audit` and `cloudprep checks`.

use super::{AuditArgs, ChecksArgs, Global};
use crate::audit;
use crate::checks::Severity;
use crate::report::{emit, render_text, to_json, Format};
use anyhow::Result;
use serde_json::Value;
use std::io::IsTerminal;

pub fn audit(g: &Global, a: &AuditArgs) -> Result<i32> {
    // An unreadable root or config is an error of the command: exit 3, reported once by cli::main.
    let sel = a.select.selection();
    sel.validate()?;
    let (root, config) = g.target().open()?;
    let audit = audit::run(&root, &config, &sel);
    let to_tty = a.output.is_none() && std::io::stdout().is_terminal();
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&to_json(&audit))? + "\n",
        Format::Text => render_text(&audit, g.color.enabled(to_tty)),
    };
    emit(a.output.as_deref(), &out)?;
    log::info!(
        "audit of {}: {} blocker(s), {} warning(s), {} error(s); exit {}",
        root.base().display(),
        audit.count(Severity::Blocker),
        audit.count(Severity::Warning),
        audit.errors(),
        audit.exit_code()
    );
    Ok(audit.exit_code())
}

pub fn checks(a: &ChecksArgs) -> Result<i32> {
    let checks = crate::checks::all_checks();
    let out = match a.format {
        Format::Json => {
            let v: Vec<Value> = checks
                .iter()
                .map(|c| serde_json::to_value(c.info).unwrap_or(Value::Null))
                .collect();
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Text => {
            let mut s = format!(
                "{:<40} {:<8} {:<10} {:<8} {}\n",
                "ID", "AREA", "SEVERITY", "FIXABLE", "TITLE"
            );
            for c in &checks {
                s.push_str(&format!(
                    "{:<40} {:<8} {:<10} {:<8} {}\n",
                    c.info.id,
                    c.info.area.to_string(),
                    c.info.severity.to_string(),
                    if c.info.fixable { "yes" } else { "no" },
                    c.info.title
                ));
            }
            s
        }
    };
    emit(None, &out)?;
    Ok(0)
}
