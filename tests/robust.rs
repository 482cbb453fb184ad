//! Robustness sweep over the pure parse/check/render functions: a corpus of third-party configuration files
//! (VMware, Hyper-V, Xen and old KVM templates, Debian 8-13, Ubuntu 14.04-24.04) and a deterministic
//! mutation loop over it. Properties: no function panics on any input; every rewriter is idempotent; a
//! rewriter that has nothing to do returns its input unchanged; the lines a rewriter has no business with
//! survive byte-identical and in order.

use cloudprep::checks::boot::{grub, initramfs};
use cloudprep::checks::network::{self as network, firewall, sshd, udev};
use cloudprep::checks::storage::{self as storage, fstab};
use cloudprep::checks::{cloud_init, platform};
use cloudprep::config::NamingPolicy;
use cloudprep::guest::facts;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

mod common;
use common::{assert_findings, findings, has_evidence, Guest};

// ---------------------------------------------------------------------------------------------------------
// Corpus

const FSTAB: &[&str] = &[
    // Debian 8 on VMware (installer output)
    "# /etc/fstab: static file system information.\n#\n# Use 'blkid' to print the universally unique identifier for a\n# device; this may be used with UUID= as a more robust way to name devices\n# that works even if disks are added and removed. See fstab(5).\n#\n# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n# / was on /dev/sda1 during installation\n/dev/sda1 /               ext4    errors=remount-ro 0       1\n# swap was on /dev/sda5 during installation\n/dev/sda5 none            swap    sw              0       0\n/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\n/dev/fd0        /media/floppy0  auto    rw,user,noauto  0       0\n",
    // Xen PV guest
    "proc /proc proc defaults 0 0\n/dev/xvda1 / ext3 defaults,errors=remount-ro 0 1\n/dev/xvda2 none swap sw 0 0\n",
    // Hyper-V with LVM, by-id, by-path, labels, tmpfs, bind, nfs, cifs, tabs, octal, 4 and 6 fields, CRLF
    "/dev/mapper/vg-root\t/\text4\tdefaults\t0\t1\r\n/dev/vg/home /home ext4 defaults 0 2\r\n/dev/disk/by-id/scsi-36000c29f1a2b3c4d5e6f7a8b9c0d1e2f-part1 /boot ext2 defaults 0 2\r\n/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part2 /srv xfs defaults\r\n/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:1:0-part1 /data ext4 defaults,nofail 0 2\r\nLABEL=cloudimg-rootfs /mnt/l ext4 defaults 0 0\r\nPARTUUID=0a1b2c3d-01 /mnt/p ext4 defaults 0 0\r\ntmpfs /tmp tmpfs defaults,size=512m 0 0\r\n/srv/export /export none bind 0 0\r\nfiler:/vol/home /mnt/nfs nfs rw,hard,intr 0 0\r\n//winsrv/share /mnt/smb cifs credentials=/root/.smb 0 0\r\n/dev/sdb1 /mnt/my\\040disk ext4 defaults 0 2 # trailing comment\r\nnone swap swap sw 0 0\r\n/dev/cdrom /media/cdrom iso9660 ro,user,noauto 0 0\r\n/dev/hda1 /old ext3",
    // old KVM / IDE
    "/dev/hda1 / ext3 defaults 1 1\n/dev/hdb1 /var ext3 defaults 1 2\n/dev/vda2 /x ext4 defaults 0 0\nUUID=\"1234-5678\" /boot/efi vfat umask=0077 0 1\n/swapfile none swap sw 0 0\n",
];

const GRUB: &[&str] = &[
    // Debian 8/9
    "# If you change this file, run 'update-grub' afterwards to update\n# /boot/grub/grub.cfg.\n\nGRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n\n# Uncomment to disable graphical terminal (grub-pc only)\n#GRUB_TERMINAL=console\n#GRUB_DISABLE_LINUX_UUID=true\n",
    // Ubuntu 14.04 with old device names
    "GRUB_DEFAULT=0\nGRUB_HIDDEN_TIMEOUT=0\nGRUB_HIDDEN_TIMEOUT_QUIET=true\nGRUB_TIMEOUT=10\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX='root=/dev/xvda1 console=hvc0 resume=/dev/sda5'\nGRUB_DISABLE_LINUX_UUID=true\nGRUB_DEVICE=/dev/sda1\n",
    // Ubuntu cloud image 50-cloudimg-settings.cfg
    "# Cloud Image specific Grub settings for Generic Cloud Images\n# CLOUD_IMG: This file was created/modified by the Cloud Image build process\n\n# Set the recordfail timeout\nGRUB_RECORDFAIL_TIMEOUT=0\n\n# Do not wait on grub prompt\nGRUB_TIMEOUT=0\n\n# Set the default commandline\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n\n# Set the grub console type\nGRUB_TERMINAL=console\n",
    // appended forms, export, CRLF, no final newline
    "export GRUB_CMDLINE_LINUX=\"console=tty0\"\r\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX net.ifnames=1 root=/dev/sda1\"\r\nGRUB_TERMINAL=\"gfxterm\"\r\nGRUB_SERIAL_COMMAND=\"serial --unit=0\"",
    // continuation and command substitution
    "GRUB_CMDLINE_LINUX=\"quiet \\\n  root=/dev/hda1\"\nGRUB_DISTRIBUTOR=$(lsb_release -i -s)\nif [ -f /x ]; then GRUB_TIMEOUT=2; fi\n",
];

const IFUPDOWN: &[&str] = &[
    // Debian 8 VMware static
    "# This file describes the network interfaces available on your system\n# and how to activate them. For more information, see interfaces(5).\n\nsource /etc/network/interfaces.d/*\n\n# The loopback network interface\nauto lo\niface lo inet loopback\n\n# The primary network interface\nallow-hotplug eth0\niface eth0 inet static\n\taddress 10.1.2.5\n\tnetmask 255.255.255.0\n\tnetwork 10.1.2.0\n\tbroadcast 10.1.2.255\n\tgateway 10.1.2.1\n\t# dns-* options are implemented by the resolvconf package, if installed\n\tdns-nameservers 10.1.2.53\n\tdns-search corp.example\n",
    // VMware predictable names, inet6, alias, up commands, continuation
    "auto lo ens192 ens160\niface lo inet loopback\niface ens192 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n    up ip route add 198.51.100.0/24 via 192.0.2.254 dev ens192\n    pre-up /sbin/ethtool -K ens192 tso off || \\\n       true\niface ens192 inet6 static\n    address 2001:db8::10\n    netmask 64\n    gateway 2001:db8::1\nauto ens192:0\niface ens192:0 inet static\n    address 192.0.2.11\n    netmask 255.255.255.0\niface ens160 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n",
    // bonds, bridges, VLANs, mapping, source-directory, CRLF, no final newline
    "source-directory interfaces.d\r\nmapping eth*\r\n  script /usr/local/sbin/map-scheme\r\n  map HOME eth0-home\r\nauto br0\r\niface br0 inet static\r\n  bridge_ports eth0 eth1\r\n  address 10.0.0.2\r\n  netmask 255.0.0.0\r\nauto bond0\r\niface bond0 inet manual\r\n  bond-slaves eth2 eth3\r\n  bond-mode active-backup\r\nauto vlan10\r\niface vlan10 inet static\r\n  vlan-raw-device eth0\r\n  address 172.16.10.2/24\r\niface eth0.20 inet dhcp",
    // Hyper-V: eth0 dhcp, garbage
    "auto eth0\niface eth0 inet dhcp\naddress 1.2.3.4\niface broken\n  post-up echo 'hi'\n",
];

const NETPLAN: &[&str] = &[
    // Ubuntu 18.04 server installer (VMware)
    "# This file describes the network interfaces available on your system\n# For more information, see netplan(5).\nnetwork:\n  version: 2\n  renderer: networkd\n  ethernets:\n    ens160:\n      addresses: [ 192.168.1.20/24 ]\n      gateway4: 192.168.1.1\n      nameservers:\n          search: [ corp.example ]\n          addresses:\n              - \"192.168.1.53\"\n              - 8.8.8.8\n      dhcp4: no\n",
    // subiquity with match + set-name
    "network:\n  ethernets:\n    id0:\n      match:\n        macaddress: 00:15:5d:01:02:03\n      set-name: eth0\n      dhcp4: false # static\n      addresses:\n      - 10.0.0.5/8\n      routes:\n        - to: default\n          via: 10.0.0.1\n  version: 2\n",
    // cloud-init rendered, CRLF, no final newline, macaddress spoofing
    "network:\r\n    version: 2\r\n    ethernets:\r\n        eth0:\r\n            dhcp4: true\r\n            macaddress: 00:16:3e:00:00:01\r\n            match:\r\n                name: eth0\r\n            set-name: eth0",
    // flow style, quoted keys, tabs (invalid)
    "network: {version: 2}\n---\nnetwork:\n  ethernets:\n    \"ens3\": {dhcp4: yes}\n\tbad: tab\n",
];

