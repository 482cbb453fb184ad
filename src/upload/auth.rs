//! Credentials (OS_* environment of an openrc, or OS_CLOUD + clouds.yaml) and Keystone v3 authentication:
//! the token request body, the service catalog and the image endpoint. Pure functions over strings and
//! JSON; the HTTP call lives in [`super::http`].

use super::clouds;
use super::secret::Secret;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Password {
        password: Secret,
    },
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        secret: Secret,
    },
    Token {
        token: Secret,
    },
}

/// Who and where. `Debug` is safe to log: every secret is a [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub auth_url: String,
    pub method: Method,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub region: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    pub cacert: Option<PathBuf>,
    pub insecure: bool,
    /// Where these came from, for messages ("OS_* environment", "cloud `x` in /path/clouds.yaml").
    pub origin: String,
}

impl Credentials {
    /// How to name the principal in messages (never a secret).
    pub fn who(&self) -> String {
        match &self.method {
            Method::ApplicationCredential { id, name, .. } => format!(
                "application credential {}",
                id.as_deref().or(name.as_deref()).unwrap_or("?")
            ),
            Method::Token { .. } => "the given token (OS_TOKEN)".to_string(),
            Method::Password { .. } => format!(
                "user {}",
                self.username
                    .as_deref()
                    .or(self.user_id.as_deref())
                    .unwrap_or("?")
            ),
        }
    }

    /// `{auth_url}/v3/auth/tokens` (`/v3` appended when the URL does not end with it).
    pub fn tokens_url(&self) -> String {
        format!("{}/auth/tokens", v3_url(&self.auth_url))
    }

    /// Read credentials the way the OpenStack clients do: OS_CLOUD selects a clouds.yaml entry, otherwise the
    /// OS_* variables of an openrc file. `env` is `std::env::var` in production.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(cloud) = get("OS_CLOUD") {
            let (c, origin) = clouds::load_cloud(env, &cloud)?;
            return from_cloud(&c, origin);
        }
        let auth_type = get("OS_AUTH_TYPE").unwrap_or_else(|| "password".into());
        let method = method_from(&auth_type, &|k| get(&format!("OS_{}", k.to_uppercase())))?;
        let insecure = get("OS_INSECURE").is_some_and(|v| truthy(&v));
        let c = Credentials {
            auth_url: get("OS_AUTH_URL").ok_or_else(|| {
                anyhow!(
                    "no OpenStack credentials: set OS_CLOUD (clouds.yaml) or source the cloud's openrc \
                     file (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...)"
                )
            })?,
            method,
            username: get("OS_USERNAME"),
            user_id: get("OS_USER_ID"),
            user_domain_name: get("OS_USER_DOMAIN_NAME"),
            user_domain_id: get("OS_USER_DOMAIN_ID"),
            project_name: get("OS_PROJECT_NAME").or_else(|| get("OS_TENANT_NAME")),
            project_id: get("OS_PROJECT_ID").or_else(|| get("OS_TENANT_ID")),
            project_domain_name: get("OS_PROJECT_DOMAIN_NAME"),
            project_domain_id: get("OS_PROJECT_DOMAIN_ID"),
            region: get("OS_REGION_NAME"),
            interface: normalize_interface(
                &get("OS_INTERFACE")
                    .or_else(|| get("OS_ENDPOINT_TYPE"))
                    .unwrap_or_else(|| "public".into()),
            )?,
            cacert: get("OS_CACERT").map(PathBuf::from),
            insecure,
            origin: "OS_* environment".into(),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let from = &self.origin;
        match &self.method {
            Method::Password { password } => {
                if self.username.is_none() && self.user_id.is_none() {
                    bail!("{from}: no user name (OS_USERNAME / auth.username) or user id");
                }
                if password.is_empty() {
                    bail!(
                        "{from}: no password (OS_PASSWORD / auth.password) for {}",
                        self.who()
                    );
                }
            }
            Method::ApplicationCredential { id, name, secret } => {
                if id.is_none() && name.is_none() {
                    bail!("{from}: application credential auth needs its id or name");
                }
                if id.is_none() && self.username.is_none() && self.user_id.is_none() {
                    bail!("{from}: an application credential given by name also needs the user name or id");
                }
                if secret.is_empty() {
                    bail!("{from}: no application credential secret");
                }
            }
            Method::Token { token } => {
                if token.is_empty() {
                    bail!("{from}: auth type token but no token");
                }
            }
        }
        if !(self.auth_url.starts_with("http://") || self.auth_url.starts_with("https://")) {
            bail!("{from}: auth URL `{}` is not an http(s) URL", self.auth_url);
        }
        Ok(())
    }

    /// The JSON body of `POST /v3/auth/tokens`. Contains secrets: never log it.
    pub fn token_request(&self) -> Value {
        let user_domain = domain(&self.user_domain_id, &self.user_domain_name);
        let user = |with_secret: Option<(&str, &Secret)>| {
            let mut u = serde_json::Map::new();
            if let Some(id) = &self.user_id {
                u.insert("id".into(), json!(id));
            } else if let Some(n) = &self.username {
                u.insert("name".into(), json!(n));
                u.insert("domain".into(), user_domain.clone());
            }
            if let Some((k, s)) = with_secret {
                u.insert(k.into(), json!(s.expose()));
            }
            Value::Object(u)
        };
        let identity = match &self.method {
            Method::Password { password } => json!({
                "methods": ["password"],
                "password": {"user": user(Some(("password", password)))}
            }),
            Method::ApplicationCredential { id, name, secret } => {
                let mut ac = serde_json::Map::new();
                if let Some(id) = id {
                    ac.insert("id".into(), json!(id));
                } else {
                    ac.insert("name".into(), json!(name));
                    ac.insert("user".into(), user(None));
                }
                ac.insert("secret".into(), json!(secret.expose()));
                json!({"methods": ["application_credential"], "application_credential": ac})
            }
            Method::Token { token } => {
                json!({"methods": ["token"], "token": {"id": token.expose()}})
            }
        };
        let mut auth = json!({ "identity": identity });
        // An application credential carries its own project scope; asking for one is an error.
        if !matches!(self.method, Method::ApplicationCredential { .. }) {
            if let Some(id) = &self.project_id {
                auth["scope"] = json!({"project": {"id": id}});
            } else if let Some(n) = &self.project_name {
                auth["scope"] = json!({"project": {
                    "name": n,
                    "domain": domain(&self.project_domain_id, &self.project_domain_name)
                }});
            }
        }
        json!({ "auth": auth })
    }
}

