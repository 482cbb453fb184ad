//! Checks: fstab, crypttab and the initramfs resume device naming disks by kernel name (`/dev/sda1`),
//! which changes when the disk becomes `/dev/vda` on virtio. Parsers and rewriters are pure functions over
//! `&str`; a rewrite touches only the field it changes and keeps every other byte of the file.

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Validator,
};
use crate::guest::facts::{unescape_octal, Filesystem};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

pub const FSTAB: &str = "/etc/fstab";
pub const CRYPTTAB: &str = "/etc/crypttab";
pub const RESUME: &str = "/etc/initramfs-tools/conf.d/resume";

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "fstab.device-names",
            "/etc/fstab names disks by kernel device name",
            Storage,
            Blocker,
            true,
            check_fstab_names
        ),
        check!(
            "fstab.crypttab-device-names",
            "/etc/crypttab names disks by kernel device name",
            Storage,
            Blocker,
            true,
            check_crypttab_names
        ),
        check!(
            "fstab.resume-device",
            "initramfs resume device named by kernel device name",
            Storage,
            Warning,
            true,
            check_resume
        ),
        check!(
            "fstab.syntax",
            "/etc/fstab has lines that cannot be parsed",
            Storage,
            Warning,
            false,
            check_syntax
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

/// One non-comment line of a whitespace-separated table (fstab, crypttab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The line as written (without its line terminator).
    pub text: String,
    /// Fields with `\040`-style escapes decoded.
    pub fields: Vec<String>,
}

impl Entry {
    pub fn field(&self, i: usize) -> &str {
        self.fields.get(i).map(String::as_str).unwrap_or("")
    }
    /// fstab: the device (`fs_spec`).
    pub fn spec(&self) -> &str {
        self.field(0)
    }
    /// fstab: the mount point (`fs_file`).
    pub fn mountpoint(&self) -> &str {
        self.field(1)
    }
    pub fn fstype(&self) -> &str {
        self.field(2)
    }
    pub fn options(&self) -> &str {
        self.field(3)
    }
    pub fn has_option(&self, opt: &str) -> bool {
        has_option(self.options(), opt)
    }
}

pub fn has_option(opts: &str, opt: &str) -> bool {
    opts.split(',')
        .any(|o| o == opt || o.starts_with(&format!("{opt}=")))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub entries: Vec<Entry>,
    /// Lines with fewer fields than the table needs: (line, text).
    pub bad: Vec<(usize, String)>,
}

/// Lines of `text` with their terminators stripped (`\n` and a preceding `\r`).
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix('\n').unwrap_or(l);
        (i + 1, l.strip_suffix('\r').unwrap_or(l))
    })
}

/// Byte ranges of the whitespace-separated fields of a line (comment lines have none).
fn field_spans(line: &str) -> Vec<(usize, usize)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if out.is_empty() && b[i] == b'#' {
            return Vec::new();
        }
        let s = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        out.push((s, i));
    }
    out
}

/// Parse an fstab-like table: `#` comments and blank lines skipped, lines with fewer than `min_fields`
/// fields reported in `bad`.
pub fn parse_table(text: &str, min_fields: usize) -> Table {
    let mut t = Table::default();
    for (n, line) in content_lines(text) {
        let spans = field_spans(line);
        if spans.is_empty() {
            continue;
        }
        if spans.len() < min_fields {
            t.bad.push((n, line.to_string()));
            continue;
        }
        t.entries.push(Entry {
            line: n,
            text: line.to_string(),
            fields: spans
                .iter()
                .map(|&(s, e)| unescape_octal(&line[s..e]))
                .collect(),
        });
    }
    t
}

pub fn parse_fstab(text: &str) -> Table {
    parse_table(text, 2)
}

pub fn parse_crypttab(text: &str) -> Table {
    parse_table(text, 2)
}

/// Rewrite fields of the entries of a table: `edit` gets an entry's decoded fields and returns
/// `(field index, new raw text)` pairs; an index equal to the field count appends a field. Every other
/// byte (spacing, comments, CRLF, a missing final newline) is kept.
pub fn rewrite_fields(text: &str, edit: impl Fn(&[String]) -> Vec<(usize, String)>) -> String {
    rewrite_fields_at(text, |_, f| edit(f))
}