const UDEV: &[&str] = &[
    "# This file was automatically generated by the /lib/udev/write_net_rules\n# program, run by the persistent-net-generator.rules rules file.\n#\n# You can modify it, as long as you keep each rule on a single\n# line, and change only the value of the NAME= key.\n\n# PCI device 0x15ad:0x07b0 (vmxnet3)\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:a1:b2:c3\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n\n# PCI device 0x8086:0x100f (e1000)\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:a1:b2:c4\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth1\"\n",
    "# comment only\n",
    "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:15:5d:00:00:01\", NAME=\"eth0\"\r\nSUBSYSTEM==\"net\", SYSFS{address}==\"00:16:3e:00:00:02\", \\\r\n  NAME=\"eth1\"",
];

const CLOUD: &[&str] = &[
    "# The top level settings are used as module\n# and system configuration.\nusers:\n   - default\ndisable_root: true\npreserve_hostname: false\ndatasource_list: [ NoCloud, None ]\ncloud_init_modules:\n - migrator\n - seed_random\n",
    "datasource_list: [VMware, OVF]\ndatasource:\n  OVF:\n    allow_raw_data: true\n",
    "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ NoCloud, ConfigDrive, OpenNebula, Azure, AltCloud, OVF, MAAS, GCE, OpenStack, CloudSigma, SmartOS, Ec2, CloudStack, None ]\n",
    "network: {config: disabled}\n",
    "datasource:\n  None:\n    metadata:\n      instance-id: installer\ndatasource_list:\n- None\n",
    "datasource_list:\r\n  - Ec2\r\n  - None",
    "# only a comment",
    "---\n- not a mapping\n",
];

const FIREWALL: &[&str] = &[
    "# Generated by iptables-save v1.4.21\n*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [10:1000]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    "*filter\n:INPUT ACCEPT [0:0]\n-P INPUT DROP\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n",
    "*filter\n:ufw-user-input - [0:0]\n### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --set\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j ufw-user-limit\n-A ufw-user-input -p tcp --dport 22 -j ufw-user-limit-accept\nCOMMIT\n",
    "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tiif lo accept\n\t\tct state established,related accept\n\t\tip saddr 192.168.0.0/16 tcp dport ssh accept\n\t}\n}\n",
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone target=\"DROP\">\n  <short>Public</short>\n  <service name=\"dhcpv6-client\"/>\n  <rule family=\"ipv4\"><source address=\"10.0.0.0/8\"/><service name=\"ssh\"/><accept/></rule>\n</zone>\n",
    "Port 22\nListenAddress 10.1.2.5\nListenAddress 0.0.0.0\nListenAddress [fe80::1]:22\nMatch User bob\n  ListenAddress 1.2.3.4\n",
];

const MISC: &[&str] = &[
    "# List of modules that you want to include in your initramfs.\n#\n# Syntax:  module_name [args ...]\n#\n# You must run update-initramfs(8) to effect this change.\n#\n# Examples:\n#\n# raid1\n# sd_mod\nvmw_pvscsi\nhv_storvsc\n",
    "MODULES=most\nBUSYBOX=auto\nexport RESUME=\"/dev/sda5\" # swap\n",
    "8.11\n",
    "buster/sid\n",
    "Name: grub-pc/install_devices\r\nTemplate: grub-pc/install_devices\r\nValue: /dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001\r\nOwners: grub-pc\r\n",
    "(hd0)\t/dev/sda\n(hd1) /dev/disk/by-id/ata-x\n# c\n(fd0) /dev/fd0\n",
    "menuentry 'Debian' {\n\tlinux\t/vmlinuz-3.16.0-4-amd64 root=/dev/sda1 ro quiet\n\tlinux16 /x root=UUID=1 resume=/dev/xvda2\n}\nkernel /vmlinuz root=/dev/hda1\n",
    "[Match]\nName=ens192\n\n[Network]\nAddress=10.0.0.5/24\nGateway=10.0.0.1\n; comment\ngarbage line\n",
    "[connection]\nid=Wired\ninterface-name=ens160\n[ipv4]\nmethod=manual\naddress1=10.0.0.5/24,10.0.0.1\n",
    "domain corp.example\nnameserver 10.1.2.53\nnameserver\n",
    "vg0 {\n\tid = \"abc\"\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tid = \"x\"\n\t\t\tdevice = \"/dev/sda2\"\t# Hint only\n\t\t}\n\t\tpv1 {\n\t\t\tdevice = \"/dev/sdb\"\n\t\t}\n\t}\n\tlogical_volumes {\n\t\troot {\n\t\t}\n\t}\n}\n",
];

fn corpus() -> Vec<&'static str> {
    [FSTAB, GRUB, IFUPDOWN, NETPLAN, UDEV, CLOUD, FIREWALL, MISC]
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Deterministic mutations

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const PIECES: &[&str] = &[
    "\"",
    "'",
    "\\",
    "\\\n",
    "$",
    "${",
    "$(",
    "`",
    "#",
    " # c",
    "\t",
    "\r",
    "\r\n",
    "\n",
    "\0",
    "=",
    ":",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    "é",
    "中",
    "\u{feff}",
    "\\040",
    "\\777",
    "\\4",
    "/dev/sda1",
    "/dev/xvda",
    "eth0",
    "ens192",
    "root=",
    "UUID=",
    "auto ",
    "iface ",
    "  ",
    "-A INPUT ",
    "! ",
    "-j DROP",
    "dhcp4: ",
    "network:",
    "GRUB_CMDLINE_LINUX=",
    "NAME=\"",
    "datasource_list: [",
    "*",
    "?",
    "\u{0085}",
];

fn char_floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(s: &str, rng: &mut Rng) -> String {
    let mut t = s.to_string();
    for _ in 0..=rng.below(3) {
        match rng.below(9) {
            0..=2 => {
                let at = char_floor(&t, rng.below(t.len() + 1));
                let p = PIECES[rng.below(PIECES.len())];
                t.insert_str(at, p);
            }
            3 => {
                let a = char_floor(&t, rng.below(t.len() + 1));
                let b = char_floor(&t, a + rng.below(12));
                t.replace_range(a..b, "");
            }
            4 => {
                // Duplicate or drop a line.
                let lines: Vec<&str> = t.split_inclusive('\n').collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                    if rng.below(2) == 0 {
                        let l = v[i].clone();
                        v.insert(i, l);
                    } else {
                        v.remove(i);
                    }
                    t = v.concat();
                }
            }
            5 => t = t.replace("\r\n", "\n").replace('\n', "\r\n"),
            6 => {
                while t.ends_with('\n') || t.ends_with('\r') {
                    t.pop();
                }
            }
            7 => {
                let at = char_floor(&t, rng.below(t.len() + 1));
                let long = "x".repeat(20_000 + rng.below(100));
                t.insert_str(at, &long);
            }
            _ => {
                // Indent or dedent a line.
                let at = t[..char_floor(&t, rng.below(t.len() + 1))]
                    .rfind('\n')
                    .map(|p| p + 1)
                    .unwrap_or(0);
                if rng.below(2) == 0 {
                    t.insert(at, ' ');
                } else if t[at..].starts_with([' ', '\t']) {
                    t.remove(at);
                }
            }
        }
    }
    t
}

/// Inputs: the corpus as is, plus `n` mutations of each entry.
/// `CLOUDPREP_FUZZ_N` / `CLOUDPREP_FUZZ_SEED` override the count and the seed for a longer search.
fn inputs(n: usize) -> Vec<String> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let n = env("CLOUDPREP_FUZZ_N").map_or(n, |v| v as usize);
    let mut rng = Rng(env("CLOUDPREP_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v: Vec<String> = corpus().iter().map(|s| s.to_string()).collect();
    v.push(String::new());
    v.push("\n".into());
    v.push("\r".into());
    for base in corpus() {
        for _ in 0..n {
            v.push(mutate(base, &mut rng));
        }
    }
    v
}

fn run<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked ({msg}) on input {input:?}")
        }
    }
}

/// The lines of `input` for which `keep` holds appear in `output` byte-identical (terminators included) and
/// in the same order. Continuation lines belong to the statement they continue and are not compared.
fn assert_kept(what: &str, input: &str, output: &str, keep: impl Fn(&str) -> bool) {
    assert_kept_at(what, input, output, |_, l| keep(l))
}

