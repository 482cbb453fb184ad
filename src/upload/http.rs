//! The blocking HTTP(S) client: ureq with rustls (no OpenSSL, builds static for musl). TLS is verified against
//! the bundled web PKI roots plus the system bundle; `OS_CACERT` adds a CA file; `--insecure` turns
//! verification off. Every request is logged at debug level with secrets redacted.
//!
//! Redirects are never followed blindly: the auth token travels in `X-Auth-Token`, which ureq would carry
//! to any host a redirect names. A body-less request (GET, DELETE) follows a redirect to the same scheme,
//! host and port; any other redirect is an error naming where it points. A plain-http URL is warned about
//! once per address (the password, the token and the image cross the network in clear text).

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

/// Add the certificates of the first bundle in `bundles` that yields any (an empty, unreadable or
/// unparsable one is passed over); how many were added.
fn add_system_roots(roots: &mut rustls::RootCertStore, bundles: &[&str]) -> usize {
    for b in bundles {
        if let Ok(it) = CertificateDer::pem_file_iter(b) {
            let (added, _) = roots.add_parsable_certificates(it.filter_map(|c| c.ok()));
            log::debug!("{added} CA certificates from {b}");
            if added > 0 {
                return added;
            }
        }
    }
    0
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
    add_system_roots(&mut roots, SYSTEM_BUNDLES);
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
            // Redirects are handled by `send` (the token must not follow one to another host).
            .redirects(0)
            .build();
        Ok(Http { agent })
    }

    fn request(&self, method: &str, url: &str, token: Option<&Secret>) -> ureq::Request {
        warn_cleartext(url);
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

    /// A body-less request, following redirects within the same origin (at most [`MAX_REDIRECTS`]).
    fn bodyless(
        &self,
        method: &str,
        url: &str,
        token: Option<&Secret>,
    ) -> Result<Response, HttpError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let r = Self::finish(method, &url, self.request(method, &url, token).call())?;
            match redirect_target(&url, &r)? {
                None => return Ok(r),
                Some(next) => {
                    log::debug!("HTTP {method} {url} -> {} to {next}", r.status);
                    url = next;
                }
            }
        }
        Err(HttpError::Transport(format!(
            "{method} {url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    pub fn get(&self, url: &str, token: Option<&Secret>) -> Result<Response, HttpError> {
        self.bodyless("GET", url, token)
    }

    pub fn delete(&self, url: &str, token: Option<&Secret>) -> Result<Response, HttpError> {
        self.bodyless("DELETE", url, token)
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
        refuse_redirect("POST", url, Self::finish("POST", url, r)?)
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
        refuse_redirect("PUT", url, Self::finish("PUT", url, r.send(body))?)
    }
}

/// Redirects followed by a body-less request.
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port` of a URL (the port made explicit), lower-cased; None when it has no host.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?.to_ascii_lowercase();
    if hostport.is_empty() {
        return None;
    }
    let has_port = match hostport.rfind(':') {
        Some(i) => !hostport[i..].contains(']'),
        None => false,
    };
    Some(if has_port {
        format!("{scheme}://{hostport}")
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{scheme}://{hostport}:{port}")
    })
}

/// Where a 3xx answer to `url` points, when it may be followed with the token (same origin); an error for
/// any other redirect; None when the answer is not a redirect.
fn redirect_target(url: &str, r: &Response) -> Result<Option<String>, HttpError> {
    if !(300..400).contains(&r.status) {
        return Ok(None);
    }
    let Some(loc) = r.header("Location") else {
        return Err(HttpError::Status {
            code: r.status,
            message: "redirect without a Location".into(),
        });
    };
    let next = if loc.contains("://") {
        loc.to_string()
    } else if loc.starts_with('/') {
        match origin(url) {
            Some(o) => format!("{o}{loc}"),
            None => loc.to_string(),
        }
    } else {
        // Relative to the current path.
        let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
        format!("{base}/{loc}")
    };
    if origin(&next).is_some() && origin(&next) == origin(url) {
        return Ok(Some(next));
    }
    Err(HttpError::Status {
        code: r.status,
        message: redact(&format!(
            "redirected to {next}, another address: not followed (the auth token is only sent to the \
             address configured); use that URL if it is right"
        )),
    })
}

/// A request with a body is never replayed: a redirect is an error naming its target.
fn refuse_redirect(method: &str, url: &str, r: Response) -> Result<Response, HttpError> {
    if !(300..400).contains(&r.status) {
        return Ok(r);
    }
    let loc = r.header("Location").unwrap_or("(no Location)").to_string();
    Err(HttpError::Status {
        code: r.status,
        message: redact(&format!(
            "{method} {url} was redirected to {loc}: not followed; use the final URL"
        )),
    })
}

/// The warning for a plain-http URL, or None for https.
pub fn cleartext_warning(url: &str) -> Option<String> {
    if !url.to_ascii_lowercase().starts_with("http://") {
        return None;
    }
    let o = origin(url).unwrap_or_else(|| url.to_string());
    Some(format!(
        "{o} is plain http: the password, the auth token and the image cross the network unencrypted"
    ))
}

/// Warn about a plain-http URL, once per origin.
fn warn_cleartext(url: &str) {
    use std::sync::Mutex;
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Some(w) = cleartext_warning(url) {
        let o = origin(url).unwrap_or_default();
        let mut seen = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&o) {
            seen.push(o);
            log::warn!("{w}");
        }
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

    /// A private CA and a `localhost` certificate it signed (openssl), in `dir`.
    fn make_pki(dir: &Path) {
        let run = |args: &[&str]| {
            let o = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("running openssl (x.sh installs it)");
            assert!(o.status.success(), "openssl {args:?}: {o:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cloudprep test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ]);
    }

    /// A TLS handshake in memory between a client with `cfg` and a server presenting the leaf
    /// certificate: Ok when it completes, the client's error otherwise.
    fn handshake(cfg: rustls::ClientConfig, dir: &Path) -> Result<(), rustls::Error> {
        use rustls::pki_types::PrivateKeyDer;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("leaf.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let scfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().ok();
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn tls_setup() {
        let d = tempfile::tempdir().unwrap();
        make_pki(d.path());
        // Verified by default: a certificate from an unknown CA is refused.
        let e = handshake(tls_config(None, false).unwrap(), d.path()).unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
        // OS_CACERT adds the CA: accepted.
        handshake(
            tls_config(Some(&d.path().join("ca.pem")), false).unwrap(),
            d.path(),
        )
        .unwrap();
        // --insecure: accepted without the CA.
        handshake(tls_config(None, true).unwrap(), d.path()).unwrap();
        // System bundles: an empty or missing one is passed over for the next that has certificates.
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca = d.path().join("ca.pem");
        let n = add_system_roots(
            &mut roots,
            &[
                d.path().join("none.pem").to_str().unwrap(),
                empty.to_str().unwrap(),
                ca.to_str().unwrap(),
            ],
        );
        assert_eq!((n, roots.len()), (1, 1));
        // Bad or missing OS_CACERT bundles are errors naming the file.
        let f = d.path().join("bad.pem");
        std::fs::write(&f, "not a pem").unwrap();
        let e = format!("{:#}", tls_config(Some(&f), false).unwrap_err());
        assert!(e.contains("bad.pem") && e.contains("OS_CACERT"), "{e}");
        let e = format!(
            "{:#}",
            tls_config(Some(&d.path().join("missing.pem")), false).unwrap_err()
        );
        assert!(e.contains("missing.pem"), "{e}");
    }

    /// A loopback HTTP server answering each of `answers` to one connection; the requests it got.
    fn serve(
        l: std::net::TcpListener,
        answers: Vec<String>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            use std::io::Write;
            let mut got = Vec::new();
            for a in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap() == 1 {
                    req.push(b[0]);
                }
                got.push(String::from_utf8_lossy(&req).into_owned());
                s.write_all(a.as_bytes()).unwrap();
            }
            got
        })
    }

    fn answer(status: &str, extra: &str) -> String {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}")
    }

    #[test]
    fn the_token_never_follows_a_redirect_to_another_address() {
        let token = Secret::new("tok-redirect-test-5e1d");
        // The other address: 127.0.0.2 (loopback), which must never be contacted.
        let other = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        other.set_nonblocking(true).unwrap();
        let other_url = format!(
            "http://127.0.0.2:{}/stolen",
            other.local_addr().unwrap().port()
        );
        let here = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = here.local_addr().unwrap().port();
        let srv = serve(
            here,
            vec![
                // GET: same-origin redirect (followed, with the token), then one to the other address.
                answer("302 Found", "Location: /v2/next\r\n"),
                answer("302 Found", &format!("Location: {other_url}\r\n")),
                // PUT with a body: never replayed, even to the same origin.
                answer("307 Temporary Redirect", "Location: /v2/again\r\n"),
            ],
        );
        let http = Http::new(None, false).unwrap();
        let e = http
            .get(&format!("http://127.0.0.1:{port}/v2/images"), Some(&token))
            .err()
            .expect("an error")
            .to_string();
        assert!(
            e.contains("another address") && e.contains("127.0.0.2"),
            "{e}"
        );
        assert!(!e.contains(token.expose()), "{e}");
        let e = http
            .put_stream(
                &format!("http://127.0.0.1:{port}/v2/images/x/file"),
                Some(&token),
                Some(2),
                &b"{}"[..],
            )
            .err()
            .expect("an error")
            .to_string();
        assert!(
            e.contains("redirected to /v2/again") && e.contains("not followed"),
            "{e}"
        );
        let got = srv.join().unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("GET /v2/images "), "{got:?}");
        assert!(got[1].starts_with("GET /v2/next "), "{got:?}");
        for g in &got {
            assert!(
                g.contains(&format!("X-Auth-Token: {}", token.expose())),
                "{g}"
            );
        }
        // Nothing ever connected to the other address.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            matches!(other.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the redirect target was contacted"
        );
    }

    #[test]
    fn origins_and_cleartext_warnings() {
        assert_eq!(origin("http://H:5000/v3").as_deref(), Some("http://h:5000"));
        assert_eq!(origin("https://h/x?y").as_deref(), Some("https://h:443"));
        assert_eq!(origin("http://u:p@h/x").as_deref(), Some("http://h:80"));
        assert_eq!(origin("http://[::1]/x").as_deref(), Some("http://[::1]:80"));
        assert_eq!(
            origin("http://[::1]:81/x").as_deref(),
            Some("http://[::1]:81")
        );
        assert_ne!(origin("http://h/x"), origin("https://h/x"));
        assert!(cleartext_warning("https://keystone:5000/v3").is_none());
        let w = cleartext_warning("HTTP://keystone:5000/v3").unwrap();
        assert!(
            w.contains("http://keystone:5000") && w.contains("unencrypted"),
            "{w}"
        );
    }
}