/// [`rewrite_fields`] with the 1-based line number passed to `edit`.
pub fn rewrite_fields_at(
    text: &str,
    edit: impl Fn(usize, &[String]) -> Vec<(usize, String)>,
) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (lineno, piece) in text.split_inclusive('\n').enumerate() {
        let (body, term) = match piece.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b2) => (b2, &piece[b2.len()..]),
                None => (b, "\n"),
            },
            None => match piece.strip_suffix('\r') {
                Some(b2) => (b2, "\r"),
                None => (piece, ""),
            },
        };
        let spans = field_spans(body);
        if spans.is_empty() {
            out.push_str(piece);
            continue;
        }
        let fields: Vec<String> = spans
            .iter()
            .map(|&(s, e)| unescape_octal(&body[s..e]))
            .collect();
        let mut edits = edit(lineno + 1, &fields);
        if edits.is_empty() {
            out.push_str(piece);
            continue;
        }
        edits.sort_by_key(|e| e.0);
        let mut line = String::new();
        let mut pos = 0;
        for (idx, new) in edits {
            if let Some(&(s, e)) = spans.get(idx) {
                line.push_str(&body[pos..s]);
                line.push_str(&new);
                pos = e;
            } else if idx == spans.len() {
                let last_end = spans[spans.len() - 1].1;
                line.push_str(&body[pos..last_end]);
                // Separate like the line does elsewhere.
                let sep = if spans.len() >= 2 {
                    &body[spans[spans.len() - 2].1..spans[spans.len() - 1].0]
                } else {
                    " "
                };
                line.push_str(sep);
                line.push_str(&new);
                pos = last_end;
            }
        }
        line.push_str(&body[pos..]);
        out.push_str(&line);
        out.push_str(term);
    }
    out
}

/// Encode a value for an fstab field (spaces, tabs, backslashes as octal escapes).
pub fn escape_field(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            ' ' => o.push_str("\\040"),
            '\t' => o.push_str("\\011"),
            '\n' => o.push_str("\\012"),
            '\\' => o.push_str("\\134"),
            _ => o.push(c),
        }
    }
    o
}

/// `RESUME=` assignments of an initramfs-tools conf.d file: (line, text, value unquoted).
pub fn parse_resume(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, line) in content_lines(text) {
        let t = line.trim_start();
        let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        if let Some(v) = t.strip_prefix("RESUME=") {
            let v = v.split(" #").next().unwrap_or(v).trim();
            out.push((n, line.to_string(), crate::guest::facts::unquote(v)));
        }
    }
    out
}

/// Replace the value of `RESUME=old` lines with `new`, keeping quotes and everything else.
pub fn rewrite_resume(text: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive('\n') {
        let t = piece.trim_start();
        let t2 = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        if let Some(v) = t2.strip_prefix("RESUME=") {
            let start = piece.len() - v.len();
            let vt = v.trim_end_matches(['\n', '\r']);
            let val = vt.split(" #").next().unwrap_or(vt).trim_end();
            if crate::guest::facts::unquote(val) == old {
                let q = val.chars().next().filter(|c| *c == '"' || *c == '\'');
                out.push_str(&piece[..start]);
                match q {
                    Some(q) => {
                        out.push(q);
                        out.push_str(new);
                        out.push(q);
                    }
                    None => out.push_str(new),
                }
                out.push_str(&v[val.len()..]);
                continue;
            }
        }
        out.push_str(piece);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Device names

/// Why a device path is not a stable name in the cloud, or `None` when it is fine.
pub fn unstable_name(spec: &str) -> Option<&'static str> {
    if let Some(id) = spec.strip_prefix("/dev/disk/by-id/") {
        // Names derived from device-mapper, md or LVM metadata move with the disk content.
        if [
            "dm-name-",
            "dm-uuid-",
            "md-name-",
            "md-uuid-",
            "lvm-pv-uuid-",
        ]
        .iter()
        .any(|p| id.starts_with(p))
        {
            return None;
        }
        return Some("a /dev/disk/by-id/ name carries the old hypervisor's disk model and serial");
    }
    if spec.starts_with("/dev/disk/by-path/") {
        return Some("a /dev/disk/by-path/ name carries the old hypervisor's controller path");
    }
    if guest_disk(spec).is_some() {
        return Some("kernel disk names depend on the disk bus and probe order: on virtio the disk is /dev/vda");
    }
    None
}

/// The whole disk and partition number of a kernel device name: `/dev/sda5` -> (`sda`, 5),
/// `/dev/nvme0n1p2` -> (`nvme0n1`, 2), `/dev/cciss/c0d0p1` -> (`cciss/c0d0`, 1).
pub fn guest_disk(spec: &str) -> Option<(String, Option<u32>)> {
    let rest = spec.strip_prefix("/dev/")?;
    let num = |s: &str| -> Option<Option<u32>> {
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    for pfx in ["sd", "hd", "xvd", "vd"] {
        if let Some(r) = rest.strip_prefix(pfx) {
            let letters = r.bytes().take_while(|b| b.is_ascii_lowercase()).count();
            if letters == 0 || letters > 3 {
                return None;
            }
            let part = num(&r[letters..])?;
            return Some((format!("{pfx}{}", &r[..letters]), part));
        }
    }
    let re = regex::Regex::new(r"^(nvme\d+n\d+|cciss/c\d+d\d+|ida/c\d+d\d+)(?:p(\d+))?$").ok()?;
    let c = re.captures(rest)?;
    Some((
        c[1].to_string(),
        c.get(2).and_then(|m| m.as_str().parse().ok()),
    ))
}

/// Can a filesystem probed as `probed` be what fstab calls `fstype`?
pub fn type_compatible(fstype: &str, probed: &str) -> bool {
    let ext = |t: &str| matches!(t, "ext2" | "ext3" | "ext4" | "ext4dev");
    let fat = |t: &str| matches!(t, "vfat" | "msdos" | "fat");
    fstype.is_empty()
        || fstype == "auto"
        || fstype
            .split(',')
            .any(|t| t == probed || (ext(t) && ext(probed)) || (fat(t) && fat(probed)))
}

/// Where a device lives, for comparing disks: the host disks we probed, and/or the guest's kernel name of
/// its disk (`sda`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskId {
    pub host: Option<Vec<String>>,
    pub guest: Option<String>,
}

impl DiskId {
    pub fn host(v: Vec<String>) -> DiskId {
        DiskId {
            host: Some(v),
            guest: None,
        }
    }
    pub fn guest(g: impl Into<String>) -> DiskId {
        DiskId {
            host: None,
            guest: Some(g.into()),
        }
    }
    /// Same disk? `None` when the two cannot be compared.
    pub fn same(&self, other: &DiskId) -> Option<bool> {
        if let (Some(a), Some(b)) = (&self.host, &other.host) {
            return Some(a.iter().any(|x| b.contains(x)));
        }
        if let (Some(a), Some(b)) = (&self.guest, &other.guest) {
            return Some(a == b);
        }
        None
    }
    pub fn describe(&self) -> String {
        match (&self.guest, &self.host) {
            (Some(g), Some(h)) if h.len() == 1 && &h[0] == g => g.clone(),
            (Some(g), Some(h)) => format!("{g} ({})", h.join("+")),
            (Some(g), None) => g.clone(),
            (None, Some(h)) => h.join("+"),
            (None, None) => "unknown".into(),
        }
    }
}

/// Resolves guest device names to the filesystems cloudprep probed.
pub struct Resolver<'a> {
    ctx: &'a Ctx<'a>,
    /// Guest kernel disk name -> host disk (learned from mount points whose partition numbers agree).
    map: BTreeMap<String, String>,
}

