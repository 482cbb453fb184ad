//! What is uploaded: an image file as it is (`--file`), or the bundled export streamed through a pipe
//! (`--source`). Each attempt reads the source from the start and hashes what it sends.

use super::glance::Glance;
use super::http::HttpError;
use super::progress::{human_bytes, Progress};
use super::UploadOptions;
use crate::export::ImageFormat;
use crate::export::{ExportSummary, StreamOptions};
use anyhow::{anyhow, bail, Context, Result};
use md5::Md5;
use sha2::{Digest, Sha512};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// What was sent in one successful attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub bytes: u64,
    pub sha512: String,
    pub md5: String,
}

pub enum AttemptError {
    /// The HTTP request failed (the server, the network), after this many bytes of the body were
    /// handed to the connection.
    Put(HttpError, u64),
    /// The source failed (a read error, the export): not retried.
    Source(anyhow::Error),
}

/// The container format an image file holds, from its first bytes (None: no known header, i.e. raw).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"QFI\xfb") {
        Some("qcow2")
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if head.starts_with(b"vhdxfile") {
        Some("vhdx")
    } else if head.starts_with(b"conectix") {
        Some("vhd")
    } else if head.len() >= 68 && head[64..68] == [0x7f, 0x10, 0xda, 0xbe] {
        Some("vdi")
    } else {
        None
    }
}

/// The guest-visible size of an image from its header: qcow2's size field; raw is the file's size.
pub fn virtual_size(head: &[u8], file_size: u64) -> Option<u64> {
    match sniff(head) {
        Some("qcow2") if head.len() >= 32 => {
            Some(u64::from_be_bytes(head[24..32].try_into().ok()?))
        }
        None => Some(file_size),
        _ => None,
    }
}

pub enum Source {
    File {
        path: PathBuf,
        size: u64,
        virtual_size: Option<u64>,
    },
    Export {
        opts: StreamOptions,
    },
}

