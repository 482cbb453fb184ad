//! The EFI system partition (ESP) of a UEFI guest: where it is — mounted (at /boot/efi), or a partition
//! cloudprep reads and writes itself through [`crate::guest::fat`] — what it holds, and which of the guest's own
//! boot loader files become the removable fallback loader `\EFI\BOOT\BOOTX64.EFI`, the only file a
//! firmware with empty EFI variables (a new cloud instance) boots.

use crate::checks::Ctx;
use crate::export::partition::Table;
use crate::guest::fat;

/// GPT partition type of an EFI system partition.
pub const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Where Debian mounts the ESP (and systemd's alternative).
pub const MOUNTS: &[&str] = &["/boot/efi", "/efi"];

/// File names for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `BOOTX64.EFI`
    pub fallback: String,
    pub shim: String,
    pub grub: String,
    pub mm: String,
}

pub fn names(arch: Option<&str>) -> Names {
    let s = match arch {
        Some("arm64") => "aa64",
        Some("i386") => "ia32",
        _ => "x64",
    };
    Names {
        fallback: format!("BOOT{}.EFI", s.to_uppercase()),
        shim: format!("shim{s}.efi"),
        grub: format!("grub{s}.efi"),
        mm: format!("mm{s}.efi"),
    }
}

/// A directory of the ESP: its name and its entries (name, is a directory).
pub type Listing = Vec<(String, bool)>;

/// What the ESP holds, as far as the fallback loader is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// The name of `\EFI` as stored (None: no such directory).
    pub efi: Option<String>,
    /// Each directory under `\EFI`: its name and its files.
    pub dirs: Vec<(String, Vec<String>)>,
    /// `\EFI\BOOT\BOOTX64.EFI`: its path as stored, size and first bytes.
    pub fallback: Option<(String, u64, Vec<u8>)>,
}

fn find<'a>(names: &'a [String], want: &str) -> Option<&'a String> {
    names.iter().find(|n| n.eq_ignore_ascii_case(want))
}

/// The copies (source, destination; paths inside the ESP) that install the fallback loader from the
/// guest's own loader: shim (BOOTX64.EFI) with GRUB and MokManager beside it when shim is there, else GRUB
/// itself; GRUB's `grub.cfg` stub too when the vendor directory has one (Debian's signed GRUB reads it from
/// the directory it was started from). The vendor directory of the guest's OS is preferred. Also returns
/// that vendor directory.
pub fn fallback_copies(
    c: &Content,
    os_id: &str,
    n: &Names,
) -> Option<(String, Vec<(String, String)>)> {
    let efi = c.efi.as_deref()?;
    let boot = c
        .dirs
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case("BOOT"))
        .map(|(d, _)| d.as_str())
        .unwrap_or("BOOT");
    // Names that would not survive the `SOURCE=DEST` argument of the planned command (or a report) are
    // not used: an ESP is untrusted input.
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || "=/\\".contains(c));
    let mut vendors: Vec<&(String, Vec<String>)> = c
        .dirs
        .iter()
        .filter(|(d, _)| !d.eq_ignore_ascii_case("BOOT") && plain(d))
        .collect();
    let rank = |d: &str| {
        let d = d.to_ascii_lowercase();
        if !os_id.is_empty() && d == os_id.to_ascii_lowercase() {
            0
        } else if d == "debian" || d == "ubuntu" {
            1
        } else {
            2
        }
    };
    vendors.sort_by_key(|(d, _)| (rank(d), d.to_ascii_lowercase()));
    for (vendor, files) in vendors {
        let src = |f: &String| format!("{efi}/{vendor}/{f}");
        let dst = |name: &str| format!("{efi}/{boot}/{name}");
        let grub = find(files, &n.grub);
        let mut copies = Vec::new();
        match (find(files, &n.shim), grub) {
            (Some(shim), Some(grub)) => {
                copies.push((src(shim), dst(&n.fallback)));
                copies.push((src(grub), dst(&n.grub)));
                if let Some(mm) = find(files, &n.mm) {
                    copies.push((src(mm), dst(&n.mm)));
                }
            }
            (None, Some(grub)) => copies.push((src(grub), dst(&n.fallback))),
            _ => continue,
        }
        if let Some(cfg) = find(files, "grub.cfg") {
            copies.push((src(cfg), dst("grub.cfg")));
        }
        return Some((vendor.clone(), copies));
    }
    None
}

/// Where the ESP is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Esp {
    /// Mounted at this guest directory.
    Mounted(String),
    /// Not mounted: its byte range on a host device, and how it was found.
    Device {
        device: String,
        offset: u64,
        length: u64,
        how: String,
    },
}