impl<'a> Resolver<'a> {
    pub fn new(ctx: &'a Ctx<'a>, fstab: &[Entry]) -> Resolver<'a> {
        let mut r = Resolver {
            ctx,
            map: BTreeMap::new(),
        };
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in fstab {
            let Some((gd, part)) = guest_disk(e.spec()) else {
                continue;
            };
            if let Some(fs) = r.by_mountpoint(e.mountpoint()) {
                if fs.partition == part && fs.disks.len() == 1 {
                    map.entry(gd).or_default().insert(fs.disks[0].clone());
                }
            }
        }
        // A host disk claimed by two guest names, or a guest name mapped twice, is ambiguous.
        let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
        for hs in map.values() {
            for h in hs {
                *claimed.entry(h.clone()).or_default() += 1;
            }
        }
        for (g, hs) in map {
            if hs.len() == 1 {
                let h = hs.into_iter().next().unwrap();
                if claimed[&h] == 1 {
                    r.map.insert(g, h);
                }
            }
        }
        r.infer_by_layout(fstab);
        r
    }

    /// Weaker mapping for guest disks no mount point identified (e.g. only a swap line names `sda`): the
    /// one guest-backing host disk, not yet mapped, whose partitions match every entry naming that guest
    /// disk in number and filesystem type, and whose mounted partitions are mounted where the entries say.
    fn infer_by_layout(&mut self, fstab: &[Entry]) {
        let facts = self.ctx.facts;
        let mounted = |f: &Filesystem| {
            facts
                .mounts
                .iter()
                .rev()
                .find(|m| !f.dev.is_empty() && m.dev == f.dev)
        };
        let host_disks: BTreeSet<String> = facts
            .filesystems
            .iter()
            .filter(|f| mounted(f).is_some() && f.disks.len() == 1)
            .map(|f| f.disks[0].clone())
            .collect();
        let mut by_guest: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
        for e in fstab {
            if let Some((g, _)) = guest_disk(e.spec()) {
                if !self.map.contains_key(&g) {
                    by_guest.entry(g).or_default().push(e);
                }
            }
        }
        let taken: BTreeSet<String> = self.map.values().cloned().collect();
        let mut found: Vec<(String, String)> = Vec::new();
        for (g, ents) in by_guest {
            let cands: Vec<&String> = host_disks
                .iter()
                .filter(|h| !taken.contains(*h))
                .filter(|h| {
                    ents.iter().all(|e| {
                        let part = guest_disk(e.spec()).and_then(|x| x.1);
                        facts.filesystems.iter().any(|f| {
                            f.disks.len() == 1
                                && &f.disks[0] == *h
                                && f.partition == part
                                && !f.fstype.is_empty()
                                && type_compatible(e.fstype(), &f.fstype)
                                && mounted(f).is_none_or(|m| m.target == e.mountpoint())
                        })
                    })
                })
                .collect();
            if cands.len() == 1 {
                found.push((g, cands[0].clone()));
            }
        }
        for (g, h) in &found {
            if found.iter().filter(|(_, h2)| h2 == h).count() == 1 {
                self.map.insert(g.clone(), h.clone());
            }
        }
    }

    fn facts_fs(&self) -> &'a [Filesystem] {
        &self.ctx.facts.filesystems
    }

    /// The filesystem mounted at a guest mount point.
    pub fn by_mountpoint(&self, mp: &str) -> Option<&'a Filesystem> {
        if !mp.starts_with('/') {
            return None;
        }
        let m = self.ctx.facts.mount_at(mp)?;
        self.facts_fs()
            .iter()
            .find(|f| !f.dev.is_empty() && f.dev == m.dev)
            .or_else(|| self.facts_fs().iter().find(|f| f.device == m.source))
    }

    /// The probed filesystem a device spec names, and how it was found.
    pub fn host_fs(&self, spec: &str, mountpoint: &str) -> Option<(&'a Filesystem, String)> {
        let fss = self.facts_fs();
        let tagged = |tag: &str, v: &str| -> Option<&'a Filesystem> {
            fss.iter().find(|f| match tag {
                "UUID" => f.uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(v)),
                "LABEL" => f.label.as_deref() == Some(v),
                "PARTUUID" => f
                    .partuuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(v)),
                _ => false,
            })
        };
        for (tag, pfx) in [
            ("UUID", "/dev/disk/by-uuid/"),
            ("LABEL", "/dev/disk/by-label/"),
            ("PARTUUID", "/dev/disk/by-partuuid/"),
        ] {
            if let Some(v) = spec
                .strip_prefix(&format!("{tag}="))
                .or_else(|| spec.strip_prefix(pfx))
            {
                let v = crate::guest::facts::unquote(v);
                return tagged(tag, &v).map(|f| (f, format!("{tag} {v}")));
            }
        }
        if let Some(v) = self.ctx.config.devices.get(spec) {
            if let Some((tag, val)) = v.split_once('=') {
                if let Some(f) = tagged(tag, &crate::guest::facts::unquote(val)) {
                    return Some((f, format!("[devices] entry {v}")));
                }
            }
        }
        if self.ctx.facts.live {
            if let Some(f) = fss.iter().find(|f| f.device == spec) {
                return Some((f, format!("device {spec}")));
            }
            if let Some(c) = crate::guest::probe::canonical_device(spec) {
                if let Some(f) = fss.iter().find(|f| {
                    std::path::Path::new(&f.device) == c
                        || crate::guest::probe::canonical_device(&f.device).as_deref() == Some(&c)
                }) {
                    return Some((f, format!("device {}", c.display())));
                }
            }
        } else if spec.starts_with("/dev/mapper/") {
            if let Some(f) = fss.iter().find(|f| f.device == spec) {
                return Some((f, format!("device {spec}")));
            }
        }
        // What is mounted at the entry's mount point is that entry's filesystem, whatever the disk was
        // called (a Xen guest's /dev/xvda1 may be a bare filesystem image without a partition table).
        if let Some(f) = self.by_mountpoint(mountpoint) {
            return Some((f, format!("the mount at {mountpoint} ({})", f.device)));
        }
        let (gd, part) = guest_disk(spec)?;
        let host = self.map.get(&gd)?;
        let f = fss
            .iter()
            .find(|f| f.disks.len() == 1 && &f.disks[0] == host && f.partition == part)?;
        Some((
            f,
            format!(
                "partition {} of {host}, the disk the guest calls {gd}",
                part.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            ),
        ))
    }

    /// The stable spec (`UUID=…`, else `PARTUUID=…`) to write instead of `spec`, or why there is none.
    pub fn stable_spec(
        &self,
        spec: &str,
        mountpoint: &str,
        fstype: &str,
    ) -> std::result::Result<(String, String), String> {
        if let Some(v) = self.ctx.config.devices.get(spec) {
            return Ok((v.clone(), format!("the [devices] entry for {spec}")));
        }
        let Some((f, how)) = self.host_fs(spec, mountpoint) else {
            return Err(format!(
                "cloudprep could not find which filesystem {spec} is"
            ));
        };
        if !f.fstype.is_empty() && !type_compatible(fstype, &f.fstype) {
            return Err(format!(
                "{} (found through {how}) holds {}, not {fstype}",
                f.device, f.fstype
            ));
        }
        if let Some(u) = &f.uuid {
            Ok((format!("UUID={u}"), how))
        } else if let Some(p) = &f.partuuid {
            Ok((format!("PARTUUID={p}"), how))
        } else {
            Err(format!("{} (found through {how}) has no UUID", f.device))
        }
    }

    /// Which disk a spec lives on.
    pub fn disk_of(&self, spec: &str, mountpoint: &str) -> Option<DiskId> {
        let guest = guest_disk(spec).map(|(g, _)| g);
        let mut host = self
            .host_fs(spec, mountpoint)
            .map(|(f, _)| f.disks.clone())
            .filter(|d| !d.is_empty());
        if host.is_none() {
            host = guest
                .as_ref()
                .and_then(|g| self.map.get(g))
                .map(|h| vec![h.clone()]);
        }
        // The guest's name of a host disk we learned the mapping of.
        let guest = guest.or_else(|| {
            let h = host.as_ref()?;
            self.map
                .iter()
                .find(|(_, hd)| h.len() == 1 && &h[0] == *hd)
                .map(|(g, _)| g.clone())
        });
        if host.is_none() && guest.is_none() {
            return None;
        }
        Some(DiskId { host, guest })
    }
}