/// Hashes and counts everything read through it; remembers a read error of the source.
struct Hashing<'a, R> {
    inner: R,
    sha: Sha512,
    md5: Md5,
    bytes: u64,
    progress: &'a mut Progress,
    error: Option<String>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sha.update(&buf[..n]);
                self.md5.update(&buf[..n]);
                self.bytes += n as u64;
                self.progress.add(n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

impl<'a, R: Read> Hashing<'a, R> {
    fn new(inner: R, progress: &'a mut Progress) -> Self {
        Hashing {
            inner,
            sha: Sha512::new(),
            md5: Md5::new(),
            bytes: 0,
            progress,
            error: None,
        }
    }
    fn digests(self) -> Digests {
        Digests {
            bytes: self.bytes,
            sha512: hex::encode(self.sha.finalize()),
            md5: hex::encode(self.md5.finalize()),
        }
    }
}

enum Msg {
    Data(Vec<u8>),
    Failed(String),
    Done,
}

/// The export's side of the pipe: buffers 1 MiB chunks into a bounded channel.
struct ChanWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChanWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Msg::Data(data)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload stopped reading the export",
            )
        })
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// The upload's side of the pipe. A sender that disappears without `Done` is an error, never an EOF:
/// a truncated image must not be accepted as complete.
struct ChanReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::Done) => self.done = true,
                Ok(Msg::Failed(e)) => return Err(io::Error::other(format!("export failed: {e}"))),
                Err(_) => return Err(io::Error::other("the export stopped without finishing")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Run `export` on a producer thread, feeding `consume` through a bounded pipe. Returns the consumer's result
/// and the export's.
pub fn pipe_through<T>(
    export: impl FnOnce(&mut (dyn Write + Send)) -> Result<ExportSummary> + Send + 'static,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> (T, Result<ExportSummary>) {
    let (tx, rx) = sync_channel::<Msg>(8);
    let producer = std::thread::spawn(move || {
        let mut w = ChanWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        match export(&mut w) {
            Ok(s) => match w.flush() {
                Ok(()) => {
                    let _ = w.tx.send(Msg::Done);
                    Ok(s)
                }
                Err(e) => Err(anyhow!(e)),
            },
            Err(e) => {
                let _ = w.tx.send(Msg::Failed(format!("{e:#}")));
                Err(e)
            }
        }
    });
    let mut reader = ChanReader {
        rx,
        cur: Vec::new(),
        pos: 0,
        done: false,
    };
    let out = consume(&mut reader);
    // Unblock a producer still sending, then collect it.
    drop(reader);
    let exported = producer
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the export thread panicked")));
    (out, exported)
}

impl Source {
    pub fn file(path: &Path, format: ImageFormat) -> Result<Source> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not a regular file (use --source for a block device)",
                path.display()
            );
        }
        let size = meta.len();
        if size == 0 {
            bail!("{} is empty", path.display());
        }
        let mut head = vec![0u8; 4096];
        let mut got = 0;
        while got < head.len() {
            let n = f
                .read(&mut head[got..])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        head.truncate(got);
        let kind = sniff(&head);
        match (format, kind) {
            (ImageFormat::Raw, None) | (ImageFormat::Qcow2, Some("qcow2")) => {}
            (ImageFormat::Raw, Some(k)) => bail!(
                "{} is a {k} image, not raw: pass --format qcow2 for qcow2, or convert it first \
                 (the cloud would boot the {k} container as a raw disk)",
                path.display()
            ),
            (ImageFormat::Qcow2, k) => bail!(
                "{} is {}, not qcow2: pass --format raw, or convert it first",
                path.display(),
                k.map(|k| format!("a {k} image"))
                    .unwrap_or_else(|| "raw data".into())
            ),
        }
        Ok(Source::File {
            path: path.to_path_buf(),
            size,
            virtual_size: virtual_size(&head, size),
        })
    }

    /// An export of the disk of the guest under `root` (`auto`), or of `a.source`.
    pub fn export(root: &Path, a: &UploadOptions) -> Source {
        Source::Export {
            opts: StreamOptions {
                root: root.to_path_buf(),
                source: a.source.clone(),
                format: a.format,
                compress: crate::export::Compression::None,
                consistency: a.consistency,
                threads: None,
                fs_skip: true,
            },
        }
    }

    pub fn virtual_size(&self) -> Option<u64> {
        match self {
            Source::File { virtual_size, .. } => *virtual_size,
            Source::Export { .. } => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File { path, size, .. } => {
                format!("{} ({})", path.display(), human_bytes(*size))
            }
            Source::Export { opts } => format!("an export of {}", opts.source),
        }
    }

    pub fn size_hint(&self) -> String {
        match self {
            Source::File { size, .. } => {
                format!("the image is {} ({size} bytes)", human_bytes(*size))
            }
            Source::Export { .. } => "the exported image's size is known only at the end".into(),
        }
    }

    /// Whether a failed attempt can read the source again from the start (a file or a disk can).
    pub fn rerunnable(&self) -> bool {
        match self {
            Source::File { .. } => true,
            Source::Export { opts } => opts.source != "-",
        }
    }

    /// One attempt: stream the whole source into image `id`.
    pub fn upload(&self, gl: &Glance, id: &str) -> Result<Digests, AttemptError> {
        match self {
            Source::File { path, size, .. } => {
                let f = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))
                    .map_err(AttemptError::Source)?;
                let mut progress = Progress::new("upload", Some(*size));
                let mut h = Hashing::new(io::BufReader::with_capacity(CHUNK, f), &mut progress);
                let r = gl.upload(id, Some(*size), &mut h);
                if let Some(e) = h.error.take() {
                    progress.finish(false);
                    return Err(AttemptError::Source(anyhow!(
                        "reading {}: {e}",
                        path.display()
                    )));
                }
                let d = h.digests();
                progress.finish(r.is_ok());
                r.map_err(|e| AttemptError::Put(e, d.bytes))?;
                if d.bytes != *size {
                    return Err(AttemptError::Source(anyhow!(
                        "{} changed during the upload: sent {} bytes, expected {size}",
                        path.display(),
                        d.bytes
                    )));
                }
                Ok(d)
            }
            Source::Export { opts } => {
                let opts2 = opts.clone();
                let mut progress = Progress::new("export+upload", None);
                let ((put, digests), exported) = pipe_through(
                    move |w| crate::export::export_stream(&opts2, w),
                    |r| {
                        let mut h = Hashing::new(r, &mut progress);
                        let put = gl.upload(id, None, &mut h);
                        (put, h.digests())
                    },
                );
                progress.finish(put.is_ok() && exported.is_ok());
                match exported {
                    Err(e) => Err(AttemptError::Source(e.context("exporting the disk"))),
                    Ok(s) => {
                        log::info!(
                            "export: virtual size {}, {} read, {} skipped as free, {} written, consistency {}",
                            human_bytes(s.virtual_size),
                            human_bytes(s.bytes_read),
                            human_bytes(s.bytes_skipped_free),
                            human_bytes(s.bytes_written),
                            s.consistency
                        );
                        put.map_err(|e| AttemptError::Put(e, digests.bytes))?;
                        Ok(digests)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        let mut q = b"QFI\xfb\0\0\0\x03".to_vec();
        q.resize(32, 0);
        q[24..32].copy_from_slice(&(5u64 << 30).to_be_bytes());
        assert_eq!(sniff(&q), Some("qcow2"));
        assert_eq!(virtual_size(&q, 1000), Some(5 << 30));
        assert_eq!(sniff(b"KDMV\x01"), Some("vmdk"));
        assert_eq!(sniff(b"vhdxfile...."), Some("vhdx"));
        let mut vdi = vec![0u8; 72];
        vdi[64..68].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(sniff(&vdi), Some("vdi"));
        assert_eq!(sniff(&[0u8; 512]), None);
        assert_eq!(virtual_size(&[0u8; 512], 1234), Some(1234));
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn file_format_must_match() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        std::fs::write(&raw, vec![0u8; 8192]).unwrap();
        assert!(Source::file(&raw, ImageFormat::Raw).is_ok());
        let e = format!(
            "{:#}",
            Source::file(&raw, ImageFormat::Qcow2).err().unwrap()
        );
        assert!(e.contains("raw data") && e.contains("--format raw"), "{e}");
        let q = d.path().join("disk.qcow2");
        let mut hdr = b"QFI\xfb\0\0\0\x03".to_vec();
        hdr.resize(512, 0);
        std::fs::write(&q, &hdr).unwrap();
        let e = format!("{:#}", Source::file(&q, ImageFormat::Raw).err().unwrap());
        assert!(
            e.contains("qcow2 image") && e.contains("--format qcow2"),
            "{e}"
        );
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(Source::file(&empty, ImageFormat::Raw).is_err());
        assert!(Source::file(d.path(), ImageFormat::Raw).is_err());
        assert!(Source::file(&d.path().join("missing"), ImageFormat::Raw).is_err());
    }

    fn summary() -> ExportSummary {
        ExportSummary::default()
    }

    #[test]
    fn pipe_delivers_everything_in_order() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let (got, ex) = pipe_through(
            move |w| {
                for c in d2.chunks(7777) {
                    w.write_all(c)?;
                }
                Ok(summary())
            },
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map(|_| v)
            },
        );
        assert!(ex.is_ok());
        assert_eq!(got.unwrap(), data);
    }

    #[test]
    fn export_failure_is_a_read_error_not_eof() {
        let (got, ex) = pipe_through(
            |w| {
                w.write_all(&[1u8; 3 << 20])?;
                bail!("disk read error at sector 42")
            },
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)
            },
        );
        let e = got.unwrap_err().to_string();
        assert!(e.contains("sector 42"), "{e}");
        assert!(ex.is_err());
        // A panicking export must not look like a complete stream either.
        let (got, ex) = pipe_through(
            |w| {
                w.write_all(&[1u8; 10])?;
                w.flush()?;
                panic!("boom")
            },
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)
            },
        );
        assert!(got.is_err());
        assert!(ex.is_err());
    }

    #[test]
    fn consumer_stopping_stops_the_export() {
        let (n, ex) = pipe_through(
            |w| loop {
                w.write_all(&[0u8; 65536])?;
            },
            |r| {
                let mut buf = [0u8; 1000];
                r.read(&mut buf).unwrap()
            },
        );
        assert!(n > 0);
        let e = format!("{:#}", ex.unwrap_err());
        assert!(e.contains("stopped reading"), "{e}");
    }
}