/// [`assert_kept`] with the 1-based line number passed to `keep`.
fn assert_kept_at(what: &str, input: &str, output: &str, keep: impl Fn(usize, &str) -> bool) {
    let out: Vec<&str> = output.split_inclusive('\n').collect();
    let terminator = |r: &str| r == "\n" || r == "\r\n";
    let mut j = 0;
    let n = input.split_inclusive('\n').count();
    let mut continued = false;
    for (i, l) in input.split_inclusive('\n').enumerate() {
        // The last line may gain a terminator (a line appended after it).
        let last_unterminated = i + 1 == n && !l.ends_with('\n');
        // A continuation line belongs to the statement it continues.
        let cont = std::mem::replace(
            &mut continued,
            l.trim_end_matches(['\n', '\r']).ends_with('\\'),
        );
        if cont || !keep(i + 1, l) {
            continue;
        }
        let found = out[j..].iter().enumerate().position(|(k, o)| {
            *o == l
                || (last_unterminated && o.strip_prefix(l).is_some_and(terminator))
                // A file without a final newline keeps it missing after its last lines were dropped.
                || (j + k + 1 == out.len()
                    && !input.ends_with('\n')
                    && l.strip_prefix(*o).is_some_and(terminator))
        });
        match found {
            Some(p) => j += p + 1,
            None => panic!(
                "{what} lost or changed line {} {l:?}\ninput: {input:?}\noutput: {output:?}",
                i + 1
            ),
        }
    }
}

fn idempotent(what: &str, input: &str, f: impl Fn(&str) -> String) -> String {
    let once = run(what, input, || f(input));
    let twice = run(what, &once, || f(&once));
    assert_eq!(twice, once, "{what} is not idempotent on input {input:?}");
    once
}

fn idempotent_res(
    what: &str,
    input: &str,
    f: impl Fn(&str) -> anyhow::Result<String>,
) -> Option<String> {
    let once = run(what, input, || f(input)).ok()?;
    let twice = run(what, &once, || f(&once));
    match twice {
        Ok(t) => assert_eq!(t, once, "{what} is not idempotent on input {input:?}"),
        Err(e) => panic!("{what} accepted {input:?} but rejected its own output {once:?}: {e:#}"),
    }
    Some(once)
}

fn fails(prop: &impl Fn(&str), t: &str) -> bool {
    catch_unwind(AssertUnwindSafe(|| prop(t))).is_err()
}

/// Run `prop` on every input; on a failure, shrink the input (drop lines, then characters) and fail with
/// the smallest input that still fails.
fn check_all(inputs: &[String], prop: impl Fn(&str)) {
    for t in inputs {
        if !fails(&prop, t) {
            continue;
        }
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut cur = t.clone();
        loop {
            let mut smaller = None;
            let lines: Vec<&str> = cur.split_inclusive('\n').collect();
            for i in 0..lines.len() {
                let c: String = lines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, l)| *l)
                    .collect();
                if fails(&prop, &c) {
                    smaller = Some(c);
                    break;
                }
            }
            if smaller.is_none() {
                let idx: Vec<usize> = cur.char_indices().map(|(i, _)| i).collect();
                for chunk in [64usize, 8, 1] {
                    for &i in idx.iter().step_by(chunk) {
                        let end = char_floor(&cur, i + chunk);
                        let end = if end <= i {
                            cur[i..]
                                .chars()
                                .next()
                                .map(|c| i + c.len_utf8())
                                .unwrap_or(i)
                        } else {
                            end
                        };
                        let mut c = cur.clone();
                        c.replace_range(i..end, "");
                        if fails(&prop, &c) {
                            smaller = Some(c);
                            break;
                        }
                    }
                    if smaller.is_some() {
                        break;
                    }
                }
            }
            match smaller {
                Some(c) => cur = c,
                None => break,
            }
        }
        std::panic::set_hook(hook);
        prop(&cur);
        panic!("{cur:?} fails only sometimes");
    }
}

fn mentions(l: &str, words: &[&str]) -> bool {
    words.iter().any(|w| l.contains(w))
}

// ---------------------------------------------------------------------------------------------------------
// Properties

const N: usize = 60;

#[test]
fn parsers_never_panic() {
    let probe = firewall::Probe::new(22, NamingPolicy::Eth0);
    check_all(&inputs(N), |t| {
        run("fstab::parse_fstab", t, || fstab::parse_fstab(t));
        run("fstab::parse_resume", t, || fstab::parse_resume(t));
        run("facts::unescape_octal", t, || facts::unescape_octal(t));
        run("facts::unquote", t, || facts::unquote(t));
        for l in t.lines() {
            run("fstab::unstable_name", l, || fstab::unstable_name(l));
            run("fstab::guest_disk", l, || fstab::guest_disk(l));
            run("grub::bad_device", l, || grub::bad_device(l));
            run("storage::lvm_vg_of", l, || storage::lvm_vg_of(l));
            run("network::is_predictable", l, || network::is_predictable(l));
            run("cloud_init::upstream_major", l, || {
                cloud_init::upstream_major(l)
            });
            run("sshd::listen_host", l, || sshd::listen_host(l));
            run("firewall::shell_split", l, || firewall::shell_split(l));
            run("probe.port_in", l, || probe.port_in(l));
            run("initramfs::module_of", l, || {
                initramfs::module_of(l, "6.1.0-13-amd64")
            });
        }
        let e = run("shell::parse", t, || {
            grub::shell::parse(t, &mut Default::default())
        });
        for a in &e.assignments {
            let _ = run("shell::edit_words", &a.raw, || {
                grub::shell::edit_words(&a.raw, |_| grub::shell::WordEdit::Remove)
            });
            let _ = run("shell::append_words", &a.raw, || {
                grub::shell::append_words(&a.raw, &["x"])
            });
        }
        run("grub::grub_cfg_bad_params", t, || {
            grub::grub_cfg_bad_params(t)
        });
        run("grub::device_map_bad", t, || grub::device_map_bad(t));
        run("grub::install_devices", t, || grub::install_devices(t));
        run("grub::classify_mbr", t, || grub::classify_mbr(t.as_bytes()));
        run("ifupdown::parse", t, || network::ifupdown::parse(t));
        run("netplan::parse", t, || network::netplan::parse(t));
        run("ini::parse", t, || network::ini::parse(t));
        run("network::grub_has_ifnames0", t, || {
            network::grub_has_ifnames0(t)
        });
        run("network::resolv_nameservers", t, || {
            network::resolv_nameservers(t)
        });
        run("udev::parse_pin_rules", t, || udev::parse_pin_rules(t));
        run("udev::is_cloud_init_rendering", t, || {
            udev::is_cloud_init_rendering(t)
        });
        let v = run("cloud_init::parse_cfg", t, || cloud_init::parse_cfg(t));
        if let Ok(v) = &v {
            run("cloud_init::datasource_list_of", t, || {
                cloud_init::datasource_list_of(v)
            });
            run("cloud_init::classify_leftover", t, || {
                cloud_init::classify_leftover("99-installer.cfg", Some(v))
            });
        }
        run("cloud_init::top_key_line", t, || {
            cloud_init::top_key_line(t, "datasource_list")
        });
        run("cloud_init::cmdline_datasources", t, || {
            cloud_init::cmdline_datasources(t)
        });
        run("cloud_init::cmdline_word_lines", t, || {
            cloud_init::cmdline_word_lines(t, "cloud-init=disabled")
        });
        run("cloud_init::current_instance", t, || {
            cloud_init::current_instance(t, t)
        });
        run("cloud_init::loopback_host_lines", t, || {
            cloud_init::loopback_host_lines(t, "web1")
        });
        run("firewall::parse_iptables_save", t, || {
            let p = firewall::parse_iptables_save(t, &probe);
            for c in p.chains.keys() {
                firewall::evaluate(&p.chains, c, None);
            }
        });
        run("firewall::parse_nft", t, || firewall::parse_nft(t, &probe));
        run("firewall::firewalld_zone", t, || {
            firewall::firewalld_zone(t, &probe)
        });
        run("firewall::restore_paths", t, || firewall::restore_paths(t));
        run("sshd::listen_addresses", t, || sshd::listen_addresses(t));
        run("initramfs::listed_modules", t, || {
            initramfs::listed_modules(t)
        });
        run("initramfs::builtin_modules", t, || {
            initramfs::builtin_modules(t)
        });
        run("initramfs::builtin_symbols", t, || {
            initramfs::builtin_symbols(t)
        });
        run("initramfs::available_modules", t, || {
            initramfs::available_modules(t)
        });
        run("initramfs::modules_policy", t, || {
            initramfs::modules_policy(&[(
                "/etc/initramfs-tools/initramfs.conf".into(),
                t.to_string(),
            )])
        });
        run("platform::os_from_debian_version", t, || {
            platform::os_from_debian_version(t)
        });
        run("storage::parse_lvm_backup", t, || {
            storage::parse_lvm_backup(t)
        });
    });
}

