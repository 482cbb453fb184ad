//! Live network facts (interfaces with MAC and addresses, routes): recorded in the report because the
//! operator loses them after the migration. Only called on a live root. Read-only: /sys, /proc and
//! getifaddrs(3); nothing is sent on the network.

use crate::guest::facts::{Interface, Route};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

pub fn interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let dir = ent.path();
            let mac = std::fs::read_to_string(dir.join("address"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            let driver = std::fs::read_link(dir.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            by_name.insert(
                name.clone(),
                Interface {
                    name,
                    mac,
                    driver,
                    addresses: Vec::new(),
                },
            );
        }
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            let prefix = a.netmask.as_ref().map(prefix_len);
            let text = if let Some(v4) = addr.as_sockaddr_in() {
                Some(format!("{}", v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| format!("{}", v6.ip()))
            };
            let Some(text) = text else { continue };
            let e = by_name
                .entry(a.interface_name.clone())
                .or_insert_with(|| Interface {
                    name: a.interface_name.clone(),
                    ..Default::default()
                });
            let s = match prefix.flatten() {
                Some(p) => format!("{text}/{p}"),
                None => text,
            };
            if !e.addresses.contains(&s) {
                e.addresses.push(s);
            }
        }
    }
    by_name.into_values().collect()
}

fn prefix_len(mask: &nix::sys::socket::SockaddrStorage) -> Option<u32> {
    if let Some(v4) = mask.as_sockaddr_in() {
        return Some(u32::from(v4.ip()).count_ones());
    }
    mask.as_sockaddr_in6()
        .map(|v6| u128::from(v6.ip()).count_ones())
}

pub fn routes() -> Vec<Route> {
    let mut v = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        v.extend(parse_route(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        v.extend(parse_ipv6_route(&t));
    }
    v
}

fn hex_v4(s: &str) -> Option<Ipv4Addr> {
    // /proc/net/route prints the network-order address bytes read as a native-endian u32.
    u32::from_str_radix(s, 16)
        .ok()
        .map(|n| Ipv4Addr::from(n.to_ne_bytes()))
}

/// `/proc/net/route`: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
pub fn parse_route(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dst), Some(gw), Some(mask)) = (hex_v4(f[1]), hex_v4(f[2]), hex_v4(f[7])) else {
            continue;
        };
        let plen = u32::from(mask).count_ones();
        out.push(Route {
            destination: if plen == 0 {
                "default".to_string()
            } else {
                format!("{dst}/{plen}")
            },
            gateway: (!gw.is_unspecified()).then(|| gw.to_string()),
            interface: f[0].to_string(),
        });
    }
    out
}

/// `/proc/net/ipv6_route`: dst dst_len src src_len next_hop metric refcnt use flags iface.
pub fn parse_ipv6_route(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Ok(dst), Ok(plen), Ok(nh)) = (
            u128::from_str_radix(f[0], 16),
            u32::from_str_radix(f[1], 16),
            u128::from_str_radix(f[4], 16),
        ) else {
            continue;
        };
        let iface = f[9];
        let flags = u32::from_str_radix(f[8], 16).unwrap_or(0);
        // Skip loopback, local-address (RTF_LOCAL) and multicast (ff00::/8) entries.
        if iface == "lo" || flags & 0x8000_0000 != 0 || (dst >> 120) == 0xff {
            continue;
        }
        let dst = Ipv6Addr::from(dst);
        let nh = Ipv6Addr::from(nh);
        out.push(Route {
            destination: if plen == 0 {
                "default".to_string()
            } else {
                format!("{dst}/{plen}")
            },
            gateway: (!nh.is_unspecified()).then(|| nh.to_string()),
            interface: iface.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_routes() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
garbage\n";
        let r = parse_route(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].destination, "default");
        assert_eq!(r[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(r[1].destination, "192.0.2.0/24");
        assert_eq!(r[1].gateway, None);
    }

    #[test]
    fn ipv6_routes() {
        let t = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 00200001       lo\n\
20010db8000000000000000000000010 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001     eth0\n\
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        let r = parse_ipv6_route(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].destination, "2001:db8::/64");
        assert_eq!(r[1].destination, "default");
        assert_eq!(r[1].gateway.as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn live_facts_do_not_panic() {
        let i = interfaces();
        assert!(i.iter().any(|x| x.name == "lo"));
        let _ = routes();
    }
}
