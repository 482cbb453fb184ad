//! The CLI contract on an empty and on an unreadable root.
mod common;

#[test]
fn empty_root_reports_valid_json() {
    let d = tempfile::tempdir().unwrap();
    let (code, v) = common::audit_json(d.path(), &[]);
    assert_eq!(v["schema"], 1);
    // Nothing in it can be migrated: no OS is recognised, so it is a blocker (exit 2), not READY.
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["summary"]["exit_code"], 2, "{v:#}");
    assert!(
        common::findings(&v, "platform.os-supported")
            .iter()
            .any(|f| f["severity"] == "blocker"),
        "{v:#}"
    );
}

#[test]
fn missing_root_exits_3() {
    let out = common::run_cloudprep(
        std::path::Path::new("/nonexistent/cloudprep-root"),
        &["audit"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cloudprep-root"));
}

#[test]
fn bad_arguments_exit_3() {
    let out = std::process::Command::new(common::bin())
        .args(["audit", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
