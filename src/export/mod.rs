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

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
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
    /// Read the output back and compare it with the source after writing.
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
    /// Guest-visible disk size.
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub bytes_skipped_free: u64,
    pub bytes_zero: u64,
    pub bytes_written: u64,
    /// SHA-256 of the guest-visible disk content (hex); empty when not computed (`--digest none`).
    pub sha256: String,
    pub seconds: f64,
    pub consistency: String,
}

impl ExportSummary {
    pub fn render(&self) -> String {
        use progress::human;
        format!(
            "disk size      {} ({} bytes)\nread           {}\nskipped (free) {}\nzero           {}\nwritten        {}\ntime           {:.1} s\nconsistency    {}\n{}\n",
            human(self.virtual_size),
            self.virtual_size,
            human(self.bytes_read),
            human(self.bytes_skipped_free),
            human(self.bytes_zero),
            human(self.bytes_written),
            self.seconds,
            self.consistency,
            if self.sha256.is_empty() {
                "digest         not computed (--digest none)".to_string()
            } else {
                format!("sha256         {}", self.sha256)
            }
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
/// allocation pass first to lay out its metadata (uncompressed only).
pub fn export_stream(opts: &StreamOptions, out: &mut dyn Write) -> Result<ExportSummary> {
    export_stream_root(opts, &opts.root, true, out)
}

fn export_stream_root(
    opts: &StreamOptions,
    root: &Path,
    digest: bool,
    out: &mut dyn Write,
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
    let totals = match opts.format {
        ImageFormat::Raw => {
            let mut sink = raw::RawStream::new(out);
            let t = copy.pass(&mut sink, &mut prog, digest)?;
            (t, sink.written())
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
            let mut sink = qcow2::Qcow2Stream::new(out, src.size, map.map)?;
            let t = copy.pass(&mut sink, &mut prog, digest)?;
            (t, sink.written())
        }
    };
    drop(guard);
    let (t, written) = totals;
    Ok(ExportSummary {
        virtual_size: src.size,
        bytes_read: t.read,
        bytes_skipped_free: t.free,
        bytes_zero: t.zero,
        bytes_written: written,
        sha256: t.sha256,
        seconds: prog.elapsed(),
        consistency: label,
    })
}

/// Export the source disk of the guest under `root` to a file or standard output; prints the summary.
pub fn run(root: &Path, a: &ExportOptions) -> Result<i32> {
    let opts = StreamOptions {
        root: root.to_path_buf(),
        source: a.source.clone(),
        format: a.format,
        compress: a.compress,
        consistency: a.consistency,
        threads: a.threads,
        fs_skip: !a.no_fs_skip,
    };
    let digest = a.digest == Digest::Sha256;
    if a.verify && !digest {
        bail!("--verify compares digests: it cannot be combined with --digest none");
    }
    if a.format == ImageFormat::Raw && a.compress != Compression::None {
        bail!("--compress applies to qcow2 only");
    }
    if a.output == "-" {
        if a.verify {
            bail!("--verify needs an output file");
        }
        output::check_stdout(&source::open(&opts.source, root)?)?;
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let s = export_stream_root(&opts, root, digest, &mut lock)?;
        lock.flush()?;
        eprint!("{}", s.render());
        return Ok(crate::exit::EXIT_OK);
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
        .pass(sink.as_mut(), &mut prog, digest)
        .map_err(|e| output.explain(e))?;
    let written = sink.written();
    drop(sink);
    let file = out_file;
    drop(guard);
    let t = std::time::Instant::now();
    file.sync_all().context("syncing the output")?;
    log::debug!(
        "export: output synced in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let secs = prog.elapsed();
    let summary = ExportSummary {
        virtual_size: src.size,
        bytes_read: totals.read,
        bytes_skipped_free: totals.free,
        bytes_zero: totals.zero,
        bytes_written: written,
        sha256: totals.sha256,
        seconds: secs,
        consistency: label,
    };
    if a.verify {
        let (vsize, sha) = match a.format {
            ImageFormat::Raw => {
                raw_hash(&file, output.device_size().map(|_| summary.virtual_size))?
            }
            ImageFormat::Qcow2 => qcow2::guest_hash(&file)?,
        };
        if vsize != summary.virtual_size || sha != summary.sha256 {
            bail!(
                "verification failed: the output reads back as {vsize} bytes with sha256 {sha}, expected {} bytes with {}",
                summary.virtual_size,
                summary.sha256
            );
        }
        eprintln!("cloudprep: verified: the output reads back with the same content hash");
    }
    output.commit()?;
    println!("source         {}", src.path.display());
    print!("{}", summary.render());
    println!("output         {}", out.display());
    Ok(crate::exit::EXIT_OK)
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
    let mut buf = vec![0u8; pipeline::CHUNK];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}