#[test]
fn fstab_rewriters() {
    check_all(&inputs(N), |t| {
        for (old, new) in [
            ("/dev/sda1", "UUID=1111"),
            ("/dev/xvda1", "UUID=2222"),
            ("/dev/sdb1", "LABEL=a b"),
        ] {
            let new = fstab::escape_field(new);
            let out = idempotent("fstab::rewrite_fields", t, |c| {
                fstab::rewrite_fields(c, |f| {
                    if f[0] == old {
                        vec![(0, new.clone())]
                    } else {
                        Vec::new()
                    }
                })
            });
            assert_kept("fstab::rewrite_fields", t, &out, |l| !l.contains(old));
            let out = idempotent("fstab::rewrite_resume", t, |c| {
                fstab::rewrite_resume(c, old, &new)
            });
            assert_kept("fstab::rewrite_resume", t, &out, |l| !l.contains(old));
        }
        // Adding an option field (what storage.absent-devices does).
        let out = idempotent("fstab::rewrite_fields(+nofail)", t, |c| {
            fstab::rewrite_fields(c, |f| {
                if f.len() >= 3
                    && f[1] == "/data"
                    && !fstab::has_option(f.get(3).map(String::as_str).unwrap_or(""), "nofail")
                {
                    let cur = f.get(3).cloned().unwrap_or_default();
                    let new = if cur.is_empty() {
                        "nofail".to_string()
                    } else {
                        format!("{cur},nofail")
                    };
                    vec![(3, fstab::escape_field(&new))]
                } else {
                    Vec::new()
                }
            })
        });
        assert_kept("fstab::rewrite_fields(+nofail)", t, &out, |l| {
            !l.contains("/data")
        });
    });
}

#[test]
fn grub_rewriters() {
    let mut map = BTreeMap::new();
    map.insert("/dev/sda1".to_string(), "UUID=1111".to_string());
    map.insert("/dev/xvda1".to_string(), "UUID=2222".to_string());
    check_all(&inputs(N), |t| {
        let cmdline = |l: &str| mentions(l, &["GRUB_CMDLINE_LINUX", "\\"]) || !l.ends_with('\n');
        if let Some(out) = idempotent_res("grub::rewrite_cmdline_devices", t, |c| {
            grub::rewrite_cmdline_devices(c, &map)
        }) {
            assert_kept("grub::rewrite_cmdline_devices", t, &out, |l| {
                !cmdline(l) && !mentions(l, &["root=", "resume="])
            });
        }
        if let Some(out) = idempotent_res("grub::enable_linux_uuid", t, grub::enable_linux_uuid) {
            assert_kept("grub::enable_linux_uuid", t, &out, |l| {
                !mentions(l, &["GRUB_DISABLE_LINUX_UUID", "\\", ";"]) && l.ends_with('\n')
            });
        }
        // Lines of (possibly multi-line) GRUB_CMDLINE_LINUX assignments.
        let parsed = grub::shell::parse(t, &mut Default::default());
        let in_cmdline = |n: usize| {
            parsed.assignments.iter().any(|a| {
                a.name.starts_with("GRUB_CMDLINE_LINUX") && (a.line..=a.end_line).contains(&n)
            })
        };
        if let Some(out) = idempotent_res("grub::add_serial_console", t, grub::add_serial_console) {
            assert_kept_at("grub::add_serial_console", t, &out, |n, l| {
                !cmdline(l) && !in_cmdline(n)
            });
        }
        for add in [false, true] {
            if let Some(out) = idempotent_res("grub::add_serial_terminal", t, |c| {
                grub::add_serial_terminal(c, add)
            }) {
                let in_terminal = |n: usize| {
                    parsed
                        .assignments
                        .iter()
                        .any(|a| a.name == "GRUB_TERMINAL" && (a.line..=a.end_line).contains(&n))
                };
                assert_kept_at("grub::add_serial_terminal", t, &out, |n, l| {
                    !in_terminal(n) && !mentions(l, &["GRUB_TERMINAL", "\\"]) && l.ends_with('\n')
                });
            }
        }
        if let Some(out) = idempotent_res("network::grub_set_ifnames", t, network::grub_set_ifnames)
        {
            assert_kept("network::grub_set_ifnames", t, &out, |l| !cmdline(l));
            assert!(
                network::grub_has_ifnames0(&out),
                "grub_set_ifnames output lacks net.ifnames=0: {t:?} -> {out:?}"
            );
        }
        let out = idempotent("grub::set_install_devices", t, |c| {
            grub::set_install_devices(c, "/dev/vda")
        });
        assert_kept("grub::set_install_devices", t, &out, |l| {
            !l.starts_with("Value:")
        });
        let out = idempotent("cloud_init::drop_cmdline_word", t, |c| {
            cloud_init::drop_cmdline_word(c, "cloud-init=disabled")
        });
        assert_kept("cloud_init::drop_cmdline_word", t, &out, |l| {
            !l.contains("cloud-init=disabled")
        });
        let out = idempotent("shell::comment_out", t, |c| {
            grub::shell::comment_out(c, |a| a.name == "GRUB_DISABLE_LINUX_UUID")
        });
        assert_kept("shell::comment_out", t, &out, |l| {
            !mentions(l, &["GRUB_DISABLE_LINUX_UUID", "\\"])
        });
    });
}

#[test]
fn network_rewriters() {
    let map = vec![
        ("ens192".to_string(), "eth0".to_string()),
        ("ens160".to_string(), "eth1".to_string()),
    ];
    let names = vec!["eth0".to_string(), "ens192".to_string()];
    check_all(&inputs(N), |t| {
        let out = idempotent("ifupdown::rename", t, |c| {
            network::ifupdown::rename(c, &map)
        });
        assert_kept("ifupdown::rename", t, &out, |l| {
            !mentions(l, &["ens192", "ens160"])
        });
        let out = idempotent("ifupdown::to_dhcp", t, |c| {
            network::ifupdown::to_dhcp(c, &names, "eth0")
        });
        assert_kept("ifupdown::to_dhcp", t, &out, |l| {
            let k = l.split_whitespace().next().unwrap_or("");
            !network::ifupdown::is_static_option(k)
                && !mentions(l, &["iface", "\\"])
                && l.ends_with('\n')
        });
        let out = idempotent("ifupdown::drop_option", t, |c| {
            network::ifupdown::drop_option(c, "hwaddress")
        });
        assert_kept("ifupdown::drop_option", t, &out, |l| {
            !mentions(l, &["hwaddress", "\\"]) && l.ends_with('\n')
        });
        for has in [false, true] {
            let out = idempotent("network::ensure_eth0_dhcp", t, |c| {
                network::ensure_eth0_dhcp(c, has)
            });
            assert_kept("network::ensure_eth0_dhcp", t, &out, |_| true);
        }
        let out = idempotent("network::ini_rename", t, |c| network::ini_rename(c, &map));
        assert_kept("network::ini_rename", t, &out, |l| {
            !mentions(l, &["ens192", "ens160"])
        });
        let out = idempotent("network::nm_rename", t, |c| network::nm_rename(c, &map));
        assert_kept("network::nm_rename", t, &out, |l| {
            !mentions(l, &["ens192", "ens160"])
        });
        use network::ini::Op;
        let ops = [
            Op::Remove {
                section: "Network".into(),
                key: "Gateway".into(),
            },
            Op::Set {
                section: "Network".into(),
                key: "DHCP".into(),
                value: "ipv4".into(),
            },
            Op::AddIfMissing {
                section: "Match".into(),
                key: "Name".into(),
                value: "eth0".into(),
            },
            Op::DropSection {
                section: "Address".into(),
                with_key: None,
            },
        ];
        idempotent("ini::edit", t, |c| network::ini::edit(c, &ops));
        let ids = vec!["ens160".to_string(), "id0".to_string(), "eth0".to_string()];
        // The netplan editors work on valid YAML (netplan itself rejects the rest).
        // (A quoted scalar continued over several lines is one value: not compared line by line.)
        let multiline_scalar = t.lines().any(|l| l.matches('"').count() % 2 == 1);
        if serde_yaml::from_str::<serde_yaml::Value>(t).is_err() || multiline_scalar {
            return;
        }
        let out = idempotent("netplan::to_dhcp", t, |c| {
            network::netplan::to_dhcp(c, &ids)
        });
        // Lines of the dropped blocks are indented under the entry; the structure above it stays.
        let shallow = |l: &str| l.len() - l.trim_start().len() <= 4 && !l.trim().is_empty();
        assert_kept("netplan::to_dhcp", t, &out, |l| {
            shallow(l)
                && !mentions(
                    l,
                    &[
                        "addresses",
                        "gateway",
                        "routes",
                        "nameservers",
                        "dhcp4",
                        "- ",
                        "via",
                        "to:",
                        "search",
                        "8.8",
                    ],
                )
                && l.ends_with('\n')
        });
        let out = idempotent("netplan::unpin_mac", t, |c| {
            network::netplan::unpin_mac(c, &ids, "eth0")
        });
        assert_kept("netplan::unpin_mac", t, &out, |l| {
            shallow(l)
                && !mentions(
                    l,
                    &["match", "macaddress", "set-name", "name:", "id0", "ens160"],
                )
                && l.ends_with('\n')
        });
        let out = idempotent("netplan::drop_entry_key", t, |c| {
            network::netplan::drop_entry_key(c, &ids, "macaddress")
        });
        assert_kept("netplan::drop_entry_key", t, &out, |l| {
            shallow(l) && !l.contains("macaddress") && l.ends_with('\n')
        });
        let out = idempotent("netplan::rename", t, |c| network::netplan::rename(c, &map));
        assert_kept("netplan::rename", t, &out, |l| {
            !mentions(l, &["ens192", "ens160"])
        });
    });
}

