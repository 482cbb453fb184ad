//! `cloudprep fix`, `rollback` and `runs`.

use super::{FixArgs, Global, RollbackArgs, RunsArgs, EXIT_BLOCKERS, EXIT_FAILURE};
use crate::fix::{list_runs, render_rollback, FixOptions};
use crate::guest::root::Root;
use crate::report::Format;
use anyhow::Result;

pub fn fix(g: &Global, a: &FixArgs) -> Result<i32> {
    crate::fix::run(
        &g.target(),
        &FixOptions {
            dry_run: a.dry_run,
            yes: a.yes,
            format: a.format,
            select: a.select.selection(),
        },
    )
}

/// The root for `rollback` and `runs`, which need no configuration; an unusable root is reported here.
fn open_root(g: &Global) -> Option<Root> {
    Root::new(&g.root)
        .map_err(|e| eprintln!("cloudprep: error: {e:#}"))
        .ok()
}

pub fn rollback(g: &Global, a: &RollbackArgs) -> Result<i32> {
    let Some(root) = open_root(g) else {
        return Ok(EXIT_FAILURE);
    };
    let (recovered, rep) = crate::fix::rollback(&root, a.run_id.as_deref())?;
    let mut errors = 0;
    for r in recovered.iter().chain(rep.iter()) {
        print!("{}", render_rollback(r));
        errors += r.errors.len();
    }
    if recovered.is_empty() && rep.is_none() {
        println!("nothing to roll back");
    }
    Ok(if errors > 0 { EXIT_BLOCKERS } else { 0 })
}

pub fn runs(g: &Global, a: &RunsArgs) -> Result<i32> {
    let Some(root) = open_root(g) else {
        return Ok(EXIT_FAILURE);
    };
    let runs = list_runs(&root)?;
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&runs)? + "\n",
        Format::Text => {
            let mut s = format!(
                "{:<26} {:<21} {:<13} {:>5} {:>8}\n",
                "ID", "TIME", "STATE", "FILES", "COMMANDS"
            );
            for r in &runs {
                s.push_str(&format!(
                    "{:<26} {:<21} {:<13} {:>5} {:>8}\n",
                    r.id,
                    r.time,
                    r.state.as_str(),
                    r.files.len(),
                    r.commands.len()
                ));
            }
            s
        }
    };
    crate::report::emit(None, &out)?;
    Ok(0)
}
