//! `cloudprep upload`: export straight into the cloud's image service (Glance v2).
//!
//! Credentials come from the OS_* environment of an openrc file or from OS_CLOUD + clouds.yaml
//! ([`auth`], [`clouds`]); Keystone v3 gives a token and the image endpoint; the image is created with the
//! audit's recommendations ([`crate::recommend`]) plus `--property` overrides, then the data is streamed
//! (`PUT /v2/images/{id}/file`) while SHA-512 and MD5 are computed, and compared with what Glance
//! recorded once the image is active. Secrets never reach logs or errors ([`secret`]).

pub mod auth;
pub mod clouds;
pub mod glance;
pub mod http;
pub mod progress;
pub mod secret;
pub mod source;

use crate::export::{Consistency, ImageFormat};
use anyhow::{anyhow, bail, Result};
use auth::Credentials;
use glance::{Glance, Image, ImageSpec};
use http::{Http, HttpError};
use secret::{redact, Secret};
use source::Source;
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Private,
    Shared,
}

/// What `cloudprep upload` is asked to do (see the command's help for each field).
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Image name (default: derived from the OS).
    pub name: Option<String>,
    pub format: ImageFormat,
    pub visibility: Visibility,
    /// `KEY=VALUE` image properties that add to or override the recommended ones.
    pub properties: Vec<String>,
    /// `auto`, a block device or an image file to export.
    pub source: String,
    pub consistency: Option<Consistency>,
    /// Upload this already exported image as it is.
    pub file: Option<std::path::PathBuf>,
    pub insecure: bool,
    /// Upload attempts into the same queued image.
    pub retries: u32,
}

/// Upload the guest under `root` (its recommendations name the image's properties). Returns the exit code.
pub fn run(root: &std::path::Path, a: &UploadOptions) -> Result<i32> {
    // Every error leaving this module goes through the redactor, whatever produced it.
    upload(root, a).map_err(|e| anyhow!("{}", redact(&format!("{e:#}"))))
}

/// Log in to Keystone: the token (as a [`Secret`]) and what came with it.
pub fn authenticate(http: &Http, creds: &Credentials) -> Result<(Secret, auth::TokenInfo)> {
    let url = creds.tokens_url();
    let at = auth::v3_url(&creds.auth_url);
    log::info!("authenticating {} at {at} ({})", creds.who(), creds.origin);
    let resp = match http.post_json(&url, None, &creds.token_request(), false) {
        Ok(r) => r,
        Err(HttpError::Status { code: 401, message }) => bail!(
            "authentication failed for {} at {at} (Keystone answered 401{}); check the password or secret \
             and the user/project domain in {}",
            creds.who(),
            if message.is_empty() { String::new() } else { format!(": {message}") },
            creds.origin
        ),
        Err(HttpError::Status { code: 404, .. }) => bail!(
            "{at} is not a Keystone v3 endpoint (HTTP 404 for {url}); check OS_AUTH_URL / auth.auth_url"
        ),
        Err(e @ HttpError::Status { .. }) => {
            bail!("Keystone at {at} refused to authenticate {}: {e}", creds.who())
        }
        Err(e) => bail!("cannot reach Keystone at {at}: {e}"),
    };
    let token = resp
        .header("X-Subject-Token")
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or_else(|| anyhow!("Keystone at {at} answered {} without a token", resp.status))?;
    let info = auth::parse_token_response(&resp.body)?;
    log::info!(
        "authenticated as {} (project {}), token expires {}",
        info.user,
        info.project.as_deref().unwrap_or("none"),
        info.expires_at.as_deref().unwrap_or("?")
    );
    Ok((token, info))
}

fn default_name(facts: &crate::guest::facts::Facts) -> String {
    match &facts.os {
        Some(o) if !o.id.is_empty() && !o.version_id.is_empty() => {
            format!("{}-{}-migrated", o.id, o.version_id)
        }
        Some(o) if !o.id.is_empty() => format!("{}-migrated", o.id),
        _ => "migrated-vm".into(),
    }
}

