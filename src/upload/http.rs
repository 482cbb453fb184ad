//! The blocking HTTP(S) client: ureq with rustls (no OpenSSL, builds static for musl). TLS is verified against
//! the bundled web PKI roots plus the system bundle; `OS_CACERT` adds a CA file; `--insecure` turns
//! verification off. Every request is logged at debug level with secrets redacted.

use super::secret::{redact, Secret};
use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// System CA bundles (Debian/Ubuntu first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Debug)]
pub enum HttpError {
    /// The server answered with an error status. `message` is the server's text, redacted and shortened.
    Status { code: u16, message: String },
    /// No answer: connection refused, reset, timed out, TLS failure.
    Transport(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Status { code, message } if message.is_empty() => write!(f, "HTTP {code}"),
            HttpError::Status { code, message } => write!(f, "HTTP {code}: {message}"),
            HttpError::Transport(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HttpError {}

pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Http {
    agent: ureq::Agent,
}

#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(cacert: Option<&Path>, insecure: bool) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    if insecure {
        log::warn!(
            "TLS certificate verification is OFF (--insecure / OS_INSECURE): anyone on the path can read \
             the credentials and the image"
        );
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for b in SYSTEM_BUNDLES {
        if let Ok(it) = CertificateDer::pem_file_iter(b) {
            let (added, _) = roots.add_parsable_certificates(it.filter_map(|c| c.ok()));
            log::debug!("{added} CA certificates from {b}");
            break;
        }
    }
    if let Some(ca) = cacert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading CA bundle {} (OS_CACERT)", ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing CA bundle {} (OS_CACERT)", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "CA bundle {} (OS_CACERT) holds no PEM certificate",
                ca.display()
            );
        }
        let (added, bad) = roots.add_parsable_certificates(certs);
        if added == 0 {
            anyhow::bail!(
                "CA bundle {} (OS_CACERT): none of its {bad} certificates is usable",
                ca.display()
            );
        }
        log::debug!("{added} CA certificates from {}", ca.display());
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Text of an error body: HTML tags stripped, whitespace collapsed, secrets redacted, at most 400 chars.
pub fn error_text(body: &str) -> String {
    let mut text = String::new();
    // Glance/Keystone JSON errors: {"error": {"message": ...}} or {"message": ...}.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(|m| m.as_str());
        if let Some(m) = m {
            text = m.to_string();
        }
    }
    if text.is_empty() {
        text = body.to_string();
    }
    {
        let src = std::mem::take(&mut text);
        let mut in_tag = false;
        for ch in src.chars() {
            match ch {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    text.push(' ');
                }
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
    }
    let mut t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // webob repeats the status line ("413 Request Entity Too Large 413 Request Entity Too Large ...").
    if let Some(first) = t.split(' ').take(3).collect::<Vec<_>>().join(" ").get(..) {
        let dup = format!("{first} {first}");
        if t.starts_with(&dup) {
            t = t[first.len() + 1..].to_string();
        }
    }
    let mut t = redact(&t);
    if t.chars().count() > 400 {
        t = t.chars().take(400).collect::<String>() + "…";
    }
    t
}

impl Http {
    pub fn new(cacert: Option<&Path>, insecure: bool) -> Result<Http> {
        let tls = tls_config(cacert, insecure)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(Duration::from_secs(30))
            // Glance answers the data PUT only after it has stored (and maybe inspected) everything.
            .timeout_read(Duration::from_secs(900))
            .timeout_write(Duration::from_secs(300))
            .user_agent(concat!("cloudprep/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Http { agent })
    }

    fn request(&self, method: &str, url: &str, token: Option<&Secret>) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, url)
            .set("Accept", "application/json");
        if let Some(t) = token {
            r = r.set("X-Auth-Token", t.expose());
        }
        log::debug!(
            "HTTP {method} {url} ({})",
            if token.is_some() {
                "with the auth token"
            } else {
                "no token"
            }
        );
        r
    }

    fn finish(
        method: &str,
        url: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<Response, HttpError> {
        match r {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp
                    .headers_names()
                    .into_iter()
                    .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
                    .collect::<Vec<_>>();
                let body = resp.into_string().map_err(|e| {
                    HttpError::Transport(redact(&format!(
                        "reading the answer to {method} {url}: {e}"
                    )))
                })?;
                log::debug!(
                    "HTTP {method} {url} -> {status}; headers: {}",
                    redact(
                        &headers
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                );
                Ok(Response {
                    status,
                    headers,
                    body,
                })
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let message = error_text(&body);
                log::debug!("HTTP {method} {url} -> {code}: {message}");
                Err(HttpError::Status { code, message })
            }
            Err(ureq::Error::Transport(t)) => {
                let m = redact(&format!("{method} {t}"));
                log::debug!("HTTP transport error: {m}");
                Err(HttpError::Transport(m))
            }
        }
    }

    pub fn get(&self, url: &str, token: Option<&Secret>) -> Result<Response, HttpError> {
        Self::finish("GET", url, self.request("GET", url, token).call())
    }

    pub fn delete(&self, url: &str, token: Option<&Secret>) -> Result<Response, HttpError> {
        Self::finish("DELETE", url, self.request("DELETE", url, token).call())
    }

    /// POST a JSON body. `log_body` false for bodies holding secrets (the Keystone token request).
    pub fn post_json(
        &self,
        url: &str,
        token: Option<&Secret>,
        body: &serde_json::Value,
        log_body: bool,
    ) -> Result<Response, HttpError> {
        if log_body {
            log::debug!("HTTP POST body: {}", redact(&body.to_string()));
        }
        let r = self
            .request("POST", url, token)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        Self::finish("POST", url, r)
    }

    /// PUT a streamed body: chunked unless `length` is known.
    pub fn put_stream(
        &self,
        url: &str,
        token: Option<&Secret>,
        length: Option<u64>,
        body: impl Read,
    ) -> Result<Response, HttpError> {
        let mut r = self
            .request("PUT", url, token)
            .set("Content-Type", "application/octet-stream");
        if let Some(n) = length {
            r = r.set("Content-Length", &n.to_string());
        }
        Self::finish("PUT", url, r.send(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_text(
                r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#
            ),
            "The request you have made requires authentication."
        );
        let html = "<html>\n <head>\n  <title>413 Request Entity Too Large</title>\n </head>\n <body>\n  \
                    <h1>413 Request Entity Too Large</h1>\n  Image exceeds the storage quota: 10 bytes.<br /><br />\n\n\n\n </body>\n</html>";
        let t = error_text(html);
        assert!(t.contains("Image exceeds the storage quota"), "{t}");
        assert!(!t.contains('<'), "{t}");
        let long = "x".repeat(1000);
        assert!(error_text(&long).chars().count() <= 401);
        assert!(!error_text("X-Auth-Token: abcdefgh").contains("abcdefgh"));
        assert_eq!(error_text(r#"{"message": "erred.<br /><br />"}"#), "erred.");
    }

    #[test]
    fn tls_setup() {
        assert!(tls_config(None, false).is_ok());
        assert!(tls_config(None, true).is_ok());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a pem").unwrap();
        let e = format!("{:#}", tls_config(Some(&f), false).unwrap_err());
        assert!(e.contains("ca.pem") && e.contains("OS_CACERT"), "{e}");
        let e = format!(
            "{:#}",
            tls_config(Some(&d.path().join("missing.pem")), false).unwrap_err()
        );
        assert!(e.contains("missing.pem"), "{e}");
    }
}
