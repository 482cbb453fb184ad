//! `cloudprep export`: the bundled disk converter.
//!
//! The source (`auto` = the whole disk holding the root directory, through partitions, LVM and dm) is
//! read once, sequentially. The partition table (MBR with logical partitions, GPT) and every ext2/3/4
//! filesystem's block bitmaps tell which blocks are free: those are exported as zeros without being
//! read, as are swap pages after the header page. Everything else is read and zero-detected. Zeros
//! become holes (raw) or unallocated clusters (qcow2).
//!
//! Output formats and streaming (`-o -`):
//! * raw to a file: sparse file; raw to a pipe: every byte (zeros written), single pass.
//! * qcow2 to a file: single pass, optionally zlib (raw deflate, 4 KiB window) or zstd compressed.
//! * qcow2 to a pipe: uncompressed only; an allocation pass first (reads the used blocks once more)
//!   lays out all metadata before the data. Compressed qcow2 cannot stream.
//!
//! Modules: [`source`] (finding/opening the disk), [`partition`], [`ext4`], [`swap`], [`layout`] (what
//! is free), [`pipeline`] (reader, workers, hasher, in-order writer), [`raw`], [`qcow2`], [`freeze`]
//! (consistency on a running VM), [`progress`].

pub mod ext4;
pub mod freeze;
pub mod layout;
pub mod output;
pub mod partition;
pub mod pipeline;
pub mod progress;
pub mod qcow2;
pub mod raw;
pub mod source;
pub mod swap;

use anyhow::{bail, Context, Result};
use pipeline::Sink as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CLUSTER: usize = 65536;

#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zlib,
    Zstd,
}

/// Which SHA-256 the export summary carries.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// Of the output as written: what `sha256sum FILE` prints on the exported file (or on the bytes of
    /// `-o -`).
    Output,
    /// Of the guest-visible disk content (free blocks and swap pages as zeros): every byte of the disk,
    /// zeros included.
    Content,
    /// No digest.
    None,
}

#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Freeze,
    Readonly,
    None,
}

/// Choices print as they are spelled on the command line and in the configuration.
macro_rules! display_as_value {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match clap::ValueEnum::to_possible_value(self) {
                    Some(v) => f.write_str(v.get_name()),
                    None => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
display_as_value!(ImageFormat, Compression, Consistency);

/// What `cloudprep export` is asked to do (see the command's help for each field).
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `auto` (the disk holding the root), a block device, or an image file.
    pub source: String,
    pub format: ImageFormat,
    pub compress: Compression,
    pub consistency: Option<Consistency>,
    pub threads: Option<usize>,
    /// Read the output back after writing and compare its guest content with what was read from the
    /// source (and a qcow2's bytes with its output digest).
    pub verify: bool,
    /// Copy free filesystem blocks and unused swap too.
    pub no_fs_skip: bool,
    pub digest: Digest,
    /// Output file, or `-` for standard output.
    pub output: String,
}

/// Options for an export to any writer (used by `export -o -` and by `upload`).
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The guest whose disk `auto` means (`/` on the running system, or where an image is mounted).
    pub root: PathBuf,
    /// `auto`, a block device or an image file.
    pub source: String,
    pub format: ImageFormat,
    pub compress: Compression,
    pub consistency: Option<Consistency>,
    pub threads: Option<usize>,
    /// Skip free ext2/3/4 blocks and unused swap pages.
    pub fs_skip: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportSummary {
    /// The disk exported (a device or an image file).
    pub source: String,
    /// The output file, or `-` for standard output.
    pub output: String,
    /// Guest-visible disk size.
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub bytes_skipped_free: u64,
    pub bytes_zero: u64,
    pub bytes_written: u64,
    /// What `sha256` is the digest of: `output` (the exported bytes as written: what `sha256sum` prints
    /// on the file or on the bytes of `-o -`), `content` (the guest-visible disk content) or `none`.
    pub digest: &'static str,
    /// Hex SHA-256 named by `digest`; empty for `none`.
    pub sha256: String,
    pub seconds: f64,
    pub consistency: String,
}

/// The summary's name for a digest kind (also its JSON value).
pub fn digest_name(d: Digest) -> &'static str {
    match d {
        Digest::Output => "output",
        Digest::Content => "content",
        Digest::None => "none",
    }
}