/// The image to create: the audit's recommendations for the guest under `--root`, the format, and overrides.
pub fn image_spec(
    facts: &crate::guest::facts::Facts,
    a: &UploadOptions,
    virtual_size: Option<u64>,
) -> Result<ImageSpec> {
    let rec = crate::recommend::recommend(facts, facts.installed("qemu-guest-agent"));
    let overrides = a
        .properties
        .iter()
        .map(|p| glance::parse_property(p))
        .collect::<Result<Vec<_>>>()?;
    // Nova refuses a flavour whose disk is smaller than the image's virtual size: min_disk covers it.
    let from_size = virtual_size.map(|s| s.div_ceil(1 << 30).max(1));
    let min_disk_gib = match (rec.min_disk_gib, from_size) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(ImageSpec {
        name: a.name.clone().unwrap_or_else(|| default_name(facts)),
        disk_format: match a.format {
            ImageFormat::Raw => "raw".into(),
            ImageFormat::Qcow2 => "qcow2".into(),
        },
        visibility: match a.visibility {
            Visibility::Private => "private".into(),
            Visibility::Shared => "shared".into(),
        },
        min_disk_gib,
        min_ram_mib: rec.min_ram_mib,
        properties: rec.properties,
        overrides,
    })
}

/// A connection cut at the same point of the body twice in a row is a limit on the server's side, not a
/// network fault: Glance answers an image above `image_size_cap` (or the storage quota) with HTTP 413
/// and closes the connection while the client is still sending, so the client sees only a broken pipe.
/// Retrying would send the same bytes again to be cut at the same place. `lost`: this attempt failed
/// with the connection lost (a transport error), `why` says how.
fn same_cut(prev: Option<u64>, lost: bool, why: &str, sent: u64) -> Option<anyhow::Error> {
    let prev = prev?;
    if !lost {
        return None;
    }
    let slack = (16u64 << 20).max(prev / 50);
    (prev.abs_diff(sent) <= slack).then(|| {
        anyhow!(
            "the image service closed the connection after about {} of the data on two attempts in a row \
             ({why}): that is a limit on its side, not a network fault — most likely its image size limit \
             (image_size_cap) or the project's image storage quota, which Glance reports as HTTP 413 \
             \"too large\" while the upload is still being sent",
            human(sent)
        )
    })
}

/// Why one attempt failed, and whether another attempt can help.
enum Failure {
    Retry(String),
    Fatal(anyhow::Error),
}

fn classify_put(e: HttpError, size_hint: &str) -> Failure {
    match e {
        HttpError::Transport(m) => Failure::Retry(format!("connection lost: {m}")),
        HttpError::Status { code: 409, message } => Failure::Retry(format!(
            "the image service will not take data into this image now (HTTP 409: {message})"
        )),
        HttpError::Status { code: c @ (500 | 502 | 503 | 504), message } => {
            Failure::Retry(format!("the image service failed (HTTP {c}: {message})"))
        }
        HttpError::Status { code: 413, message } => Failure::Fatal(anyhow!(
            "the image service refused the data as too large (HTTP 413: {message}); {size_hint} — the \
             project's image storage quota or the service's image size limit is smaller than that"
        )),
        HttpError::Status { code: 415, message } => Failure::Fatal(anyhow!(
            "the image service refused the data format (HTTP 415: {message}); try the other --format"
        )),
        HttpError::Status { code: 400, message } => Failure::Fatal(anyhow!(
            "the image service rejected the data (HTTP 400: {message}); if it names the format, the \
             cloud may not accept this --format or found the data does not match it"
        )),
        HttpError::Status { code: 401, message } => Failure::Fatal(anyhow!(
            "the image service no longer accepts the token (HTTP 401: {message})"
        )),
        HttpError::Status { code: 403, message } => Failure::Fatal(anyhow!(
            "not allowed to upload image data (HTTP 403: {message})"
        )),
        e => Failure::Fatal(anyhow!("uploading the image data: {e}")),
    }
}

fn create_error(e: HttpError, spec: &ImageSpec) -> anyhow::Error {
    match e {
        HttpError::Status { code: 403, message } => anyhow!(
            "not allowed to create a {} image (HTTP 403: {message}){}",
            spec.visibility,
            if spec.visibility == "private" { "" } else { "; try --visibility private" }
        ),
        HttpError::Status { code: 413, message } => {
            anyhow!("the image service refused a new image: quota exceeded (HTTP 413: {message})")
        }
        HttpError::Status { code: 400, message } => anyhow!(
            "the image service refused the image record (HTTP 400: {message}); check --property values"
        ),
        e => anyhow!("creating the image: {e}"),
    }
}

