//! Glance v2: the image-create body (recommendations + overrides) and the few calls upload needs.

use super::http::{Http, HttpError, Response};
use super::secret::Secret;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Keys Glance takes as typed top-level attributes rather than free-form string properties.
const INT_KEYS: &[&str] = &["min_disk", "min_ram"];
const BOOL_KEYS: &[&str] = &["protected"];
/// Keys a client may not set (Glance computes them or forbids them: 403).
const RESERVED: &[&str] = &[
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "file",
    "schema",
    "self",
    "direct_url",
    "locations",
    "owner",
    "stores",
];

/// One `--property KEY=VALUE`.
pub fn parse_property(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--property `{s}`: expected KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() || k.len() > 255 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--property `{s}`: `{k}` is not a valid property name");
    }
    if v.len() > 65535 {
        bail!("--property {k}: value longer than Glance's 65535 characters");
    }
    if RESERVED.contains(&k) {
        bail!("--property {k}: Glance sets `{k}` itself and refuses it from clients");
    }
    if INT_KEYS.contains(&k) && v.trim().parse::<u64>().is_err() {
        bail!("--property {k}={v}: must be a whole number");
    }
    if BOOL_KEYS.contains(&k) && !matches!(v.trim(), "true" | "false") {
        bail!("--property {k}={v}: must be true or false");
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub name: String,
    pub disk_format: String,
    pub visibility: String,
    pub min_disk_gib: Option<u64>,
    pub min_ram_mib: Option<u64>,
    /// Recommended properties; `overrides` win.
    pub properties: BTreeMap<String, String>,
    pub overrides: Vec<(String, String)>,
}

impl ImageSpec {
    /// The `POST /v2/images` body. Properties are top-level string keys; user overrides win, including over
    /// min_disk/min_ram/name/visibility/disk_format.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("disk_format".into(), json!(self.disk_format));
        m.insert("container_format".into(), json!("bare"));
        m.insert("visibility".into(), json!(self.visibility));
        if let Some(d) = self.min_disk_gib {
            m.insert("min_disk".into(), json!(d));
        }
        if let Some(r) = self.min_ram_mib {
            m.insert("min_ram".into(), json!(r));
        }
        for (k, v) in &self.properties {
            m.insert(k.clone(), json!(v));
        }
        for (k, v) in &self.overrides {
            let val = if INT_KEYS.contains(&k.as_str()) {
                json!(v.trim().parse::<u64>().unwrap_or(0))
            } else if BOOL_KEYS.contains(&k.as_str()) {
                json!(v.trim() == "true")
            } else {
                json!(v)
            };
            m.insert(k.clone(), val);
        }
        Value::Object(m)
    }
}

/// What we need from an image record.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub status: String,
    pub size: Option<u64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub raw: Value,
}

pub fn parse_image(body: &str) -> Result<Image> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| anyhow!("the image service's answer is not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    Ok(Image {
        id: s("id").ok_or_else(|| anyhow!("the image service's answer has no image id"))?,
        status: s("status").unwrap_or_default(),
        size: v.get("size").and_then(Value::as_u64),
        checksum: s("checksum"),
        os_hash_algo: s("os_hash_algo"),
        os_hash_value: s("os_hash_value"),
        raw: v,
    })
}

/// `https://h:9292` → `https://h:9292/v2`; an endpoint that already names the version is kept.
pub fn v2_base(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v2") || e.ends_with("/v2.0") {
        e.to_string()
    } else {
        format!("{e}/v2")
    }
}

pub struct Glance<'a> {
    pub http: &'a Http,
    pub base: String,
    pub token: Secret,
}

impl Glance<'_> {
    pub fn image_url(&self, id: &str) -> String {
        format!("{}/images/{id}", self.base)
    }

    pub fn create(&self, spec: &ImageSpec) -> Result<Image, HttpError> {
        let r = self.http.post_json(
            &format!("{}/images", self.base),
            Some(&self.token),
            &spec.body(),
            true,
        )?;
        parse_image(&r.body).map_err(|e| HttpError::Transport(e.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<Image, HttpError> {
        let r = self.http.get(&self.image_url(id), Some(&self.token))?;
        parse_image(&r.body).map_err(|e| HttpError::Transport(e.to_string()))
    }

    pub fn delete(&self, id: &str) -> Result<Response, HttpError> {
        self.http.delete(&self.image_url(id), Some(&self.token))
    }

    pub fn upload(
        &self,
        id: &str,
        length: Option<u64>,
        body: impl std::io::Read,
    ) -> Result<Response, HttpError> {
        self.http.put_stream(
            &format!("{}/file", self.image_url(id)),
            Some(&self.token),
            length,
            body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties() {
        assert_eq!(parse_property("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(
            parse_property("os_distro=").unwrap(),
            ("os_distro".into(), "".into())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=v").is_err());
        assert!(parse_property("a b=c").is_err());
        assert!(parse_property("min_disk=ten").is_err());
        assert!(parse_property("protected=yes").is_err());
        let e = parse_property("os_hash_value=x").unwrap_err().to_string();
        assert!(e.contains("refuses"), "{e}");
    }

    #[test]
    fn body_has_recommendations_and_overrides_win() {
        let mut props = BTreeMap::new();
        props.insert("hw_disk_bus".to_string(), "virtio".to_string());
        props.insert("os_distro".to_string(), "debian".to_string());
        let spec = ImageSpec {
            name: "debian-12-migrated".into(),
            disk_format: "qcow2".into(),
            visibility: "private".into(),
            min_disk_gib: Some(3),
            min_ram_mib: Some(512),
            properties: props,
            overrides: vec![
                ("os_distro".into(), "ubuntu".into()),
                ("min_ram".into(), "1024".into()),
                ("protected".into(), "true".into()),
                ("owner_note".into(), "x".into()),
            ],
        };
        let b = spec.body();
        assert_eq!(b["container_format"], "bare");
        assert_eq!(b["disk_format"], "qcow2");
        assert_eq!(b["min_disk"], 3);
        assert_eq!(b["min_ram"], 1024);
        assert_eq!(b["protected"], true);
        assert_eq!(b["hw_disk_bus"], "virtio");
        assert_eq!(b["os_distro"], "ubuntu");
        assert_eq!(b["owner_note"], "x");
    }

    #[test]
    fn image_records_and_urls() {
        let i = parse_image(
            r#"{"id": "abc", "status": "active", "size": 10, "checksum": "md5", "os_hash_algo": "sha512",
                "os_hash_value": "h", "hw_disk_bus": "virtio"}"#,
        )
        .unwrap();
        assert_eq!(i.id, "abc");
        assert_eq!(i.size, Some(10));
        assert_eq!(i.os_hash_value.as_deref(), Some("h"));
        let i = parse_image(r#"{"id": "q", "status": "queued", "size": null, "checksum": null}"#)
            .unwrap();
        assert_eq!(i.size, None);
        assert!(parse_image("{}").is_err());
        assert!(parse_image("<html>").is_err());
        assert_eq!(v2_base("http://h:9292/"), "http://h:9292/v2");
        assert_eq!(v2_base("https://h/image"), "https://h/image/v2");
        assert_eq!(v2_base("https://h/image/v2/"), "https://h/image/v2");
    }
}