/// Read and parse /etc/fstab (`None` when absent).
pub fn read_fstab(ctx: &Ctx) -> Result<Option<Table>> {
    Ok(ctx.root.read_text(FSTAB)?.map(|t| parse_fstab(&t)))
}

fn devices_hint(dev: &str) -> String {
    format!(
        "add `\"{dev}\" = \"UUID=<uuid>\"` under [devices] in {} (the UUID of the filesystem on that device: \
         `blkid {dev}` on the running VM) and run cloudprep again",
        crate::config::CONFIG_PATH
    )
}

fn check_fstab_names(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(t) = read_fstab(ctx)? else {
        return Ok(Vec::new());
    };
    let r = Resolver::new(ctx, &t.entries);
    let mut out = Vec::new();
    for e in &t.entries {
        let spec = e.spec().to_string();
        let Some(why) = unstable_name(&spec) else {
            continue;
        };
        // A CD-ROM or floppy line is storage.absent-devices' business.
        if crate::checks::storage::removable_media(e).is_some() {
            continue;
        }
        let mp = e.mountpoint().to_string();
        let what = if e.fstype() == "swap" {
            "swap".to_string()
        } else {
            format!("the {mp} filesystem")
        };
        let mut f = Finding::new(
            info,
            format!(
                "{FSTAB} line {} names {what} as {spec}: {why}, so the device will not be found after import \
                 and boot stops in emergency mode (or waits for it).",
                e.line
            ),
        )
        .evidence(Evidence::line(FSTAB, e.line, &e.text));
        if e.has_option("noauto") || e.has_option("nofail") {
            // Boot does not wait for it; it is still the wrong device name.
            f = f.severity(crate::checks::Severity::Warning);
        }
        match r.stable_spec(&spec, &mp, e.fstype()) {
            Ok((new, how)) => {
                let (old, mp2, new2) = (spec.clone(), mp.clone(), escape_field(&new));
                f = f
                    .remediation(format!(
                        "Replace {spec} with {new} (found through {how}) on line {}.",
                        e.line
                    ))
                    .fix(Fix::default().edit(FileEdit::rewrite(
                        FSTAB,
                        Validator::Fstab,
                        move |c| {
                            Ok(rewrite_fields(c, |fl| {
                                if fl.len() >= 2 && fl[0] == old && fl[1] == mp2 {
                                    vec![(0, new2.clone())]
                                } else {
                                    Vec::new()
                                }
                            }))
                        },
                    )));
            }
            Err(why) => {
                f = f.remediation(format!(
                    "Name the device by UUID= on line {} of {FSTAB}; {why}: {}.",
                    e.line,
                    devices_hint(&spec)
                ));
            }
        }
        out.push(f);
    }
    Ok(out)
}

