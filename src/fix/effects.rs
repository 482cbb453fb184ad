//! What a planned command changes: the trees it writes (backed up before it runs) and whether the
//! change can be undone.

use super::*;

pub(super) struct Tree {
    pub(super) dir: &'static str,
    pub(super) recursive: bool,
    /// Which existing entries to back up (all entries are listed so new ones are removed on rollback).
    pub(super) backup: fn(&str) -> bool,
}

pub(super) struct Effects {
    pub(super) trees: Vec<Tree>,
    pub(super) reversible: bool,
    pub(super) note: &'static str,
}

fn all(_: &str) -> bool {
    true
}

pub(super) fn effects(argv: &[String]) -> Effects {
    let prog = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default();
    let debconf = Tree {
        dir: "/var/cache/debconf",
        recursive: false,
        backup: all,
    };
    match prog.as_str() {
        "update-initramfs" | "mkinitramfs" => Effects {
            trees: vec![
                Tree {
                    dir: "/boot",
                    recursive: false,
                    backup: |n| n.starts_with("initrd.img"),
                },
                Tree {
                    dir: "/var/lib/initramfs-tools",
                    recursive: false,
                    backup: all,
                },
            ],
            reversible: true,
            note: "initramfs images backed up",
        },
        "update-grub" | "update-grub2" | "grub-mkconfig" => Effects {
            trees: vec![Tree {
                dir: "/boot/grub",
                recursive: false,
                backup: |n| matches!(n, "grub.cfg" | "grubenv"),
            }],
            reversible: true,
            note: "grub.cfg backed up",
        },
        "grub-install" => Effects {
            trees: vec![
                Tree {
                    dir: "/boot/grub",
                    recursive: true,
                    backup: all,
                },
                debconf,
            ],
            reversible: false,
            note: "files under /boot/grub are restored; the boot code on the disk too when it was saved",
        },
        "debconf-set-selections" => Effects {
            trees: vec![debconf],
            reversible: true,
            note: "debconf database backed up",
        },
        "dpkg-reconfigure" => Effects {
            trees: vec![debconf],
            reversible: false,
            note: "debconf database restored, but the package's maintainer scripts may have changed other files",
        },
        "systemctl" if matches!(argv.get(1).map(String::as_str), Some("enable" | "disable" | "mask" | "unmask")) => Effects {
            trees: vec![Tree {
                dir: "/etc/systemd/system",
                recursive: true,
                backup: all,
            }],
            reversible: true,
            note: "unit links under /etc/systemd/system backed up",
        },
        "true" => Effects {
            trees: vec![],
            reversible: true,
            note: "no effect",
        },
        "apt-get" | "apt" | "aptitude" | "dpkg" => Effects {
            trees: vec![debconf],
            reversible: false,
            note: "installed or removed packages are not undone by rollback",
        },
        _ => Effects {
            trees: vec![],
            reversible: false,
            note: "effects of this command are not tracked",
        },
    }
}

/// Entries (relative paths, parents before children) of a guest directory tree, not crossing filesystems.
pub(super) fn list_tree(root: &Root, dir: &str, recursive: bool) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let r = root.resolve(dir)?;
    let Ok(top) = std::fs::symlink_metadata(&r.host) else {
        return Ok(Vec::new());
    };
    if !top.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let host = if rel.is_empty() {
            r.host.clone()
        } else {
            r.host.join(&rel)
        };
        let mut names: Vec<String> = std::fs::read_dir(&host)
            .with_context(|| format!("listing {}", host.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let relp = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            out.push(relp.clone());
            if recursive {
                if let Ok(m) = std::fs::symlink_metadata(host.join(&n)) {
                    if m.is_dir() && m.dev() == top.dev() {
                        stack.push(relp);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_effects() {
        let e = effects(&argv(&["update-initramfs", "-u", "-k", "all"]));
        assert!(e.reversible);
        assert!(e
            .trees
            .iter()
            .any(|t| t.dir == "/boot" && (t.backup)("initrd.img-6.1.0-9-amd64")));
        assert!(!e
            .trees
            .iter()
            .any(|t| t.dir == "/boot" && (t.backup)("vmlinuz-6.1.0-9-amd64")));
        let e = effects(&argv(&["/usr/sbin/update-grub"]));
        assert!(e.reversible && e.trees.iter().any(|t| (t.backup)("grub.cfg")));
        assert!(!effects(&argv(&["grub-install", "/dev/vda"])).reversible);
        let e = effects(&argv(&["apt-get", "install", "-y", "cloud-init"]));
        assert!(!e.reversible);
        assert!(e.trees.iter().any(|t| t.dir == "/var/cache/debconf"));
        assert!(!effects(&argv(&["some-tool"])).reversible);
        assert!(effects(&argv(&["systemctl", "enable", "x.service"])).reversible);
        assert!(!effects(&argv(&["systemctl", "start", "x.service"])).reversible);
    }
}