/// After a failed attempt: make sure `id` names an image that will take data, deleting and recreating
/// one that went to `saving`/`killed`.
fn ensure_queued(gl: &Glance, id: &mut Option<String>, spec: &ImageSpec) -> Result<(), Failure> {
    if let Some(cur) = id.clone() {
        match gl.get(&cur) {
            Ok(img) if img.status == "queued" => {
                log::warn!("image {cur} is `queued` again: retrying the upload into it");
                return Ok(());
            }
            Ok(img) => {
                log::warn!(
                    "image {cur} is now `{}` and will not take data again: deleting it and creating a new image",
                    img.status
                );
                match gl.delete(&cur) {
                    Ok(_) | Err(HttpError::Status { code: 404, .. }) => {}
                    Err(e) => log::warn!(
                        "could not delete image {cur} ({e}): delete it yourself (openstack image delete {cur})"
                    ),
                }
                *id = None;
            }
            Err(HttpError::Status { code: 404, .. }) => {
                log::warn!("image {cur} is gone: creating a new image");
                *id = None;
            }
            Err(e @ HttpError::Transport(_)) => {
                return Err(Failure::Retry(format!("checking image {cur}: {e}")))
            }
            Err(e) => return Err(Failure::Fatal(anyhow!("checking image {cur}: {e}"))),
        }
    }
    match gl.create(spec) {
        Ok(img) => {
            log::warn!("created image {} to upload into", img.id);
            *id = Some(img.id);
            Ok(())
        }
        Err(e @ HttpError::Transport(_)) => Err(Failure::Retry(format!("creating the image: {e}"))),
        Err(e) => Err(Failure::Fatal(create_error(e, spec))),
    }
}