fn check_crypttab_names(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(text) = ctx.root.read_text(CRYPTTAB)? else {
        return Ok(Vec::new());
    };
    let t = parse_crypttab(&text);
    let fstab = read_fstab(ctx).ok().flatten().unwrap_or_default();
    let r = Resolver::new(ctx, &fstab.entries);
    let mut out = Vec::new();
    for e in &t.entries {
        let (name, dev) = (e.field(0).to_string(), e.field(1).to_string());
        let Some(why) = unstable_name(&dev) else {
            continue;
        };
        let mut f = Finding::new(
            info,
            format!(
                "{CRYPTTAB} line {} opens {name} from {dev}: {why}, so the encrypted device is not found after import.",
                e.line
            ),
        )
        .evidence(Evidence::line(CRYPTTAB, e.line, &e.text));
        // The mapped device's mount point lets an offline audit find the container.
        let resolved = match r.stable_spec(&dev, "", "crypto_LUKS") {
            Ok(x) => Ok(x),
            Err(e1) => {
                // Plain dm-crypt (e.g. swap keyed from /dev/urandom) has no header: use the partition UUID.
                match r.host_fs(&dev, "") {
                    Some((fs, how)) if fs.fstype != "crypto_LUKS" => match &fs.partuuid {
                        Some(p) => Ok((format!("PARTUUID={p}"), how)),
                        None => Err(e1),
                    },
                    _ => Err(e1),
                }
            }
        };
        match resolved {
            Ok((new, how)) => {
                let (old, name2) = (dev.clone(), name.clone());
                f = f
                    .remediation(format!(
                        "Replace {dev} with {new} (found through {how}) on line {} and rebuild the initramfs.",
                        e.line
                    ))
                    .fix(
                        Fix::default()
                            .edit(FileEdit::rewrite(CRYPTTAB, Validator::None, move |c| {
                                Ok(rewrite_fields(c, |fl| {
                                    if fl.len() >= 2 && fl[0] == name2 && fl[1] == old {
                                        vec![(1, new.clone())]
                                    } else {
                                        Vec::new()
                                    }
                                }))
                            }))
                            .command(update_initramfs("the initramfs carries a copy of /etc/crypttab")),
                    );
            }
            Err(why) => {
                f = f.remediation(format!(
                    "Name the device by UUID= on line {} of {CRYPTTAB}; {why}: {}.",
                    e.line,
                    devices_hint(&dev)
                ));
            }
        }
        out.push(f);
    }
    Ok(out)
}