/// Find the guest's ESP: a mount at /boot/efi; else the filesystem its fstab entry names (by UUID,
/// PARTUUID, label, or the `[devices]` map); else the EFI system partition of the disk holding `/`.
/// `Err` says why none was found.
pub fn locate(ctx: &Ctx) -> Result<Esp, String> {
    for mp in MOUNTS {
        if ctx.facts.mount_at(mp).is_some() {
            return Ok(Esp::Mounted(mp.to_string()));
        }
    }
    let mut why = Vec::new();
    match crate::checks::storage::fstab::read_fstab(ctx) {
        Ok(Some(t)) => {
            if let Some(e) = t.entries.iter().find(|e| MOUNTS.contains(&e.mountpoint())) {
                let r = crate::checks::storage::fstab::Resolver::new(ctx, &t.entries);
                match r.host_fs(e.spec(), e.mountpoint()) {
                    Some((fs, how)) if fs.fstype.is_empty() || fs.fstype == "vfat" => {
                        let length = match fs.size {
                            Some(s) => s,
                            None => match crate::fix::bootcode::Disk::open(&fs.device, false) {
                                Ok(d) => d.size(),
                                Err(e) => {
                                    return Err(format!("{e:#}"));
                                }
                            },
                        };
                        return Ok(Esp::Device {
                            device: fs.device.clone(),
                            offset: 0,
                            length,
                            how: format!(
                                "{}, named by /etc/fstab line {} as {}, found through {how}",
                                fs.device,
                                e.line,
                                e.spec()
                            ),
                        });
                    }
                    Some((fs, _)) => why.push(format!(
                        "/etc/fstab line {} names {} for {}, which holds {}, not a FAT filesystem",
                        e.line,
                        fs.device,
                        e.mountpoint(),
                        fs.fstype
                    )),
                    None => why.push(format!(
                        "/etc/fstab line {} names {} for {}, which is on none of the disks cloudprep sees",
                        e.line,
                        e.spec(),
                        e.mountpoint()
                    )),
                }
            }
        }
        Ok(None) => {}
        Err(e) => why.push(format!("{e:#}")),
    }
    match super::boot_disk(ctx.facts) {
        Ok(disk) => match crate::fix::bootcode::Disk::open(&disk, false).and_then(|d| d.table()) {
            Ok((table, _, _)) => {
                let parts = match &table {
                    Table::Gpt(p) | Table::Mbr(p) => p.as_slice(),
                    Table::None => &[],
                };
                match parts
                    .iter()
                    .find(|p| p.ptype == ESP_GUID || p.ptype == "ef")
                {
                    Some(p) => {
                        return Ok(Esp::Device {
                            device: disk.clone(),
                            offset: p.start,
                            length: p.len,
                            how: format!("partition {} of {disk} (type EFI System)", p.number),
                        })
                    }
                    None => why.push(format!(
                        "{disk}, the disk holding /, has no EFI system partition"
                    )),
                }
            }
            Err(e) => why.push(format!("{e:#}")),
        },
        Err(w) => why.push(w),
    }
    if why.is_empty() {
        why.push("no /boot/efi in /etc/fstab".into());
    }
    Err(why.join("; "))
}

/// Read what the mounted ESP at guest directory `mp` holds.
pub fn content_mounted(ctx: &Ctx, mp: &str) -> anyhow::Result<Content> {
    let mut c = Content::default();
    let join = |a: &str, b: &str| format!("{}/{b}", a.trim_end_matches('/'));
    let Some(efi) = ctx
        .root
        .list_dir(mp)?
        .into_iter()
        .find(|n| n.eq_ignore_ascii_case("EFI"))
    else {
        return Ok(c);
    };
    let efi_p = join(mp, &efi);
    if !ctx.root.is_dir(&efi_p) {
        return Ok(c);
    }
    c.efi = Some(efi.clone());
    for d in ctx.root.list_dir(&efi_p)? {
        let dp = join(&efi_p, &d);
        if !ctx.root.is_dir(&dp) {
            continue;
        }
        let files: Vec<String> = ctx
            .root
            .list_dir(&dp)?
            .into_iter()
            .filter(|f| !ctx.root.is_dir(join(&dp, f)))
            .collect();
        c.dirs.push((d, files));
    }
    let n = names(ctx.facts.arch.as_deref());
    if let Some((boot, files)) = c.dirs.iter().find(|(d, _)| d.eq_ignore_ascii_case("BOOT")) {
        if let Some(f) = find(files, &n.fallback) {
            let p = join(&join(&efi_p, boot), f);
            let b = ctx.root.read(&p)?.unwrap_or_default();
            c.fallback = Some((p, b.len() as u64, b.into_iter().take(64).collect()));
        }
    }
    Ok(c)
}