#[test]
fn other_rewriters() {
    check_all(&inputs(N), |t| {
        let out = idempotent("cloud_init::comment_out_top_key", t, |c| {
            cloud_init::comment_out_top_key(c, "datasource_list")
        });
        assert_kept("cloud_init::comment_out_top_key", t, &out, |l| {
            !l.contains("datasource_list")
                && !l.starts_with([' ', '\t', '-'])
                && !l.trim().is_empty()
                && !l.starts_with('#')
                && l.contains(':')
        });
        if !t.contains("network:") {
            idempotent_res("cloud_init::ensure_snippet", t, |c| {
                cloud_init::ensure_snippet(c, "network:\n  config: disabled\n")
            });
        }
        let out = idempotent("sshd::drop_specific_listen", t, sshd::drop_specific_listen);
        assert_kept("sshd::drop_specific_listen", t, &out, |l| {
            !l.to_ascii_lowercase().contains("listenaddress")
        });
        let mods = vec![
            "virtio_blk".to_string(),
            "virtio-net".to_string(),
            "virtio_scsi".to_string(),
        ];
        let out = idempotent("initramfs::add_modules", t, |c| {
            initramfs::add_modules(c, &mods)
        });
        assert_kept("initramfs::add_modules", t, &out, |_| true);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Real roots: third-party variants planted into a debootstrap bookworm root

const ETH0_DHCP: &str =
    "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n";

#[test]
fn static_vlan_without_a_dot_name_is_not_converted_to_dhcp() {
    let g = Guest::bookworm();
    g.write(
        "/etc/network/interfaces",
        &format!("{ETH0_DHCP}\nauto vlan10\niface vlan10 inet static\n    vlan-raw-device eth0\n    address 172.16.10.2/24\n"),
    );
    let (_, v) = g.audit_json(&[]);
    let st = findings(&v, "network.static-addressing");
    assert_eq!(st.len(), 1, "{st:#?}");
    assert!(has_evidence(
        &v,
        "network.static-addressing",
        "/etc/network/interfaces",
        Some(8)
    ));
    // Like eth0.10: no DHCP on a VLAN the cloud does not deliver; a warning, and no rewrite to `inet dhcp`.
    assert_eq!(st[0]["severity"], "warning", "{:#}", st[0]);
    assert!(st[0]["fix"].is_null(), "{:#}", st[0]);
}

#[test]
fn net_ifnames_overridden_by_a_grub_d_file_is_not_taken_for_disabled() {
    let g = Guest::bookworm();
    g.write("/etc/network/interfaces", ETH0_DHCP);
    let grub = g.read("/etc/default/grub").replace(
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet net.ifnames=0\"",
    );
    assert!(grub.contains("net.ifnames=0"));
    g.write("/etc/default/grub", &grub);
    // net.ifnames=0 in /etc/default/grub: eth0 stays eth0, nothing to report.
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.interface-names", 0);
    // Ubuntu's cloud-image drop-in replaces GRUB_CMDLINE_LINUX_DEFAULT: the kernel gets no net.ifnames=0.
    g.write(
        "/etc/default/grub.d/50-cloudimg-settings.cfg",
        "# Cloud Image specific Grub settings for Generic Cloud Images\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(
        has_evidence(
            &v,
            "network.interface-names",
            "/etc/network/interfaces",
            Some(5)
        ),
        "{:#}",
        v["findings"]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Third-party variants, judged on strings

fn ipt(text: &str) -> firewall::Reach {
    let probe = firewall::Probe::new(22, NamingPolicy::Eth0);
    let p = firewall::parse_iptables_save(text, &probe);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    firewall::evaluate(&p.chains, "INPUT", None)
}

#[test]
fn firewall_variants() {
    use firewall::Reach;
    // iptables-persistent: SSH only from the old LAN, default DROP.
    assert!(
        matches!(ipt(FIREWALL[0]), Reach::Restricted { .. }),
        "{:?}",
        ipt(FIREWALL[0])
    );
    // Policy DROP with only the loopback accepted.
    let t = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
    assert!(
        matches!(ipt(t), Reach::Blocked { drop: (2, _) }),
        "{:?}",
        ipt(t)
    );
    // Open to everyone on the SSH port (service name, multiport, counters, comments).
    for rule in [
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -p tcp -m multiport --dports 80,443,22 -m comment --comment \"web and ssh\" -j ACCEPT",
        "[5:300] -A INPUT -p tcp --dport ssh -m state --state NEW -j ACCEPT",
        "-A INPUT -i eth0 -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 20:30 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
        "-A INPUT -s 0.0.0.0/0 -p tcp --syn --dport 22 -j ACCEPT",
    ] {
        let t = format!("*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n{rule}\nCOMMIT\n");
        assert_eq!(ipt(&t), Reach::Open, "{rule}");
    }
    // Only through an interface the cloud NIC will not have (ens192 on VMware).
    let t = "*filter\n:INPUT DROP [0:0]\n-A INPUT -i ens192 -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    assert!(matches!(ipt(t), Reach::Restricted { .. }), "{:?}", ipt(t));
    // A REJECT at the end of a user chain, ACCEPT policy.
    let t = "*filter\n:INPUT ACCEPT [0:0]\n:fw - [0:0]\n-A INPUT -j fw\n-A fw -i lo -j ACCEPT\n-A fw -p udp --dport 53 -j ACCEPT\n-A fw -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n";
    assert!(
        matches!(ipt(t), Reach::Blocked { drop: (7, _) }),
        "{:?}",
        ipt(t)
    );
    // Other tables do not filter.
    let t = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 22 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
    assert_eq!(ipt(t), Reach::Open);

    // nftables (Debian 10+ default file, then with a restricted SSH rule).
    let probe = firewall::Probe::new(22, NamingPolicy::Eth0);
    let default_conf = "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0;\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n\t}\n\tchain output {\n\t\ttype filter hook output priority 0;\n\t}\n}\n";
    let n = firewall::parse_nft(default_conf, &probe);
    assert_eq!(n.input_chains.len(), 1, "{n:?}");
    let n = firewall::parse_nft(FIREWALL[3], &probe);
    assert_eq!(n.input_chains.len(), 1, "{n:?}");
    let k = n.input_chains[0].clone();
    let scoped: firewall::Chains = n
        .chains
        .iter()
        .filter(|(kk, _)| kk.0 == k.0 && kk.1 == k.1)
        .map(|(kk, v)| (kk.2.clone(), v.clone()))
        .collect();
    assert!(
        matches!(
            firewall::evaluate(&scoped, &k.2, None),
            Reach::Restricted { .. }
        ),
        "{n:?}"
    );
}

#[test]
fn udev_rule_variants() {
    let r = udev::parse_pin_rules(UDEV[0]);
    let v: Vec<(usize, &str, &str)> = r
        .iter()
        .map(|p| (p.line, p.mac.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        v,
        vec![
            (8, "00:50:56:a1:b2:c3", "eth0"),
            (11, "00:50:56:a1:b2:c4", "eth1")
        ]
    );
    assert!(udev::parse_pin_rules(UDEV[1]).is_empty());
    let r = udev::parse_pin_rules(UDEV[2]);
    let v: Vec<(usize, &str, &str)> = r
        .iter()
        .map(|p| (p.line, p.mac.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        v,
        vec![
            (1, "00:15:5d:00:00:01", "eth0"),
            (2, "00:16:3e:00:00:02", "eth1")
        ]
    );
    // A rule that only matches by MAC to set an attribute does not rename.
    assert!(udev::parse_pin_rules(
        "SUBSYSTEM==\"net\", ATTR{address}==\"00:11:22:33:44:55\", RUN+=\"/bin/true\"\n"
    )
    .is_empty());
    // ENV{ID_NET_NAME} is not NAME.
    assert!(udev::parse_pin_rules(
        "ATTR{address}==\"00:11:22:33:44:55\", ENV{ID_NET_NAME}=\"x\"\n"
    )
    .is_empty());
    // cloud-init's own rendering.
    assert!(udev::is_cloud_init_rendering("SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"fa:16:3e:00:00:01\", NAME=\"eth0\"\n"));
    assert!(!udev::is_cloud_init_rendering(UDEV[0]));
}

#[test]
fn fstab_device_name_variants() {
    for s in [
        "/dev/xvda1",
        "/dev/xvda",
        "/dev/sda1",
        "/dev/hda1",
        "/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part1",
        "/dev/disk/by-id/scsi-36000c29f1a2b3c4d5e6f7a8b9c0d1e2f-part1",
        "/dev/disk/by-id/wwn-0x6000c29f1a2b3c4d-part1",
        "/dev/disk/by-id/virtio-0123456789abcdef-part1",
        "/dev/disk/by-path/pci-0000:00:07.1-ata-1-part1",
    ] {
        assert!(fstab::unstable_name(s).is_some(), "{s}");
    }
    for s in [
        "LABEL=root",
        "PARTUUID=0a1b2c3d-01",
        "UUID=0a1b",
        "/dev/mapper/vg-root",
        "/dev/vg/root",
        "/dev/disk/by-uuid/0a1b",
        "/dev/disk/by-label/root",
        "/dev/disk/by-partuuid/0a1b-01",
        "/dev/disk/by-id/dm-uuid-LVM-abc",
        "/dev/disk/by-id/lvm-pv-uuid-abc",
        "tmpfs",
        "none",
        "/srv/export",
        "//winsrv/share",
        "filer:/vol/home",
    ] {
        assert!(fstab::unstable_name(s).is_none(), "{s}");
    }
    let t = fstab::parse_fstab(FSTAB[2]);
    let e = |mp: &str| t.entries.iter().find(|e| e.mountpoint() == mp).unwrap();
    assert!(storage::is_network(e("/mnt/nfs")));
    assert!(storage::is_network(e("/mnt/smb")));
    assert!(!storage::is_network(e("/export")));
    assert!(!storage::is_network(e("/tmp")));
    assert!(storage::removable_media(e("/media/cdrom")).is_some());
    assert!(storage::removable_media(e("/")).is_none());
    // The trailing comment is read as extra fields: the six fields stay as they are.
    assert_eq!(
        e("/mnt/my disk").fields[..6],
        ["/dev/sdb1", "/mnt/my disk", "ext4", "defaults", "0", "2"]
    );
    // CRLF does not leak into the last field; the line without newline is still an entry.
    assert_eq!(e("/old").fstype(), "ext3");
    assert_eq!(e("/").fields.last().unwrap(), "1");
    let t = fstab::parse_fstab(FSTAB[0]);
    let e = |mp: &str| t.entries.iter().find(|e| e.mountpoint() == mp).unwrap();
    assert!(storage::removable_media(e("/media/floppy0")).is_some());
    assert!(storage::removable_media(e("/media/cdrom0")).is_some());
}

#[test]
fn cloud_init_config_variants() {
    let ds = |t: &str| cloud_init::datasource_list_of(&cloud_init::parse_cfg(t).unwrap());
    assert_eq!(
        ds(CLOUD[0]),
        Some(vec!["NoCloud".to_string(), "None".to_string()])
    );
    assert_eq!(
        ds(CLOUD[1]),
        Some(vec!["VMware".to_string(), "OVF".to_string()])
    );
    assert_eq!(ds(CLOUD[4]), Some(vec!["None".to_string()]));
    assert_eq!(
        ds(CLOUD[5]),
        Some(vec!["Ec2".to_string(), "None".to_string()])
    );
    assert_eq!(ds(CLOUD[6]), None);
    assert_eq!(
        ds("datasource_list: Ec2, None\n"),
        Some(vec!["Ec2".to_string(), "None".to_string()])
    );
    assert!(cloud_init::parse_cfg(CLOUD[7]).is_err());
    let l = cloud_init::classify_leftover(
        "99-installer.cfg",
        cloud_init::parse_cfg(CLOUD[4]).as_ref().ok(),
    )
    .unwrap();
    assert_eq!(l.sets_datasource, Some(vec!["None".to_string()]));
    let l = cloud_init::classify_leftover(
        "subiquity-disable-cloudinit-networking.cfg",
        cloud_init::parse_cfg(CLOUD[3]).as_ref().ok(),
    )
    .unwrap();
    assert!(l.disables_network);
    assert!(cloud_init::classify_leftover(
        "05_logging.cfg",
        cloud_init::parse_cfg("output: {}\n").as_ref().ok()
    )
    .is_none());
    // Commenting out a block list at column 0 and a flow list over two lines.
    let t = "a: 1\ndatasource_list:\n- NoCloud\n- None\nb: 2\n";
    assert_eq!(
        cloud_init::comment_out_top_key(t, "datasource_list"),
        "a: 1\n#datasource_list:\n#- NoCloud\n#- None\nb: 2\n"
    );
    let t = "datasource_list: [ NoCloud,\n   None ]\n# c\nb: 2\n";
    assert_eq!(
        cloud_init::comment_out_top_key(t, "datasource_list"),
        "#datasource_list: [ NoCloud,\n#   None ]\n# c\nb: 2\n"
    );
    assert_eq!(
        cloud_init::cmdline_datasources(
            "BOOT_IMAGE=/vmlinuz ro ds=nocloud-net;s=http://10.0.0.1/ quiet"
        ),
        Some(vec!["NoCloud".to_string()])
    );
}

#[test]
fn flow_style_netplan_dhcp_is_an_interface_with_dhcp() {
    let g = Guest::bookworm();
    g.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n",
    );
    let grub = g.read("/etc/default/grub");
    g.write(
        "/etc/default/grub",
        &grub.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"",
        ),
    );
    let mine = |v: &serde_json::Value| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                let id = f["id"].as_str().unwrap();
                id.starts_with("network.")
                    && id != "network.resolv-conf-static"
                    && id != "network.sshd"
            })
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Block style: eth0 with DHCP, nothing to report.
    g.write(
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(mine(&v).is_empty(), "{:?}", mine(&v));
    // The same in flow style (it was "no interface would come up with DHCP", a blocker).
    g.write(
        "/etc/netplan/50-cloud-init.yaml",
        "network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(mine(&v).is_empty(), "{:?}", mine(&v));
    // Flow-style static addressing is reported.
    g.write(
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    eth0: {addresses: [10.1.2.5/24], gateway4: 10.1.2.1}\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(
        has_evidence(
            &v,
            "network.static-addressing",
            "/etc/netplan/50-cloud-init.yaml",
            Some(4)
        ),
        "{:?}",
        mine(&v)
    );
    // ... without a rewrite that would put a block key under the flow mapping.
    let st = findings(&v, "network.static-addressing");
    assert!(st[0]["fix"].is_null(), "{:#}", st[0]);
}

#[test]
fn networkd_static_to_dhcp_keeps_the_rest() {
    use network::ini::Op;
    let t = "# written by hand\n[Match]\nName=ens192\n\n[Network]\n# static\nAddress=10.0.0.5/24\nGateway=10.0.0.1\nDNS=10.0.0.53\nIPv6AcceptRA=no\n\n[Address]\nAddress=10.0.0.6/24\n\n[Route]\nGateway=10.0.0.1\nDestination=0.0.0.0/0\n\n[Route]\nDestination=192.168.0.0/16\nScope=link\n";
    let ops = [
        Op::Remove {
            section: "Network".into(),
            key: "Address".into(),
        },
        Op::Remove {
            section: "Network".into(),
            key: "Gateway".into(),
        },
        Op::Remove {
            section: "Network".into(),
            key: "DNS".into(),
        },
        Op::DropSection {
            section: "Address".into(),
            with_key: None,
        },
        Op::DropSection {
            section: "Route".into(),
            with_key: Some("Gateway".into()),
        },
        Op::Set {
            section: "Network".into(),
            key: "DHCP".into(),
            value: "ipv4".into(),
        },
    ];
    let out = network::ini::edit(t, &ops);
    let ini = network::ini::parse(&out);
    assert_eq!(
        ini.get("Network", "DHCP").map(|e| e.value.as_str()),
        Some("ipv4")
    );
    assert!(ini.get("Network", "Address").is_none() && ini.get("Network", "Gateway").is_none());
    assert!(ini.get("Address", "Address").is_none());
    assert_eq!(
        ini.all("Route", "Destination")
            .map(|e| e.value.as_str())
            .collect::<Vec<_>>(),
        vec!["192.168.0.0/16"]
    );
    assert_kept("ini::edit", t, &out, |l| {
        !mentions(l, &["Address", "Gateway", "DNS", "Destination=0.0.0.0"])
            && !l.trim().is_empty()
            && l != "[Route]\n"
    });
    assert_eq!(network::ini::edit(&out, &ops), out);
    // NetworkManager keyfile (CRLF, no final newline).
    let nm = "[connection]\r\nid=Wired connection 1\r\ninterface-name=ens160\r\n\r\n[ipv4]\r\naddress1=10.0.0.5/24,10.0.0.1\r\ndns=10.0.0.53;\r\nmethod=manual\r\n\r\n[ipv6]\r\nmethod=ignore";
    let ops = [
        Op::Remove {
            section: "ipv4".into(),
            key: "address1".into(),
        },
        Op::Remove {
            section: "ipv4".into(),
            key: "dns".into(),
        },
        Op::Set {
            section: "ipv4".into(),
            key: "method".into(),
            value: "auto".into(),
        },
    ];
    let out = network::ini::edit(nm, &ops);
    assert_eq!(out, "[connection]\r\nid=Wired connection 1\r\ninterface-name=ens160\r\n\r\n[ipv4]\r\nmethod=auto\r\n\r\n[ipv6]\r\nmethod=ignore");
    assert_eq!(
        network::nm_rename(&out, &[("ens160".into(), "eth0".into())]),
        out.replace("interface-name=ens160", "interface-name=eth0")
    );
}

#[test]
fn dhcp_on_a_bridge_or_bond_over_eth0_is_dhcp_for_the_nic() {
    let g = Guest::bookworm();
    let grub = g.read("/etc/default/grub");
    g.write(
        "/etc/default/grub",
        &grub.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"",
        ),
    );
    // A bridge over eth0 (a VM running containers): adding `iface eth0 inet dhcp` next to it would run a
    // DHCP client on a bridge port.
    g.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto br0\niface br0 inet dhcp\n    bridge_ports eth0\n    bridge_stp off\n    bridge_fd 0\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.no-primary-dhcp", 0);
    // A static active-backup bond whose slave names its master: converted to DHCP, and that is enough.
    g.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto bond0\niface bond0 inet static\n    address 10.0.0.5/24\n    gateway 10.0.0.1\n    bond-slaves none\n    bond-mode active-backup\n\nallow-hotplug eth0\niface eth0 inet manual\n    bond-master bond0\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.no-primary-dhcp", 0);
    assert!(has_evidence(
        &v,
        "network.static-addressing",
        "/etc/network/interfaces",
        Some(6)
    ));
    // A bridge over another NIC only does not count for eth0.
    g.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto br1\niface br1 inet dhcp\n    bridge_ports eth1\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.no-primary-dhcp", 1);
}

#[test]
fn distribution_default_grub_files_parse_cleanly() {
    let files = [
        // Ubuntu 22.04/24.04
        "# If you change this file, run 'update-grub' afterwards to update\n# /boot/grub/grub.cfg.\n# For full documentation of the options in this file, see:\n#   info -f grub -n 'Simple configuration'\n\nGRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n\n# Uncomment to enable BadRAM filtering, modify to suit your needs\n#GRUB_BADRAM=\"0x01234567,0xfefefefe,0x89abcdef,0xefefefef\"\n#GRUB_TERMINAL=console\n#GRUB_GFXMODE=640x480\n#GRUB_DISABLE_LINUX_UUID=true\n#GRUB_DISABLE_RECOVERY=\"true\"\n#GRUB_INIT_TUNE=\"480 440 1\"\n",
        // Debian 13
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`( . /etc/os-release && echo ${NAME} )`\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n\n# If your computer has multiple operating systems installed, then you\n# probably want to run os-prober. However, if your computer is a host\n# for guest OSes installed via LVM or raw disk devices, running\n# os-prober can cause damage to those guest OSes as it mounts\n# filesystems to look for things.\n# If you wish to enable os-prober anyway, uncomment the following line:\n#GRUB_DISABLE_OS_PROBER=false\n",
        // Ubuntu 14.04 (Xen image with a console on hvc0)
        "GRUB_DEFAULT=0\nGRUB_HIDDEN_TIMEOUT=0\nGRUB_HIDDEN_TIMEOUT_QUIET=true\nGRUB_TIMEOUT=10\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"console=hvc0 xencons=tty root=/dev/xvda1\"\n",
    ];
    for t in files {
        let p = grub::shell::parse(t, &mut Default::default());
        assert!(p.bad.is_empty(), "{:?}\n{t}", p.bad);
        assert!(p.last("GRUB_CMDLINE_LINUX").is_some());
        let out = grub::add_serial_console(t).unwrap();
        assert_eq!(grub::add_serial_console(&out).unwrap(), out);
        let p2 = grub::shell::parse(&out, &mut Default::default());
        assert!(p2
            .last("GRUB_CMDLINE_LINUX")
            .unwrap()
            .value
            .ends_with("console=tty0 console=ttyS0,115200"));
        let out = grub::add_serial_terminal(&out, true).unwrap();
        assert_eq!(grub::add_serial_terminal(&out, true).unwrap(), out);
        let out = network::grub_set_ifnames(&out).unwrap();
        assert!(network::defaults_ifnames0(&[(
            "/etc/default/grub".into(),
            out.clone()
        )]));
        let mut map = BTreeMap::new();
        map.insert("/dev/xvda1".to_string(), "UUID=abcd".to_string());
        let out = grub::rewrite_cmdline_devices(&out, &map).unwrap();
        let p3 = grub::shell::parse(&out, &mut Default::default());
        assert!(p3.bad.is_empty(), "{:?}\n{out}", p3.bad);
        let v = &p3.last("GRUB_CMDLINE_LINUX").unwrap().value;
        assert!(!v.contains("/dev/xvda1"), "{v}");
        assert_eq!(
            v.contains("root=UUID=abcd"),
            t.contains("root=/dev/xvda1"),
            "{v}"
        );
        // The other lines are all still there.
        assert_kept("grub defaults", t, &out, |l| {
            !l.contains("GRUB_CMDLINE_LINUX=")
        });
        // sh still reads the file.
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &out).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(f.path())
            .status()
            .unwrap();
        assert!(st.success(), "sh -n rejects {out}");
    }
}

#[test]
fn ifupdown_variants() {
    use network::ifupdown;
    // `auto` with several names, allow-hotplug, aliases, inet6, continuation lines.
    let p = ifupdown::parse(IFUPDOWN[1]);
    let autos: Vec<String> = p.autos().into_iter().map(|a| a.1).collect();
    assert_eq!(autos, vec!["lo", "ens192", "ens160", "ens192:0"]);
    let s: Vec<(&str, &str, &str)> = p
        .stanzas
        .iter()
        .map(|s| (s.name.as_str(), s.family.as_str(), s.method.as_str()))
        .collect();
    assert_eq!(
        s,
        vec![
            ("lo", "inet", "loopback"),
            ("ens192", "inet", "static"),
            ("ens192", "inet6", "static"),
            ("ens192:0", "inet", "static"),
            ("ens160", "inet", "dhcp")
        ]
    );
    assert_eq!(p.garbage().count(), 0);
    // The continued pre-up is one option spanning two lines.
    let pre = p.stanzas[1].opts.iter().find(|o| o.0 == "pre-up").unwrap();
    assert_eq!((pre.2, pre.3), (7, 8));
    let out = ifupdown::to_dhcp(
        IFUPDOWN[1],
        &["ens192".to_string(), "eth0".to_string()],
        "eth0",
    );
    assert_eq!(
        out,
        "auto lo ens192 ens160\niface lo inet loopback\niface eth0 inet dhcp\n    up ip route add 198.51.100.0/24 via 192.0.2.254 dev ens192\n    pre-up /sbin/ethtool -K ens192 tso off || \\\n       true\niface eth0 inet6 auto\nauto ens192:0\niface ens192:0 inet static\n    address 192.0.2.11\n    netmask 255.255.255.0\niface ens160 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n"
    );
    let out = ifupdown::rename(
        &out,
        &[
            ("ens192".into(), "eth0".into()),
            ("ens160".into(), "eth1".into()),
        ],
    );
    assert!(!out.contains("ens1"), "{out}");
    assert!(
        out.contains("auto eth0:0\niface eth0:0 inet static\n"),
        "{out}"
    );
    let out = ifupdown::drop_option(&out, "hwaddress");
    assert!(out.ends_with("iface eth1 inet dhcp\n"), "{out}");
    // Bridges, bonds, VLANs, mapping, CRLF, no final newline: the garbage-free parse and a no-op rename.
    let p = ifupdown::parse(IFUPDOWN[2]);
    assert_eq!(
        p.garbage().count(),
        0,
        "{:?}",
        p.garbage().collect::<Vec<_>>()
    );
    assert_eq!(p.sources(), vec![(true, "interfaces.d".to_string(), 1)]);
    assert_eq!(
        ifupdown::rename(IFUPDOWN[2], &[("ens192".into(), "eth0".into())]),
        IFUPDOWN[2]
    );
    let out = ifupdown::rename(IFUPDOWN[2], &[("eth0".into(), "eth9".into())]);
    assert!(out.contains("bridge_ports eth9 eth1\r\n") && out.contains("vlan-raw-device eth9\r\n"));
    assert!(out.ends_with("iface eth9.20 inet dhcp"), "{out}");
    // Hyper-V guest: an unindented option still belongs to the stanza above it; an incomplete iface line and
    // the option after it are reported.
    let p = ifupdown::parse(IFUPDOWN[3]);
    let g: Vec<usize> = p.garbage().map(|(l, _)| l.first).collect();
    assert_eq!(g, vec![4, 5]);
    assert_eq!(p.stanzas[0].opt("address"), Some("1.2.3.4"));
}

/// `ifquery --list` of the guest's ifupdown on an interfaces file (inside the guest root).
fn ifquery_ok(g: &Guest, text: &str, allow: &str) -> (bool, String) {
    g.write("/etc/network/interfaces.robust", text);
    let out = std::process::Command::new("chroot")
        .arg(g.root())
        .args([
            "ifquery",
            "--interfaces",
            "/etc/network/interfaces.robust",
            "--list",
            "--allow",
            allow,
        ])
        .output()
        .expect("chroot ifquery");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn ifupdown_rewrites_are_accepted_by_ifquery() {
    if !common::is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let g = Guest::bookworm();
    let map = [
        ("ens192".to_string(), "eth0".to_string()),
        ("ens160".to_string(), "eth1".to_string()),
    ];
    let mut checked = 0;
    for t in IFUPDOWN {
        if !ifquery_ok(&g, t, "auto").0 {
            continue;
        }
        let a = network::ifupdown::to_dhcp(t, &["ens192".into(), "eth0".into()], "eth0");
        let b = network::ifupdown::rename(&a, &map);
        let c = network::ifupdown::drop_option(&b, "hwaddress");
        let d = network::ensure_eth0_dhcp(&c, false);
        // (to_dhcp renames the stanza; the rename of the auto line and of the other mentions is part of
        // the same fix, so the file is only ever written with both.)
        for out in [&b, &c, &d] {
            let (ok, msg) = ifquery_ok(&g, out, "auto");
            assert!(ok, "ifquery rejects\n{out}\n{msg}");
        }
        // eth0 comes up at boot (`auto`, or `allow-hotplug` when udev announces the NIC).
        let listed = ifquery_ok(&g, &d, "auto").1 + &ifquery_ok(&g, &d, "hotplug").1;
        assert!(listed.lines().any(|l| l == "eth0"), "{listed}\n{d}");
        checked += 1;
    }
    assert!(checked >= 3, "{checked}");
}

/// `findmnt --verify` parse errors of an fstab text (the other errors depend on this machine's devices).
fn findmnt_parse_errors(text: &str) -> usize {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    let out = std::process::Command::new("findmnt")
        .args(["--verify", "--tab-file"])
        .arg(f.path())
        .output()
        .expect("findmnt");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = all
        .lines()
        .find(|l| l.contains("parse error"))
        .unwrap_or_else(|| panic!("{all}"));
    summary.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn fstab_rewrites_parse_with_findmnt() {
    for t in FSTAB {
        let before = findmnt_parse_errors(t);
        let out = fstab::rewrite_fields(t, |f| {
            let mut e = Vec::new();
            if fstab::unstable_name(&f[0]).is_some() {
                e.push((
                    0,
                    fstab::escape_field("UUID=0a1b2c3d-1111-4111-8111-111111111111"),
                ));
            }
            if f.len() >= 3
                && f[1] != "/"
                && !fstab::has_option(f.get(3).map(String::as_str).unwrap_or(""), "nofail")
            {
                let cur = f.get(3).cloned().unwrap_or_default();
                let new = if cur.is_empty() {
                    "nofail".to_string()
                } else {
                    format!("{cur},nofail")
                };
                e.push((3, fstab::escape_field(&new)));
            }
            e
        });
        assert_ne!(out, *t);
        assert!(findmnt_parse_errors(&out) <= before, "{t}\n->\n{out}");
        let parsed = fstab::parse_fstab(&out);
        assert!(parsed
            .entries
            .iter()
            .all(|e| fstab::unstable_name(e.spec()).is_none()));
    }
}

#[test]
fn vmware_customized_netplan_composes_to_one_dhcp_entry() {
    // Written by open-vm-tools' guest customization on Ubuntu 18.04+.
    let t = "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    nic0:\n      match:\n        macaddress: 00:50:56:bb:cc:dd\n      wakeonlan: true\n      set-name: ens192\n      dhcp4: false\n      addresses:\n        - 10.0.0.5/24\n      gateway4: 10.0.0.1\n      nameservers:\n        addresses: [8.8.8.8]\n";
    let ids = vec!["nic0".to_string(), "eth0".to_string(), "ens192".to_string()];
    let a = network::netplan::unpin_mac(t, &ids, "eth0");
    let b = network::netplan::to_dhcp(&a, &ids);
    let c = network::netplan::rename(&b, &[("ens192".into(), "eth0".into())]);
    assert_eq!(
        c,
        "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eth0:\n      wakeonlan: true\n      dhcp4: true\n"
    );
    let np = network::netplan::parse(&c);
    assert_eq!(np.ifaces.len(), 1);
    assert_eq!(np.ifaces[0].name(), Some("eth0"));
    assert!(np.ifaces[0].dhcp4 && np.ifaces[0].match_mac.is_none());
    // Any order of the three edits gives the same file.
    let d = network::netplan::rename(t, &[("ens192".into(), "eth0".into())]);
    let d = network::netplan::to_dhcp(&d, &ids);
    let d = network::netplan::unpin_mac(&d, &ids, "eth0");
    assert_eq!(d, c);
}

#[test]
fn networking_init_script_without_a_native_unit_is_enabled_by_its_rc_links() {
    let g = Guest::bookworm();
    let grub = g.read("/etc/default/grub");
    g.write(
        "/etc/default/grub",
        &grub.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"",
        ),
    );
    g.write("/etc/network/interfaces", ETH0_DHCP);
    // Debian 8's ifupdown: /etc/init.d/networking and its rcS.d link, no networking.service; systemd's sysv
    // generator starts it at boot.
    g.remove("/lib/systemd/system/networking.service");
    g.remove("/etc/systemd/system/multi-user.target.wants/networking.service");
    g.remove("/etc/systemd/system/network-online.target.wants/networking.service");
    assert!(g.path("/etc/init.d/networking").exists());
    assert!(std::fs::read_dir(g.path("/etc/rcS.d")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with("networking")));
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.no-primary-dhcp", 0);
    // Without the rc link it is not started.
    for e in std::fs::read_dir(g.path("/etc/rcS.d")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with("networking") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.no-primary-dhcp", 1);
}

#[test]
fn naming_policy_masked_by_the_default_link_keeps_kernel_names() {
    let g = Guest::bookworm();
    g.write("/etc/network/interfaces", ETH0_DHCP);
    // bookworm renames NICs: a configuration for eth0 needs kernel names.
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.interface-names", 1);
    // Masking the default .link (udev's README.Debian) keeps kernel names as net.ifnames=0 does.
    std::fs::create_dir_all(g.path("/etc/systemd/network")).unwrap();
    std::os::unix::fs::symlink("/dev/null", g.path("/etc/systemd/network/99-default.link"))
        .unwrap();
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.interface-names", 0);
    // An own 99-default.link with content is not a mask.
    std::fs::remove_file(g.path("/etc/systemd/network/99-default.link")).unwrap();
    g.write(
        "/etc/systemd/network/99-default.link",
        "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "network.interface-names", 1);
}

#[test]
fn ubuntu_installer_and_vmware_cloud_init_leftovers() {
    let g = Guest::release("bookworm", "cloud");
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ VMware, OVF, None ]\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        "datasource:\n  None:\n    metadata:\n      instance-id: 1234\n    userdata_raw: \"#cloud-config\\n\"\ndatasource_list:\n- None\n",
    );
    g.write(
        "/etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg",
        "network: {config: disabled}\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert!(has_evidence(
        &v,
        "cloud-init.datasource",
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        Some(6)
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.installer-leftovers",
        "/etc/cloud/cloud.cfg.d/99-installer.cfg",
        Some(6)
    ));
    assert!(has_evidence(
        &v,
        "cloud-init.installer-leftovers",
        "/etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg",
        Some(1)
    ));
    // The fix plan rewrites 90_dpkg.cfg to the cloud's datasource and removes both leftovers.
    let ds = findings(&v, "cloud-init.datasource");
    let files: Vec<(&str, &str)> = ds[0]["fix"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["action"].as_str().unwrap()))
        .collect();
    assert!(
        files.contains(&("/etc/cloud/cloud.cfg.d/90_dpkg.cfg", "rewrite")),
        "{files:?}"
    );
    for f in findings(&v, "cloud-init.installer-leftovers") {
        assert_eq!(f["fix"]["files"][0]["action"], "remove", "{f:#}");
    }
    // A correct configuration is quiet: Ec2 first, nothing left over.
    g.remove("/etc/cloud/cloud.cfg.d/99-installer.cfg");
    g.remove("/etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg");
    g.write(
        "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n",
    );
    let (_, v) = g.audit_json(&[]);
    assert_findings(&v, "cloud-init.datasource", 0);
    assert_findings(&v, "cloud-init.installer-leftovers", 0);
}