fn update_initramfs(reason: &str) -> PlannedCommand {
    PlannedCommand::new(
        Phase::Post,
        order::UPDATE_INITRAMFS,
        &["update-initramfs", "-u", "-k", "all"],
        reason,
    )
}

fn check_resume(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(text) = ctx.root.read_text(RESUME)? else {
        return Ok(Vec::new());
    };
    let fstab = read_fstab(ctx).ok().flatten().unwrap_or_default();
    let r = Resolver::new(ctx, &fstab.entries);
    let mut out = Vec::new();
    for (line, ltext, val) in parse_resume(&text) {
        let Some(why) = unstable_name(&val) else {
            continue;
        };
        let mut f = Finding::new(
            info,
            format!(
                "{RESUME} line {line} sets the resume (hibernation) device to {val}: {why}; the initramfs then \
                 waits for a device that does not exist before booting."
            ),
        )
        .evidence(Evidence::line(RESUME, line, &ltext));
        // The swap line of fstab naming the same device gives the mount point "none": resolve as swap.
        match r.stable_spec(&val, "", "swap") {
            Ok((new, how)) => {
                let old = val.clone();
                f = f
                    .remediation(format!(
                        "Set RESUME={new} (found through {how}) and rebuild the initramfs."
                    ))
                    .fix(
                        Fix::default()
                            .edit(FileEdit::rewrite(RESUME, Validator::None, move |c| {
                                Ok(rewrite_resume(c, &old, &new))
                            }))
                            .command(update_initramfs(
                                "the resume device is read from the initramfs",
                            )),
                    );
            }
            Err(why) => {
                f = f.remediation(format!(
                    "Set RESUME=UUID=<swap uuid> (or RESUME=none) in {RESUME}; {why}: {}.",
                    devices_hint(&val)
                ));
            }
        }
        out.push(f);
    }
    Ok(out)
}