/// Read what an unmounted ESP holds, through the FAT reader.
pub fn content_device(
    dev: &dyn fat::Dev,
    offset: u64,
    length: u64,
    arch: Option<&str>,
) -> anyhow::Result<Content> {
    let v = fat::Volume::open(dev, offset, length)?;
    let mut c = Content::default();
    let Some(efi) = v.lookup("EFI")?.filter(|e| e.is_dir()) else {
        return Ok(c);
    };
    c.efi = Some(efi.name.clone());
    for d in v
        .list("EFI")?
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.is_dir())
    {
        let files = v
            .list(&format!("EFI/{}", d.name))?
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !f.is_dir())
            .map(|f| f.name)
            .collect();
        c.dirs.push((d.name, files));
    }
    let n = names(arch);
    let p = format!("EFI/BOOT/{}", n.fallback);
    if let Some(f) = v.lookup(&p)?.filter(|f| !f.is_dir()) {
        let b = v
            .read_file(&p, crate::fix::esp::MAX_FILE)?
            .unwrap_or_default();
        c.fallback = Some((
            fat::dos(&p),
            f.size as u64,
            b.into_iter().take(64).collect(),
        ));
    }
    Ok(c)
}

/// Is this the start of an EFI (PE/COFF) executable?
pub fn is_pe(head: &[u8]) -> bool {
    head.starts_with(b"MZ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(dirs: &[(&str, &[&str])]) -> Content {
        Content {
            efi: Some("EFI".into()),
            dirs: dirs
                .iter()
                .map(|(d, f)| (d.to_string(), f.iter().map(|x| x.to_string()).collect()))
                .collect(),
            fallback: None,
        }
    }

    #[test]
    fn names_per_arch() {
        assert_eq!(names(Some("amd64")).fallback, "BOOTX64.EFI");
        assert_eq!(names(Some("arm64")).fallback, "BOOTAA64.EFI");
        assert_eq!(names(Some("arm64")).shim, "shimaa64.efi");
        assert_eq!(names(None).grub, "grubx64.efi");
    }

    #[test]
    fn copies_from_the_guests_loader() {
        let n = names(Some("amd64"));
        // Debian without shim: GRUB itself, and its grub.cfg stub.
        let c = content(&[("debian", &["grubx64.efi", "grub.cfg"])]);
        let (v, copies) = fallback_copies(&c, "debian", &n).unwrap();
        assert_eq!(v, "debian");
        assert_eq!(
            copies,
            vec![
                (
                    "EFI/debian/grubx64.efi".into(),
                    "EFI/BOOT/BOOTX64.EFI".into()
                ),
                ("EFI/debian/grub.cfg".into(), "EFI/BOOT/grub.cfg".into())
            ]
        );
        // With shim: shim is the fallback, GRUB and MokManager beside it; an existing boot dir's case is kept.
        let c = content(&[
            ("boot", &[]),
            (
                "ubuntu",
                &["grubx64.efi", "mmx64.efi", "shimx64.efi", "BOOTX64.CSV"],
            ),
            ("debian", &["SHIMX64.EFI", "GRUBX64.EFI"]),
        ]);
        let (v, copies) = fallback_copies(&c, "ubuntu", &n).unwrap();
        assert_eq!(v, "ubuntu");
        assert_eq!(
            copies,
            vec![
                (
                    "EFI/ubuntu/shimx64.efi".into(),
                    "EFI/boot/BOOTX64.EFI".into()
                ),
                (
                    "EFI/ubuntu/grubx64.efi".into(),
                    "EFI/boot/grubx64.efi".into()
                ),
                ("EFI/ubuntu/mmx64.efi".into(), "EFI/boot/mmx64.efi".into()),
            ]
        );
        let (v, _) = fallback_copies(&c, "debian", &n).unwrap();
        assert_eq!(v, "debian");
        // Shim without GRUB is no loader; nothing usable at all.
        assert!(fallback_copies(&content(&[("debian", &["shimx64.efi"])]), "debian", &n).is_none());
        assert!(fallback_copies(&content(&[("Microsoft", &["bootmgfw.efi"])]), "", &n).is_none());
        assert!(fallback_copies(&Content::default(), "debian", &n).is_none());
        // A hostile directory name is never put into the planned command.
        let c = content(&[("a=b", &["grubx64.efi"]), ("x\nrm", &["grubx64.efi"])]);
        assert!(fallback_copies(&c, "", &n).is_none());
    }
}