impl ExportSummary {
    pub fn render(&self) -> String {
        use progress::human;
        let digest = match self.digest {
            "output" => format!(
                "digest         output: SHA-256 of the {} as written (what sha256sum prints)\nsha256         {}\n",
                if self.output == "-" { "bytes on standard output" } else { "output file" },
                self.sha256
            ),
            "content" => format!(
                "digest         content: SHA-256 of the guest-visible disk (free blocks as zeros)\nsha256         {}\n",
                self.sha256
            ),
            _ => "digest         none (--digest none)\n".to_string(),
        };
        format!(
            "source         {}\ndisk size      {} ({} bytes)\nread           {}\nskipped (free) {}\nzero           {}\nwritten        {}\ntime           {:.1} s\nconsistency    {}\n{digest}output         {}\n",
            self.source,
            human(self.virtual_size),
            self.virtual_size,
            human(self.bytes_read),
            human(self.bytes_skipped_free),
            human(self.bytes_zero),
            human(self.bytes_written),
            self.seconds,
            self.consistency,
            if self.output == "-" { "standard output" } else { &self.output },
        )
    }
}

/// Most compression threads an export uses (the default, all cores, is capped there too).
pub const MAX_THREADS: usize = 64;

fn threads(t: Option<usize>) -> Result<usize> {
    match t {
        Some(n) if n == 0 || n > MAX_THREADS => {
            bail!("--threads {n}: choose 1 to {MAX_THREADS} (or leave it out for all cores)")
        }
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)),
    }
}

/// How long filesystems may stay frozen before the watchdog thaws them and aborts the export:
/// `CLOUDPREP_FREEZE_TIMEOUT` seconds (0 thaws at once), default one hour.
fn freeze_timeout() -> Result<Duration> {
    match std::env::var("CLOUDPREP_FREEZE_TIMEOUT") {
        Err(std::env::VarError::NotPresent) => Ok(Duration::from_secs(3600)),
        Ok(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| {
            anyhow::anyhow!("CLOUDPREP_FREEZE_TIMEOUT={v:?}: expected a number of seconds")
        }),
        Err(e) => bail!("CLOUDPREP_FREEZE_TIMEOUT: {e}"),
    }
}

/// Open the source, check consistency requirements and hold its filesystems (freeze/read-only).
fn prepare(
    spec: &str,
    root: &Path,
    consistency: Option<Consistency>,
) -> Result<(source::Source, Option<freeze::Guard>, String, bool)> {
    let timeout = freeze_timeout()?;
    let src = source::open(spec, root)?;
    let mounted = src.mounted()?;
    let rw: Vec<&source::Mount> = mounted.iter().filter(|m| m.read_write).collect();
    let names = rw
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (guard, label) = match consistency {
        _ if rw.is_empty() => (None, "source not mounted read-write".to_string()),
        None => bail!(
            "{} has filesystems mounted read-write ({names}): choose --consistency freeze (FIFREEZE during the copy), \
             readonly (remount read-only) or none (copy anyway; the image may be inconsistent)",
            src.path.display()
        ),
        Some(Consistency::None) => {
            eprintln!("cloudprep: warning: copying {names} while mounted read-write (--consistency none)");
            (None, format!("none (mounted read-write: {names}; the copy may be inconsistent)"))
        }
        Some(Consistency::Freeze) => {
            (Some(freeze::hold(&mounted, true, timeout)?), format!("freeze ({names})"))
        }
        Some(Consistency::Readonly) => {
            (Some(freeze::hold(&mounted, false, timeout)?), format!("readonly ({names})"))
        }
    };
    src.invalidate_cache();
    // Nothing can write to the source during the copy unless `none` let it stay mounted read-write.
    let stable = rw.is_empty() || guard.is_some();
    Ok((src, guard, label, stable))
}

/// What one pass of the pipeline reads and how it encodes.
struct Copy<'a> {
    src: &'a source::Source,
    fs_skip: bool,
    compress: Compression,
    threads: usize,
    /// The source cannot change during the copy (see [`pipeline::run`]).
    stable: bool,
}

impl Copy<'_> {
    /// Read the whole source once into `sink` (the layout of free blocks is inspected anew for each
    /// pass); `digest`: compute the SHA-256 of the guest content.
    fn pass(
        &self,
        sink: &mut dyn pipeline::Sink,
        prog: &mut progress::Progress,
        digest: bool,
    ) -> Result<pipeline::Totals> {
        let t = std::time::Instant::now();
        let mut layout = layout_for(self.src, self.fs_skip)?;
        log::debug!(
            "export: layout inspected in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        pipeline::run(
            &self.src.file,
            &mut layout,
            self.src.size,
            self.compress,
            self.threads,
            sink,
            prog,
            digest,
            self.stable,
        )
    }
}