/// Wait until Glance has finished with the data: `active` (ok), `killed`/`deleted` (error). Bounded.
fn wait_active(gl: &Glance, id: &str, limit: Duration) -> Result<Image> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut transient = 0;
    loop {
        match gl.get(id) {
            Ok(img) => match img.status.as_str() {
                "active" => return Ok(img),
                "killed" | "deleted" | "pending_delete" => bail!(
                    "the image service marked image {id} `{}` after receiving the data",
                    img.status
                ),
                s => log::debug!("image {id} is `{s}`"),
            },
            Err(HttpError::Transport(m)) if transient < 5 => {
                transient += 1;
                log::warn!("checking image {id}: {m}");
            }
            Err(e) => bail!("checking image {id}: {e}"),
        }
        if start.elapsed() > limit {
            bail!(
                "image {id} did not become active within {} s after the upload",
                limit.as_secs()
            );
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Compare what we sent with what Glance recorded.
pub fn verify_hashes(img: &Image, sent: &source::Digests) -> Result<Vec<String>> {
    let mut ok = Vec::new();
    if let Some(size) = img.size {
        if size != sent.bytes {
            bail!(
                "image {} holds {size} bytes but {} were sent",
                img.id,
                sent.bytes
            );
        }
        ok.push("size".to_string());
    }
    match (img.os_hash_algo.as_deref(), img.os_hash_value.as_deref()) {
        (Some("sha512"), Some(v)) => {
            if !v.eq_ignore_ascii_case(&sent.sha512) {
                bail!(
                    "SHA-512 mismatch for image {}: the image service recorded {v}, cloudprep sent {}",
                    img.id,
                    sent.sha512
                );
            }
            ok.push("sha512".into());
        }
        (Some(algo), Some(_)) => log::warn!(
            "the image service hashes with {algo}, not sha512: comparing the MD5 checksum only"
        ),
        _ => {}
    }
    if let Some(c) = img.checksum.as_deref() {
        if !c.eq_ignore_ascii_case(&sent.md5) {
            bail!(
                "MD5 mismatch for image {}: the image service recorded {c}, cloudprep sent {}",
                img.id,
                sent.md5
            );
        }
        ok.push("md5".into());
    }
    if !ok.iter().any(|k| k == "sha512" || k == "md5") {
        log::warn!(
            "the image service recorded no checksum for image {}: the data is unverified",
            img.id
        );
    }
    Ok(ok)
}

fn human(n: u64) -> String {
    progress::human_bytes(n)
}

fn upload(root_dir: &std::path::Path, a: &UploadOptions) -> Result<i32> {
    if a.file.is_none() {
        // Before any thread exists: a signal during a frozen export reaches the thread that thaws.
        crate::export::freeze::install_handlers();
    }
    let src = match &a.file {
        Some(f) => Source::file(f, a.format)?,
        None => Source::export(root_dir, a),
    };
    let creds = Credentials::from_env(&|k| std::env::var(k).ok())?;
    log::debug!("credentials: {creds:?}");
    let http = Http::new(creds.cacert.as_deref(), a.insecure || creds.insecure)?;

    let root = crate::guest::root::Root::new(root_dir)?;
    let facts = crate::guest::facts::Facts::gather(&root);
    let spec = image_spec(&facts, a, src.virtual_size())?;

    let (token, info) = authenticate(&http, &creds)?;
    let endpoint = auth::image_endpoint(&info.catalog, &creds.interface, creds.region.as_deref())?;
    let gl = Glance {
        http: &http,
        base: glance::v2_base(&endpoint),
        token,
    };
    log::info!("image service: {}", gl.base);

    let first = gl.create(&spec).map_err(|e| create_error(e, &spec))?;
    eprintln!(
        "cloudprep: created image {} `{}` ({}, {}); uploading {}",
        first.id,
        spec.name,
        spec.disk_format,
        spec.visibility,
        src.describe()
    );
    let mut id = Some(first.id);
    let attempts = a.retries.saturating_add(1);
    let started = Instant::now();
    let mut last = String::new();
    // Where the previous attempt's connection was cut (bytes of the body sent).
    let mut cut: Option<u64> = None;
    let mut result = None;
    for attempt in 1..=attempts {
        if attempt > 1 {
            let wait = Duration::from_secs(1u64 << (attempt - 2).min(5));
            log::warn!(
                "upload attempt {}/{attempts} failed: {last}; retrying in {} s",
                attempt - 1,
                wait.as_secs()
            );
            std::thread::sleep(wait);
            if let Err(f) = ensure_queued(&gl, &mut id, &spec) {
                match f {
                    Failure::Retry(m) => {
                        last = m;
                        continue;
                    }
                    Failure::Fatal(e) => return Err(give_up(&gl, id.as_deref(), e)),
                }
            }
        }
        let cur = id.clone().expect("an image id after ensure_queued");
        match src.upload(&gl, &cur) {
            Ok(d) => {
                result = Some((cur, d));
                break;
            }
            Err(source::AttemptError::Put(e, sent)) => {
                let lost = matches!(e, HttpError::Transport(_));
                match classify_put(e, &src.size_hint()) {
                    Failure::Retry(m) if src.rerunnable() => {
                        if let Some(e) = same_cut(cut, lost, &m, sent) {
                            return Err(give_up(&gl, id.as_deref(), e));
                        }
                        cut = lost.then_some(sent);
                        last = m;
                    }
                    Failure::Retry(m) => {
                        return Err(give_up(
                            &gl,
                            id.as_deref(),
                            anyhow!("{m} (the source cannot be read again)"),
                        ))
                    }
                    Failure::Fatal(e) => return Err(give_up(&gl, id.as_deref(), e)),
                }
            }
            Err(source::AttemptError::Source(e)) => return Err(give_up(&gl, id.as_deref(), e)),
        }
    }
    let Some((id, digests)) = result else {
        return Err(give_up(
            &gl,
            id.as_deref(),
            anyhow!("upload failed {attempts} times; last error: {last}"),
        ));
    };
    let secs = started.elapsed().as_secs_f64();
    let img =
        wait_active(&gl, &id, Duration::from_secs(600)).map_err(|e| give_up(&gl, Some(&id), e))?;
    let verified = verify_hashes(&img, &digests).map_err(|e| give_up(&gl, Some(&id), e))?;
    println!(
        "image {id} `{}` is active: {} {} sent in {:.1} s ({}/s); verified: {}",
        spec.name,
        human(digests.bytes),
        spec.disk_format,
        secs,
        human((digests.bytes as f64 / secs.max(0.001)) as u64),
        if verified.is_empty() {
            "nothing (no checksum recorded)".into()
        } else {
            verified.join(", ")
        }
    );
    println!("  sha512 {}", digests.sha512);
    println!("  md5    {}", digests.md5);
    let body = spec.body();
    let props: Vec<String> = body
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "name" | "container_format"))
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map(String::from).unwrap_or(v.to_string())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("  {}", props.join(" "));
    Ok(crate::exit::EXIT_OK)
}

