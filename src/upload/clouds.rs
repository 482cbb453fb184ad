//! `clouds.yaml` (+ `secure.yaml`) lookup and merge, as the OpenStack client tools do it: `OS_CLIENT_CONFIG_FILE`,
//! else the first of `./clouds.yaml`, `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml`
//! (`.yml` too); `secure.yaml` is searched the same way and its entries are merged over the cloud's.
//! These are the operator's files on the machine running cloudprep, not guest files.

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// Directories searched, in order, for `clouds.yaml` and `secure.yaml`.
pub fn search_dirs(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        dirs.push(Path::new(&x).join("openstack"));
    }
    if let Some(h) = env("HOME").filter(|s| !s.is_empty()) {
        let p = Path::new(&h).join(".config/openstack");
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs
}

fn find(env: &dyn Fn(&str) -> Option<String>, override_var: &str, stem: &str) -> Option<PathBuf> {
    if let Some(f) = env(override_var).filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(f));
    }
    for d in search_dirs(env) {
        for ext in ["yaml", "yml"] {
            let p = d.join(format!("{stem}.{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Deep-merge `over` into `base` (mappings merge key by key; anything else replaces).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Pick cloud `name` from the parsed clouds document and merge the secure document's entry over it.
pub fn select_cloud(clouds: &Value, secure: Option<&Value>, name: &str) -> Result<Value> {
    let all = clouds
        .get("clouds")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("it has no `clouds:` mapping"))?;
    let mut cloud = match all.get(name) {
        Some(c) => c.clone(),
        None => {
            let names: Vec<&str> = all.keys().filter_map(Value::as_str).collect();
            bail!(
                "it has no cloud named `{name}` (clouds defined: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    };
    if cloud.is_null() {
        cloud = Value::Mapping(Mapping::new());
    }
    if let Some(sec) = secure
        .and_then(|s| s.get("clouds"))
        .and_then(|c| c.get(name))
    {
        merge(&mut cloud, sec);
    }
    if cloud.get("profile").is_some() {
        log::warn!(
            "cloud `{name}` uses `profile:` (a vendor profile); cloudprep does not ship vendor profiles, \
             so only the keys written in the file are used"
        );
    }
    Ok(cloud)
}

/// Find, read and merge the configuration of cloud `name`. Returns the merged cloud and a description of
/// where it came from.
pub fn load_cloud(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<(Value, String)> {
    let path = find(env, "OS_CLIENT_CONFIG_FILE", "clouds").ok_or_else(|| {
        let dirs: Vec<String> = search_dirs(env)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        anyhow!(
            "OS_CLOUD={name} is set but no clouds.yaml was found (looked in {})",
            dirs.join(", ")
        )
    })?;
    let clouds = read_yaml(&path)?;
    let secure_path = find(env, "OS_CLIENT_SECURE_FILE", "secure");
    let secure = match &secure_path {
        Some(p) => Some(read_yaml(p)?),
        None => None,
    };
    let cloud = select_cloud(&clouds, secure.as_ref(), name)
        .with_context(|| format!("reading cloud `{name}` from {}", path.display()))?;
    let mut from = format!("cloud `{name}` in {}", path.display());
    if let Some(p) = secure_path {
        from.push_str(&format!(" (+ {})", p.display()));
    }
    Ok((cloud, from))
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // serde_yaml's error text quotes no input, only positions: safe to show even for a file with secrets.
    serde_yaml::from_str(&text).with_context(|| format!("parsing {} as YAML", path.display()))
}

/// A string value at `key` (numbers and booleans are accepted and printed, as YAML authors write
/// `project_id: 1234` unquoted).
pub fn get_str(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = "\
# comment
clouds:
  mycloud:
    auth:
      auth_url: https://keystone.example.test:5000
      username: alice
      project_name: web
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionTwo
    interface: internal
  other:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000/v3
      application_credential_id: 0123abcd
";
    const SECURE: &str = "clouds:\n  mycloud:\n    auth:\n      password: \"s3cret: with colon\"\n";

    #[test]
    fn secure_is_merged_over_the_cloud() {
        let c: Value = serde_yaml::from_str(CLOUDS).unwrap();
        let s: Value = serde_yaml::from_str(SECURE).unwrap();
        let cloud = select_cloud(&c, Some(&s), "mycloud").unwrap();
        let auth = cloud.get("auth").unwrap();
        assert_eq!(
            get_str(auth, "password").as_deref(),
            Some("s3cret: with colon")
        );
        assert_eq!(get_str(auth, "username").as_deref(), Some("alice"));
        assert_eq!(get_str(&cloud, "region_name").as_deref(), Some("RegionTwo"));
    }

    #[test]
    fn unknown_cloud_names_the_defined_ones() {
        let c: Value = serde_yaml::from_str(CLOUDS).unwrap();
        let e = select_cloud(&c, None, "nope").unwrap_err().to_string();
        assert!(e.contains("mycloud, other"), "{e}");
        let e = select_cloud(&Value::Null, None, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `clouds:`"), "{e}");
    }

    #[test]
    fn lookup_order_and_override() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join(".config/openstack")).unwrap();
        std::fs::write(home.join(".config/openstack/clouds.yml"), CLOUDS).unwrap();
        std::fs::write(home.join(".config/openstack/secure.yaml"), SECURE).unwrap();
        let h = home.display().to_string();
        let env = move |k: &str| (k == "HOME").then(|| h.clone());
        let (cloud, from) = load_cloud(&env, "mycloud").unwrap();
        assert!(
            from.contains("clouds.yml") && from.contains("secure.yaml"),
            "{from}"
        );
        assert!(cloud.get("auth").unwrap().get("password").is_some());
        // OS_CLIENT_CONFIG_FILE wins.
        let f = d.path().join("explicit.yaml");
        std::fs::write(&f, "clouds:\n  x: {auth: {auth_url: http://h}}\n").unwrap();
        let fs = f.display().to_string();
        let env2 = move |k: &str| (k == "OS_CLIENT_CONFIG_FILE").then(|| fs.clone());
        let (cloud, _) = load_cloud(&env2, "x").unwrap();
        assert_eq!(
            get_str(cloud.get("auth").unwrap(), "auth_url").as_deref(),
            Some("http://h")
        );
        // A broken file is reported with its path and position, not its content.
        std::fs::write(&f, "clouds:\n  x: [unclosed\n  password: hunter2\n").unwrap();
        let e = format!("{:#}", load_cloud(&env2, "x").unwrap_err());
        assert!(e.contains("explicit.yaml") && !e.contains("hunter2"), "{e}");
    }
}