fn layout_for(src: &source::Source, fs_skip: bool) -> Result<layout::Layout> {
    let l = if fs_skip {
        layout::Layout::inspect(&src.file, src.size)?
    } else {
        layout::Layout::plain(src.size)
    };
    for n in &l.notes {
        log::info!("{n}");
    }
    Ok(l)
}

/// Export to a writer that cannot seek (a pipe, an HTTP body). Raw streams directly; qcow2 needs an
/// allocation pass first to lay out its metadata (uncompressed only). No digest: the caller (`upload`)
/// hashes what it sends itself.
pub fn export_stream(opts: &StreamOptions, out: &mut (dyn Write + Send)) -> Result<ExportSummary> {
    export_stream_root(opts, &opts.root, Digest::None, out)
}

/// Passes writes through and hashes them (the output digest of a qcow2 stream: its bytes in order).
struct HashingWriter<'a> {
    inner: &'a mut (dyn Write + Send),
    sha: Option<sha2::Sha256>,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        if let Some(h) = &mut self.sha {
            sha2::Digest::update(h, &b[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn export_stream_root(
    opts: &StreamOptions,
    root: &Path,
    digest: Digest,
    out: &mut (dyn Write + Send),
) -> Result<ExportSummary> {
    if opts.format == ImageFormat::Qcow2 && opts.compress != Compression::None {
        bail!("compressed qcow2 cannot be streamed (its layout depends on the compressed sizes): write to a file, or stream raw/uncompressed qcow2");
    }
    if opts.format == ImageFormat::Raw && opts.compress != Compression::None {
        bail!("--compress applies to qcow2 only");
    }
    let nthreads = threads(opts.threads)?;
    freeze::install_handlers();
    let (src, guard, label, stable) = prepare(&opts.source, root, opts.consistency)?;
    let mut prog = progress::Progress::new(src.size, false);
    let copy = Copy {
        src: &src,
        fs_skip: opts.fs_skip,
        compress: Compression::None,
        threads: nthreads,
        stable,
    };
    let (t, written, sha) = match opts.format {
        ImageFormat::Raw => {
            // A raw stream is the guest content byte for byte: the pipeline's hasher (on its own core)
            // gives the output digest too.
            let mut sink = raw::RawStream::new(out);
            let t = copy.pass(&mut sink, &mut prog, digest != Digest::None)?;
            let sha = t.sha256.clone();
            (t, sink.written(), sha)
        }
        ImageFormat::Qcow2 => {
            eprintln!("cloudprep: qcow2 stream: allocation pass");
            let mut map = qcow2::MapSink {
                map: qcow2::AllocMap::new(src.size),
            };
            copy.pass(
                &mut map,
                &mut progress::Progress::new(src.size, true),
                false,
            )?;
            // The stream is written strictly in order: its bytes are hashed as they go out.
            let mut hw = HashingWriter {
                inner: out,
                sha: (digest == Digest::Output).then(<sha2::Sha256 as sha2::Digest>::new),
            };
            let mut sink = qcow2::Qcow2Stream::new(&mut hw, src.size, map.map)?;
            let t = copy.pass(&mut sink, &mut prog, digest == Digest::Content)?;
            let written = sink.written();
            drop(sink);
            let sha = match hw.sha.take() {
                Some(h) => hex::encode(sha2::Digest::finalize(h)),
                None => t.sha256.clone(),
            };
            (t, written, sha)
        }
    };
    drop(guard);
    Ok(ExportSummary {
        source: src.path.display().to_string(),
        output: "-".into(),
        virtual_size: src.size,
        bytes_read: t.read,
        bytes_skipped_free: t.free,
        bytes_zero: t.zero,
        bytes_written: written,
        digest: digest_name(digest),
        sha256: sha,
        seconds: prog.elapsed(),
        consistency: label,
    })
}

/// Export the source disk of the guest under `root` to a file or standard output; prints the summary.
pub fn run(root: &Path, a: &ExportOptions) -> Result<i32> {
    if a.output == "-" {
        if a.verify {
            bail!("--verify needs an output file");
        }
        let opts = stream_options(root, a);
        output::check_stdout(&source::open(&opts.source, root)?)?;
        // `Stdout` (not its `!Send` lock): the pipeline writes from its writer thread.
        let mut lock = std::io::stdout();
        let s = export_stream_root(&opts, root, a.digest, &mut lock)?;
        lock.flush()?;
        eprint!("{}", s.render());
        return Ok(crate::exit::EXIT_OK);
    }
    let s = export_file(root, a)?;
    print!("{}", s.render());
    Ok(crate::exit::EXIT_OK)
}

fn stream_options(root: &Path, a: &ExportOptions) -> StreamOptions {
    StreamOptions {
        root: root.to_path_buf(),
        source: a.source.clone(),
        format: a.format,
        compress: a.compress,
        consistency: a.consistency,
        threads: a.threads,
        fs_skip: !a.no_fs_skip,
    }
}

/// Export to the file `a.output` (written as a temporary file in its directory, fsynced, renamed).
pub fn export_file(root: &Path, a: &ExportOptions) -> Result<ExportSummary> {
    let opts = stream_options(root, a);
    if a.format == ImageFormat::Raw && a.compress != Compression::None {
        bail!("--compress applies to qcow2 only");
    }
    let nthreads = threads(opts.threads)?;
    freeze::install_handlers();
    let out = PathBuf::from(&a.output);
    // The output is checked and opened (a file: its temporary; a device: in place) before freezing.
    let output = {
        let src = source::open(&opts.source, root)?;
        output::Output::open(&out, &src, a.format)?
    };
    let (src, guard, label, stable) = prepare(&opts.source, root, opts.consistency)?;
    let file = output.file.try_clone()?;
    let mut prog = progress::Progress::new(src.size, false);
    let copy = Copy {
        src: &src,
        fs_skip: opts.fs_skip,
        compress: a.compress,
        threads: nthreads,
        stable,
    };
    // A sparse raw file reads back (holes as zeros) as exactly the guest content, in guest order: the
    // pipeline's hasher gives its output digest. A qcow2 file is not written in file order (L2 tables,
    // refcounts, L1 and the header go in place when complete, the header last), so its output digest is
    // taken by reading the finished file back from the page cache while it is being fsynced.
    // `--verify` compares the output's independent read-back with the guest content's digest.
    let content = a.digest == Digest::Content
        || a.verify
        || (a.digest == Digest::Output && a.format == ImageFormat::Raw);
    let out_file = file.try_clone()?;
    let mut sink: Box<dyn pipeline::Sink> = match a.format {
        ImageFormat::Raw => Box::new(raw::RawFile::new(
            file,
            src.size,
            output.device_size().is_some(),
        )),
        ImageFormat::Qcow2 => Box::new(
            qcow2::Qcow2File::new(file, src.size, a.compress)?
                .in_place(output.device_size().is_some()),
        ),
    };
    let totals = copy
        .pass(sink.as_mut(), &mut prog, content)
        .map_err(|e| output.explain(e))?;
    let written = sink.written();
    drop(sink);
    let file = out_file;
    drop(guard);
    let hash_file = a.digest == Digest::Output && a.format == ImageFormat::Qcow2;
    let in_place = output.device_size().is_some();
    let file_sha = sync_and_hash(&file, hash_file, in_place.then_some(written))?;
    let sha256 = match a.digest {
        Digest::Output if hash_file => file_sha.clone().unwrap_or_default(),
        Digest::None => String::new(),
        _ => totals.sha256.clone(),
    };
    let summary = ExportSummary {
        source: src.path.display().to_string(),
        output: out.display().to_string(),
        virtual_size: src.size,
        bytes_read: totals.read,
        bytes_skipped_free: totals.free,
        bytes_zero: totals.zero,
        bytes_written: written,
        digest: digest_name(a.digest),
        sha256,
        seconds: prog.elapsed(),
        consistency: label,
    };
    if a.verify {
        verify(
            &file,
            a.format,
            &summary,
            &totals.sha256,
            file_sha.as_deref(),
            in_place.then_some(written),
        )?;
    }
    output.commit()?;
    Ok(summary)
}

/// fsync `file`; with `hash`, meanwhile hash its bytes (read back from the page cache while the kernel
/// writes them out: the digest costs no time beyond the sync when the disk is the slower of the two).
/// `len`: the bytes of the image on a block device (which is larger).
fn sync_and_hash(file: &std::fs::File, hash: bool, len: Option<u64>) -> Result<Option<String>> {
    std::thread::scope(|s| {
        let hasher = hash.then(|| {
            s.spawn(|| {
                let t = std::time::Instant::now();
                let r = file_sha256(file, len);
                log::debug!(
                    "export: output hashed in {:.2} s",
                    t.elapsed().as_secs_f64()
                );
                r
            })
        });
        let t = std::time::Instant::now();
        file.sync_all().context("syncing the output")?;
        log::debug!(
            "export: output synced in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        hasher
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the output hasher panicked"))?
                    .context("reading the output back for its digest")
            })
            .transpose()
    })
}

/// `--verify`: read the fsynced output back from the disk (its pages are dropped from the page cache
/// first) through an independent reader, and compare its guest content with the digest of what was read
/// from the source (`content`), and its bytes with the output digest (`file_sha`, when computed).
/// `len`: on a block device, the bytes of the qcow2 image (a raw image is the disk's size).
fn verify(
    file: &std::fs::File,
    format: ImageFormat,
    s: &ExportSummary,
    content: &str,
    file_sha: Option<&str>,
    len: Option<u64>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain advice on an open descriptor; the pages are clean after the fsync.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let (vsize, sha) = match format {
        // A raw file's bytes are its guest content: one read checks both digests.
        ImageFormat::Raw => raw_hash(file, len.map(|_| s.virtual_size))?,
        ImageFormat::Qcow2 => qcow2::guest_hash(file)?,
    };
    if vsize != s.virtual_size || sha != content {
        bail!(
            "verification failed: the output reads back as {vsize} bytes of guest content with sha256 {sha}, expected {} bytes with {content}",
            s.virtual_size
        );
    }
    if let Some(want) = file_sha {
        let got = file_sha256(file, len)?;
        if got != want {
            bail!("verification failed: the output file reads back with sha256 {got}, but {want} was written");
        }
    }
    eprintln!("cloudprep: verified: the output reads back with the guest content that was read from the source");
    Ok(())
}

/// SHA-256 of a whole file, as `sha256sum` computes it (holes read as zeros), or of its first `len` bytes.
pub fn file_sha256(f: &std::fs::File, len: Option<u64>) -> Result<String> {
    Ok(raw_hash(f, len)?.1)
}

/// SHA-256 of the first `len` bytes of `f` (default: all of a regular file).
fn raw_hash(f: &std::fs::File, len: Option<u64>) -> Result<(u64, String)> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let size = match len {
        Some(n) => n,
        None => f.metadata()?.len(),
    };
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 * pipeline::CHUNK];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(digest: Digest, output: &str) -> ExportSummary {
        ExportSummary {
            source: "/dev/vda".into(),
            output: output.into(),
            virtual_size: 1 << 30,
            digest: digest_name(digest),
            sha256: if digest == Digest::None {
                String::new()
            } else {
                "ab".repeat(32)
            },
            consistency: "readonly (/)".into(),
            ..Default::default()
        }
    }

    #[test]
    fn summary_names_its_digest_in_text_and_json() {
        let t = summary(Digest::Output, "/srv/vm.qcow2").render();
        assert!(
            t.contains("digest         output: SHA-256 of the output file as written"),
            "{t}"
        );
        assert!(
            t.contains(&format!("sha256         {}\n", "ab".repeat(32))),
            "{t}"
        );
        assert!(t.starts_with("source         /dev/vda\n"), "{t}");
        assert!(t.ends_with("output         /srv/vm.qcow2\n"), "{t}");
        let t = summary(Digest::Output, "-").render();
        assert!(t.contains("SHA-256 of the bytes on standard output"), "{t}");
        assert!(t.ends_with("output         standard output\n"), "{t}");
        let t = summary(Digest::Content, "x.raw").render();
        assert!(
            t.contains("digest         content: SHA-256 of the guest-visible disk"),
            "{t}"
        );
        let t = summary(Digest::None, "x.raw").render();
        assert!(t.contains("digest         none (--digest none)\n"), "{t}");
        assert!(!t.contains("sha256 "), "{t}");
        for (d, name) in [
            (Digest::Output, "output"),
            (Digest::Content, "content"),
            (Digest::None, "none"),
        ] {
            let j = serde_json::to_value(summary(d, "x.qcow2")).unwrap();
            assert_eq!(j["digest"], name);
            assert_eq!(j["sha256"].as_str().unwrap().is_empty(), d == Digest::None);
        }
    }

    #[test]
    fn file_sha256_is_sha256sum_with_holes_as_zeros() {
        use sha2::Digest as _;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"data", 5 << 20).unwrap();
        f.set_len(9 << 20).unwrap();
        let mut want = vec![0u8; 9 << 20];
        want[5 << 20..(5 << 20) + 4].copy_from_slice(b"data");
        assert_eq!(
            file_sha256(&f, None).unwrap(),
            hex::encode(sha2::Sha256::digest(&want))
        );
    }
}