fn check_syntax(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let Some(t) = read_fstab(ctx)? else {
        return Ok(Vec::new());
    };
    Ok(t
        .bad
        .iter()
        .map(|(n, text)| {
            Finding::new(
                info,
                format!(
                    "{FSTAB} line {n} has fewer than two fields; mount and systemd skip or reject it, and \
                     cloudprep ignored it."
                ),
            )
            .evidence(Evidence::line(FSTAB, *n, text))
            .remediation(format!(
                "Fix or comment out line {n} of {FSTAB} (check with `findmnt --verify`)."
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMW: &str = "# /etc/fstab: static file system information.\n\
#\n\
# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n\
proc            /proc           proc    defaults        0       0\n\
/dev/sda1       /               ext3    errors=remount-ro 0       1\n\
/dev/sdb1\t/data\text4\tdefaults\t0\t2\n\
/dev/sda5       none            swap    sw              0       0\n\
/dev/scd0       /media/cdrom0   udf,iso9660 user,noauto     0       0\n\
garbage\n\
\n\
fileserver:/export /mnt/nfs nfs rw 0 0\n\
/dev/sdc1 /mnt/my\\040disk ext4 defaults";

    #[test]
    fn parse_vmware_fstab() {
        let t = parse_fstab(VMW);
        assert_eq!(t.bad, vec![(9, "garbage".to_string())]);
        let specs: Vec<(usize, &str)> = t.entries.iter().map(|e| (e.line, e.spec())).collect();
        assert_eq!(
            specs,
            vec![
                (4, "proc"),
                (5, "/dev/sda1"),
                (6, "/dev/sdb1"),
                (7, "/dev/sda5"),
                (8, "/dev/scd0"),
                (11, "fileserver:/export"),
                (12, "/dev/sdc1")
            ]
        );
        assert_eq!(t.entries[6].mountpoint(), "/mnt/my disk");
        assert!(t.entries[4].has_option("noauto"));
        assert_eq!(t.entries[2].options(), "defaults");
        assert_eq!(t.entries[1].options(), "errors=remount-ro");
    }

    #[test]
    fn rewrite_keeps_every_other_byte() {
        let out = rewrite_fields(VMW, |f| {
            if f[0] == "/dev/sdb1" {
                vec![(0, "UUID=abc".into())]
            } else if f[0] == "/dev/sdc1" {
                vec![(0, "UUID=def".into()), (3, "defaults,nofail".into())]
            } else {
                vec![]
            }
        });
        let want = VMW.replace("/dev/sdb1\t", "UUID=abc\t").replace(
            "/dev/sdc1 /mnt/my\\040disk ext4 defaults",
            "UUID=def /mnt/my\\040disk ext4 defaults,nofail",
        );
        assert_eq!(out, want);
        // Idempotent once applied.
        assert_eq!(
            rewrite_fields(&out, |f| if f[0] == "/dev/sdb1" {
                vec![(0, "x".into())]
            } else {
                vec![]
            }),
            out
        );
    }

    #[test]
    fn rewrite_crlf_and_append_field() {
        let t = "/dev/sda1 / ext4 defaults 0 1\r\n# c\r\n/dev/sdb1\t/x\text4\r\n/dev/sdc1 /y ext4";
        let out = rewrite_fields(t, |f| {
            if f.len() == 3 {
                vec![(0, "UUID=1".into()), (3, "nofail".into())]
            } else {
                vec![(0, "UUID=0".into())]
            }
        });
        assert_eq!(
            out,
            "UUID=0 / ext4 defaults 0 1\r\n# c\r\nUUID=1\t/x\text4\tnofail\r\nUUID=1 /y ext4 nofail"
        );
    }

    #[test]
    fn device_name_classes() {
        for s in [
            "/dev/sda1",
            "/dev/hda",
            "/dev/xvda2",
            "/dev/vdb1",
            "/dev/sdaa3",
            "/dev/nvme0n1p2",
            "/dev/cciss/c0d0p1",
            "/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part1",
            "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1",
        ] {
            assert!(unstable_name(s).is_some(), "{s}");
        }
        for s in [
            "UUID=1234",
            "LABEL=root",
            "/dev/mapper/vg-root",
            "/dev/vg0/root",
            "/dev/md0",
            "/dev/disk/by-uuid/1234",
            "/dev/disk/by-id/dm-name-vg0-root",
            "/dev/disk/by-id/md-uuid-1:2:3:4",
            "/dev/sr0",
            "/dev/scd0",
            "/dev/fd0",
            "proc",
            "/dev/sda1x",
            "server:/x",
        ] {
            assert!(unstable_name(s).is_none(), "{s}");
        }
        assert_eq!(guest_disk("/dev/sda5"), Some(("sda".into(), Some(5))));
        assert_eq!(guest_disk("/dev/hdb"), Some(("hdb".into(), None)));
        assert_eq!(
            guest_disk("/dev/nvme0n1p2"),
            Some(("nvme0n1".into(), Some(2)))
        );
    }

    #[test]
    fn resume_parse_and_rewrite() {
        let t = "# comment\nRESUME=/dev/sda5\n";
        assert_eq!(
            parse_resume(t),
            vec![(2, "RESUME=/dev/sda5".into(), "/dev/sda5".into())]
        );
        assert_eq!(
            rewrite_resume(t, "/dev/sda5", "UUID=x"),
            "# comment\nRESUME=UUID=x\n"
        );
        let q = "export RESUME=\"/dev/sda5\" # swap\r\n";
        assert_eq!(parse_resume(q)[0].2, "/dev/sda5");
        let out = rewrite_resume(q, "/dev/sda5", "UUID=x");
        assert_eq!(out, "export RESUME=\"UUID=x\" # swap\r\n");
        assert_eq!(rewrite_resume(&out, "/dev/sda5", "UUID=x"), out);
        assert_eq!(
            rewrite_resume("RESUME=/dev/sda5", "/dev/sda5", "UUID=y"),
            "RESUME=UUID=y"
        );
    }

    fn fs(
        dev: &str,
        fstype: &str,
        uuid: &str,
        disk: &str,
        part: Option<u32>,
        majmin: &str,
    ) -> Filesystem {
        Filesystem {
            device: dev.into(),
            fstype: fstype.into(),
            uuid: (!uuid.is_empty()).then(|| uuid.to_string()),
            partuuid: part.map(|p| format!("cafe0001-{p:02x}")),
            dev: majmin.into(),
            disks: vec![disk.into()],
            partition: part,
            ..Default::default()
        }
    }

    fn offline_facts() -> crate::guest::facts::Facts {
        crate::guest::facts::Facts {
            live: false,
            mounts: vec![crate::guest::facts::Mount {
                target: "/".into(),
                source: "/dev/loop7p1".into(),
                fstype: "ext4".into(),
                options: "rw".into(),
                dev: "259:1".into(),
            }],
            filesystems: vec![
                fs(
                    "/dev/loop7p1",
                    "ext4",
                    "11111111-1111-4111-8111-111111111111",
                    "loop7",
                    Some(1),
                    "259:1",
                ),
                fs(
                    "/dev/loop7p5",
                    "swap",
                    "55555555-5555-4555-8555-555555555555",
                    "loop7",
                    Some(5),
                    "259:5",
                ),
                fs("/dev/loop7p6", "", "", "loop7", Some(6), "259:6"),
            ],
            root_device: Some("/dev/loop7p1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn resolver_maps_guest_disk_through_the_root_mount() {
        let d = tempfile::tempdir().unwrap();
        let root = crate::guest::root::Root::new(d.path()).unwrap();
        let mut config = crate::config::Config::default();
        config
            .devices
            .insert("/dev/sdb1".into(), "UUID=2222".into());
        let facts = offline_facts();
        let ctx = Ctx {
            root: &root,
            config: &config,
            facts: &facts,
        };
        let t = parse_fstab(
            "/dev/sda1 / ext3 defaults 0 1\n/dev/sda5 none swap sw 0 0\n/dev/sdb1 /data ext4 defaults 0 2\n",
        );
        let r = Resolver::new(&ctx, &t.entries);
        let ok = |spec: &str, mp: &str, ty: &str| r.stable_spec(spec, mp, ty).map(|x| x.0);
        assert_eq!(
            ok("/dev/sda1", "/", "ext3").unwrap(),
            "UUID=11111111-1111-4111-8111-111111111111"
        );
        assert_eq!(
            ok("/dev/sda5", "none", "swap").unwrap(),
            "UUID=55555555-5555-4555-8555-555555555555"
        );
        // fstab type and the superblock disagree: no guess.
        assert!(ok("/dev/sda5", "none", "ext4")
            .unwrap_err()
            .contains("holds swap"));
        // Plain dm-crypt swap: no superblock, the partition UUID names it.
        assert_eq!(
            ok("/dev/sda6", "none", "swap").unwrap(),
            "PARTUUID=cafe0001-06"
        );
        // Not on the mapped disk, but in [devices].
        assert_eq!(ok("/dev/sdb1", "/data", "ext4").unwrap(), "UUID=2222");
        assert!(ok("/dev/sdc1", "/x", "ext4").is_err());
        assert!(ok("/dev/sda9", "/y", "ext4").is_err());
        assert_eq!(
            r.disk_of("/dev/sda5", "none"),
            Some(DiskId {
                host: Some(vec!["loop7".into()]),
                guest: Some("sda".into())
            })
        );
        assert_eq!(r.disk_of("/dev/sdb1", "/data"), Some(DiskId::guest("sdb")));

        // / by UUID: `sda` is learned from the swap partition's number and type; sdb1 (ext4, number 1) is
        // not taken for the root partition, which is mounted at / and not at /data.
        let config = crate::config::Config::default();
        let ctx = Ctx {
            root: &root,
            config: &config,
            facts: &facts,
        };
        let t = parse_fstab(
            "UUID=11111111-1111-4111-8111-111111111111 / ext4 defaults 0 1\n/dev/sda5 none swap sw 0 0\n/dev/sdb1 /data ext4 defaults 0 2\n",
        );
        let r = Resolver::new(&ctx, &t.entries);
        assert_eq!(
            r.stable_spec("/dev/sda5", "none", "swap").unwrap().0,
            "UUID=55555555-5555-4555-8555-555555555555"
        );
        assert!(r.stable_spec("/dev/sdb1", "/data", "ext4").is_err());
        let t = parse_fstab("UUID=11111111-1111-4111-8111-111111111111 / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n");
        let r = Resolver::new(&ctx, &t.entries);
        assert!(r.stable_spec("/dev/sdb1", "/data", "ext4").is_err());

        // A bare filesystem image (no partition table) mounted as the root: found by its mount point.
        let mut facts = offline_facts();
        facts.filesystems[0].partition = None;
        let ctx = Ctx {
            root: &root,
            config: &config,
            facts: &facts,
        };
        let t = parse_fstab("/dev/xvda1 / ext4 defaults 0 1\n");
        let r = Resolver::new(&ctx, &t.entries);
        assert_eq!(
            r.stable_spec("/dev/xvda1", "/", "ext4").unwrap().0,
            "UUID=11111111-1111-4111-8111-111111111111"
        );
    }

    #[test]
    fn octal_escape_out_of_byte_range_is_literal() {
        // `\777` is not a one-byte escape: it decoded with an arithmetic overflow (a panic in debug builds).
        let t = parse_fstab(
            "/dev/sdb1 /mnt/a\\777b ext4 defaults 0 2\n/dev/sdc1 /mnt/x\\040y\\4 ext4 defaults\n",
        );
        assert_eq!(t.entries[0].mountpoint(), "/mnt/a\\777b");
        assert_eq!(t.entries[1].mountpoint(), "/mnt/x y\\4");
        assert_eq!(
            crate::guest::facts::unescape_octal("\\377\\400"),
            "\u{fffd}\\400"
        );
    }

    #[test]
    fn types() {
        assert!(type_compatible("ext3", "ext4"));
        assert!(type_compatible("auto", "xfs"));
        assert!(type_compatible("udf,iso9660", "iso9660"));
        assert!(!type_compatible("swap", "ext4"));
        assert!(!type_compatible("ext4", "swap"));
    }
}