/// Final failure: delete the half-made image (or name it when that fails too) and say which.
fn give_up(gl: &Glance, id: Option<&str>, e: anyhow::Error) -> anyhow::Error {
    let Some(id) = id else {
        return e;
    };
    // Glance may still be busy with the aborted upload (it answers 409/500 for a moment): try a few times.
    let mut deleted = gl.delete(id);
    for wait in [1, 2, 4, 8] {
        match &deleted {
            Err(HttpError::Status { code, .. }) if *code == 409 || *code >= 500 => {}
            Err(HttpError::Transport(_)) if wait <= 2 => {}
            _ => break,
        }
        log::warn!(
            "deleting image {id}: {}; trying again in {wait} s",
            deleted
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(wait));
        deleted = gl.delete(id);
    }
    match deleted {
        Ok(_) | Err(HttpError::Status { code: 404, .. }) => e.context(format!(
            "upload into image {id} failed; the incomplete image was deleted"
        )),
        Err(de) => e.context(format!(
            "upload into image {id} failed and the incomplete image could not be deleted ({de}); \
             delete it with `openstack image delete {id}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_cut_twice_at_the_same_place_is_a_server_limit() {
        let lost = "connection lost: PUT http://x/v2/images/1/file: Broken pipe (os error 32)";
        let mib = 1u64 << 20;
        // First cut: nothing to compare with yet.
        assert!(same_cut(None, true, lost, 512 * mib).is_none());
        // Same place (within the socket buffers' slack): a limit, said so.
        let e = same_cut(Some(512 * mib), true, lost, 515 * mib)
            .unwrap()
            .to_string();
        assert!(
            e.contains("two attempts in a row") && e.contains("image_size_cap"),
            "{e}"
        );
        // Elsewhere: a flaky network, retried.
        assert!(same_cut(Some(512 * mib), true, lost, 300 * mib).is_none());
        // Not a cut connection (a 503): retried as before.
        assert!(same_cut(
            Some(512 * mib),
            false,
            "the image service failed (HTTP 503: x)",
            512 * mib
        )
        .is_none());
    }

    fn st(code: u16, m: &str) -> HttpError {
        HttpError::Status {
            code,
            message: m.into(),
        }
    }

    #[test]
    fn put_failures_are_classified() {
        let retry = |e| matches!(classify_put(e, "the image is 1 GiB"), Failure::Retry(_));
        assert!(retry(HttpError::Transport(
            "connection reset by peer".into()
        )));
        assert!(retry(st(503, "")));
        assert!(retry(st(
            409,
            "Image status transition from saving to saving is not allowed"
        )));
        for (code, want) in [
            (413, "too large"),
            (415, "format"),
            (400, "rejected the data"),
            (401, "token"),
            (403, "not allowed"),
        ] {
            match classify_put(st(code, "server says no"), "the image is 1 GiB") {
                Failure::Fatal(e) => {
                    let m = e.to_string();
                    assert!(
                        m.contains(want) && m.contains("server says no"),
                        "{code}: {m}"
                    );
                    if code == 413 {
                        assert!(
                            m.contains("the image is 1 GiB") && m.contains("quota"),
                            "{m}"
                        );
                    }
                }
                Failure::Retry(m) => panic!("{code} must not be retried: {m}"),
            }
        }
    }

    fn image(size: u64, md5: &str, sha: &str) -> Image {
        Image {
            id: "i".into(),
            status: "active".into(),
            size: Some(size),
            checksum: Some(md5.into()),
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some(sha.into()),
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn hashes_must_match() {
        let d = source::Digests {
            bytes: 3,
            sha512: "aa".into(),
            md5: "bb".into(),
        };
        assert_eq!(
            verify_hashes(&image(3, "BB", "aa"), &d).unwrap(),
            ["size", "sha512", "md5"]
        );
        assert!(verify_hashes(&image(4, "bb", "aa"), &d)
            .unwrap_err()
            .to_string()
            .contains("4 bytes"));
        assert!(verify_hashes(&image(3, "bb", "ff"), &d)
            .unwrap_err()
            .to_string()
            .contains("SHA-512"));
        assert!(verify_hashes(&image(3, "cc", "aa"), &d)
            .unwrap_err()
            .to_string()
            .contains("MD5"));
        let mut other = image(3, "bb", "zz");
        other.os_hash_algo = Some("sha256".into());
        assert_eq!(verify_hashes(&other, &d).unwrap(), ["size", "md5"]);
    }
}