/// A domain reference; keystoneauth's default domain (`default`) when none is given.
fn domain(id: &Option<String>, name: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({"id": id}),
        (None, Some(n)) => json!({"name": n}),
        (None, None) => json!({"id": "default"}),
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// `public`, `publicURL`, `public_url` → `public`; anything else but the three interfaces is an error.
pub fn normalize_interface(s: &str) -> Result<String> {
    let l = s.trim().to_ascii_lowercase();
    let l = l.trim_end_matches("url").trim_end_matches('_');
    match l {
        "public" | "internal" | "admin" => Ok(l.to_string()),
        _ => bail!("interface `{s}` is not one of public, internal, admin"),
    }
}

/// `http://h:5000` → `http://h:5000/v3`; `http://h/identity/v3/` → `http://h/identity/v3`;
/// a v2.0 URL is turned into v3 (Keystone v2 is gone).
pub fn v3_url(auth_url: &str) -> String {
    let u = auth_url.trim().trim_end_matches('/');
    if u.ends_with("/v3") {
        u.to_string()
    } else if let Some(base) = u.strip_suffix("/v2.0") {
        format!("{base}/v3")
    } else {
        format!("{u}/v3")
    }
}

fn method_from(auth_type: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<Method> {
    let t = auth_type.trim().to_ascii_lowercase().replace('-', "_");
    Ok(match t.as_str() {
        "password" | "v3password" => Method::Password {
            password: Secret::new(get("password").unwrap_or_default()),
        },
        "v3applicationcredential" | "applicationcredential" | "application_credential" => {
            Method::ApplicationCredential {
                id: get("application_credential_id"),
                name: get("application_credential_name"),
                secret: Secret::new(get("application_credential_secret").unwrap_or_default()),
            }
        }
        "token" | "v3token" => Method::Token {
            token: Secret::new(get("token").unwrap_or_default()),
        },
        other => bail!(
            "auth type `{other}` is not supported (use password, v3applicationcredential or token)"
        ),
    })
}

/// Credentials from a merged clouds.yaml entry.
pub fn from_cloud(cloud: &serde_yaml::Value, origin: String) -> Result<Credentials> {
    let empty = serde_yaml::Value::Mapping(Default::default());
    let auth = cloud.get("auth").unwrap_or(&empty);
    let a = |k: &str| clouds::get_str(auth, k);
    let c = |k: &str| clouds::get_str(cloud, k);
    let auth_type = c("auth_type").unwrap_or_else(|| "password".into());
    let method = method_from(&auth_type, &|k| a(k))?;
    let verify = cloud.get("verify").and_then(serde_yaml::Value::as_bool);
    let insecure = cloud
        .get("insecure")
        .and_then(serde_yaml::Value::as_bool)
        .unwrap_or(false)
        || verify == Some(false);
    let region = c("region_name").or_else(|| {
        // `regions: [a, b]` or `regions: [{name: a}]`: the first is the default.
        cloud
            .get("regions")
            .and_then(|r| r.as_sequence())
            .and_then(|s| s.first())
            .and_then(|f| {
                f.as_str()
                    .map(String::from)
                    .or_else(|| clouds::get_str(f, "name"))
            })
    });
    let creds = Credentials {
        auth_url: a("auth_url").ok_or_else(|| anyhow!("{origin}: no auth.auth_url"))?,
        method,
        username: a("username"),
        user_id: a("user_id"),
        user_domain_name: a("user_domain_name").or_else(|| a("domain_name")),
        user_domain_id: a("user_domain_id").or_else(|| a("domain_id")),
        project_name: a("project_name").or_else(|| a("tenant_name")),
        project_id: a("project_id").or_else(|| a("tenant_id")),
        project_domain_name: a("project_domain_name").or_else(|| a("domain_name")),
        project_domain_id: a("project_domain_id").or_else(|| a("domain_id")),
        region,
        interface: normalize_interface(
            &c("interface")
                .or_else(|| c("endpoint_type"))
                .unwrap_or_else(|| "public".into()),
        )?,
        cacert: c("cacert").map(PathBuf::from),
        insecure,
        origin,
    };
    creds.validate()?;
    Ok(creds)
}

/// What Keystone answered, minus the token itself.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub catalog: Vec<Service>,
    pub user: String,
    pub project: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub kind: String,
    pub name: String,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub interface: String,
    pub region: Option<String>,
    pub url: String,
}

/// Parse the body of a successful `POST /v3/auth/tokens`.
pub fn parse_token_response(body: &str) -> Result<TokenInfo> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| anyhow!("Keystone's token response is not JSON: {e}"))?;
    let t = v
        .get("token")
        .ok_or_else(|| anyhow!("Keystone's token response has no `token` object"))?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let catalog = t
        .get("catalog")
        .and_then(Value::as_array)
        .map(|services| {
            services
                .iter()
                .map(|svc| Service {
                    kind: s(svc, "type").unwrap_or_default(),
                    name: s(svc, "name").unwrap_or_default(),
                    endpoints: svc
                        .get("endpoints")
                        .and_then(Value::as_array)
                        .map(|eps| {
                            eps.iter()
                                .filter_map(|e| {
                                    Some(Endpoint {
                                        interface: s(e, "interface")?,
                                        region: s(e, "region_id").or_else(|| s(e, "region")),
                                        url: s(e, "url")?,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TokenInfo {
        catalog,
        user: t
            .get("user")
            .and_then(|u| s(u, "name").or_else(|| s(u, "id")))
            .unwrap_or_default(),
        project: t
            .get("project")
            .and_then(|p| s(p, "name").or_else(|| s(p, "id"))),
        expires_at: s(t, "expires_at"),
    })
}

/// The URL of the `image` service for this interface and region.
pub fn image_endpoint(
    catalog: &[Service],
    interface: &str,
    region: Option<&str>,
) -> Result<String> {
    let images: Vec<&Service> = catalog.iter().filter(|s| s.kind == "image").collect();
    let offered = || {
        let v: Vec<String> = catalog
            .iter()
            .flat_map(|s| {
                s.endpoints.iter().map(move |e| {
                    format!(
                        "{} {} {}",
                        s.kind,
                        e.interface,
                        e.region.as_deref().unwrap_or("(no region)")
                    )
                })
            })
            .collect();
        if v.is_empty() {
            "the catalog is empty — is the token scoped to a project (OS_PROJECT_NAME / OS_PROJECT_ID)?"
                .to_string()
        } else {
            format!("it offers: {}", v.join(", "))
        }
    };
    let want = format!(
        "type image, interface {interface}{}",
        region.map(|r| format!(", region {r}")).unwrap_or_default()
    );
    let candidates: Vec<&Endpoint> = images
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.interface == interface)
        .filter(|e| region.is_none_or(|r| e.region.as_deref() == Some(r)))
        .collect();
    match candidates.first() {
        Some(e) => {
            let regions: std::collections::BTreeSet<_> = candidates
                .iter()
                .filter_map(|e| e.region.as_deref())
                .collect();
            if region.is_none() && regions.len() > 1 {
                log::warn!(
                    "the image service is offered in several regions ({}); using {} — set OS_REGION_NAME \
                     to choose",
                    regions.into_iter().collect::<Vec<_>>().join(", "),
                    e.region.as_deref().unwrap_or("?")
                );
            }
            Ok(e.url.trim_end_matches('/').to_string())
        }
        None => bail!(
            "the service catalog has no image endpoint ({want}); {}",
            offered()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn openrc_password_project_scoped() {
        let env = env_of(&[
            ("OS_AUTH_URL", "http://127.0.0.1:5000/v3/"),
            ("OS_USERNAME", "alice"),
            ("OS_PASSWORD", "pw-alice-123"),
            ("OS_PROJECT_NAME", "web"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_INTERFACE", "publicURL"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INSECURE", "True"),
        ]);
        let c = Credentials::from_env(&env).unwrap();
        assert_eq!(c.tokens_url(), "http://127.0.0.1:5000/v3/auth/tokens");
        assert_eq!(c.interface, "public");
        assert!(c.insecure);
        let b = c.token_request();
        assert_eq!(b["auth"]["identity"]["methods"][0], "password");
        assert_eq!(b["auth"]["identity"]["password"]["user"]["name"], "alice");
        assert_eq!(
            b["auth"]["identity"]["password"]["user"]["password"],
            "pw-alice-123"
        );
        assert_eq!(
            b["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        assert_eq!(b["auth"]["scope"]["project"]["name"], "web");
        assert_eq!(b["auth"]["scope"]["project"]["domain"]["id"], "default");
        // Debug output carries no password.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("pw-alice-123") && dbg.contains("redacted"),
            "{dbg}"
        );
        assert_eq!(c.who(), "user alice");
    }

    #[test]
    fn openrc_defaults_and_errors() {
        let c = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "https://k.example.test:5000"),
            ("OS_USERNAME", "bob"),
            ("OS_PASSWORD", "x-pass-x"),
            ("OS_PROJECT_ID", "abc123"),
        ]))
        .unwrap();
        assert_eq!(c.interface, "public");
        assert!(!c.insecure);
        let b = c.token_request();
        assert_eq!(
            b["auth"]["identity"]["password"]["user"]["domain"]["id"],
            "default"
        );
        assert_eq!(b["auth"]["scope"]["project"]["id"], "abc123");
        assert_eq!(c.tokens_url(), "https://k.example.test:5000/v3/auth/tokens");

        let e = Credentials::from_env(&env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("OS_CLOUD") && e.contains("openrc"), "{e}");
        let e = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://h"),
            ("OS_USERNAME", "u"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("no password"), "{e}");
        let e = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://h"),
            ("OS_AUTH_TYPE", "v3oidcpassword"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://h"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p-p-p-p"),
            ("OS_INTERFACE", "private"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("interface"), "{e}");
    }

    #[test]
    fn application_credential_is_not_scoped() {
        let c = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://127.0.0.1:5000"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac-id-1"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "ac-secret-value"),
            ("OS_PROJECT_NAME", "ignored"),
        ]))
        .unwrap();
        let b = c.token_request();
        assert_eq!(
            b["auth"]["identity"]["methods"][0],
            "application_credential"
        );
        assert_eq!(
            b["auth"]["identity"]["application_credential"]["id"],
            "ac-id-1"
        );
        assert_eq!(
            b["auth"]["identity"]["application_credential"]["secret"],
            "ac-secret-value"
        );
        assert!(b["auth"].get("scope").is_none());
        assert_eq!(c.who(), "application credential ac-id-1");
        // By name it needs the user.
        let e = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://h"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "n"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s-s-s-s"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("user"), "{e}");
        let c = Credentials::from_env(&env_of(&[
            ("OS_AUTH_URL", "http://h"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "n"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s-s-s-s"),
            ("OS_USERNAME", "carol"),
            ("OS_USER_DOMAIN_ID", "dom1"),
        ]))
        .unwrap();
        let b = c.token_request();
        let ac = &b["auth"]["identity"]["application_credential"];
        assert_eq!(ac["name"], "n");
        assert_eq!(ac["user"]["name"], "carol");
        assert_eq!(ac["user"]["domain"]["id"], "dom1");
    }

    #[test]
    fn clouds_yaml_entry() {
        let y: serde_yaml::Value = serde_yaml::from_str(
            "auth:\n  auth_url: http://127.0.0.1:5000/v2.0\n  username: u\n  password: pw-pw-pw\n  \
             project_id: 42\nregions:\n  - name: R2\n  - R3\nverify: false\ninterface: internal\n",
        )
        .unwrap();
        let c = from_cloud(&y, "test".into()).unwrap();
        assert_eq!(c.tokens_url(), "http://127.0.0.1:5000/v3/auth/tokens");
        assert_eq!(c.region.as_deref(), Some("R2"));
        assert_eq!(c.project_id.as_deref(), Some("42"));
        assert!(c.insecure);
        assert_eq!(c.interface, "internal");
        let y: serde_yaml::Value = serde_yaml::from_str(
            "auth_type: v3applicationcredential\nauth:\n  auth_url: http://h\n  \
             application_credential_id: i\n  application_credential_secret: s-e-c-r\n",
        )
        .unwrap();
        assert!(matches!(
            from_cloud(&y, "t".into()).unwrap().method,
            Method::ApplicationCredential { .. }
        ));
        let e = from_cloud(
            &serde_yaml::from_str("auth: {}").unwrap(),
            "cloud `x`".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth_url") && e.contains("cloud `x`"), "{e}");
    }

    const TOKEN: &str = r#"{"token": {"methods": ["password"], "user": {"name": "alice", "id": "u1"},
      "project": {"name": "web", "id": "p1"}, "expires_at": "2026-11-26T00:00:00Z",
      "catalog": [
        {"type": "identity", "name": "keystone", "endpoints": [
          {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://127.0.0.1:5000/v3/"}]},
        {"type": "image", "name": "glance", "endpoints": [
          {"interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.1:9292"},
          {"interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:9292/"},
          {"interface": "public", "region_id": "RegionTwo", "url": "https://img2.example.test/image"},
          {"broken": true}]}]}}"#;

    #[test]
    fn catalog_lookup() {
        let t = parse_token_response(TOKEN).unwrap();
        assert_eq!(t.user, "alice");
        assert_eq!(t.project.as_deref(), Some("web"));
        let cat = &t.catalog;
        assert_eq!(
            image_endpoint(cat, "public", Some("RegionOne")).unwrap(),
            "http://127.0.0.1:9292"
        );
        assert_eq!(
            image_endpoint(cat, "public", Some("RegionTwo")).unwrap(),
            "https://img2.example.test/image"
        );
        assert_eq!(
            image_endpoint(cat, "internal", None).unwrap(),
            "http://10.0.0.1:9292"
        );
        let e = image_endpoint(cat, "admin", None).unwrap_err().to_string();
        assert!(
            e.contains("no image endpoint") && e.contains("image public RegionTwo"),
            "{e}"
        );
        let e = image_endpoint(cat, "public", Some("Nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("region Nowhere"), "{e}");
        let e = image_endpoint(&[], "public", None).unwrap_err().to_string();
        assert!(e.contains("scoped"), "{e}");
        assert!(parse_token_response("<html>").is_err());
        assert!(parse_token_response("{}").is_err());
    }
}
