//! firewalld zones: does the default zone let SSH in?

use super::*;

fn xml_attr(tag: &str, name: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"\b{name}\s*=\s*["']([^"']*)["']"#)).ok()?;
    re.captures(tag).map(|c| c[1].to_string())
}

/// Evaluate a firewalld zone file for the SSH port: None when SSH is open to everyone.
pub fn firewalld_zone(xml: &str, probe: &Probe) -> Reach {
    let tag_re = regex::Regex::new(r"(?s)<(/?)([a-zA-Z-]+)([^>]*?)(/?)>").unwrap();
    let line_of = |pos: usize| xml[..pos].matches('\n').count() + 1;
    let mut in_rule: Option<(usize, Vec<String>, bool, bool)> = None; // (line, sources, port ok, accept)
    let mut accepts = Vec::new();
    let mut zone_line = (1, String::new());
    for c in tag_re.captures_iter(xml) {
        let whole = c.get(0).unwrap();
        let closing = &c[1] == "/";
        let name = &c[2];
        let attrs = &c[3];
        let line = line_of(whole.start());
        match (name, closing) {
            ("zone", false) => {
                zone_line = (line, whole.as_str().to_string());
                if let Some(t) = xml_attr(attrs, "target") {
                    if t.eq_ignore_ascii_case("ACCEPT") {
                        return Reach::Open;
                    }
                }
            }
            ("rule", false) => in_rule = Some((line, vec![], false, false)),
            ("rule", true) => {
                if let Some((l, src, port, acc)) = in_rule.take() {
                    if port && acc {
                        if src.is_empty() {
                            return Reach::Open;
                        }
                        accepts.push((
                            l,
                            format!("rich rule at line {l}"),
                            format!("from {}", src.join(", ")),
                        ));
                    }
                }
            }
            ("source", false) => {
                if let Some(r) = in_rule.as_mut() {
                    if let Some(a) = xml_attr(attrs, "address").or_else(|| xml_attr(attrs, "ipset"))
                    {
                        if xml_attr(attrs, "invert").as_deref() != Some("true") && !is_any_addr(&a)
                        {
                            r.1.push(a);
                        }
                    }
                }
            }
            ("accept", false) => {
                if let Some(r) = in_rule.as_mut() {
                    r.3 = true;
                }
            }
            ("service", false) | ("port", false) => {
                let ok = if name == "service" {
                    xml_attr(attrs, "name").as_deref() == Some("ssh") && probe.port == 22
                } else {
                    xml_attr(attrs, "protocol").as_deref() != Some("udp")
                        && xml_attr(attrs, "port").is_some_and(|p| probe.port_in(&p))
                };
                match in_rule.as_mut() {
                    Some(r) => r.2 |= ok,
                    None if ok => return Reach::Open,
                    None => {}
                }
            }
            _ => {}
        }
    }
    if accepts.is_empty() {
        Reach::Blocked { drop: zone_line }
    } else {
        Reach::Restricted {
            accepts,
            drop: zone_line,
        }
    }
}

/// firewalld's shipped zones that allow ssh.
pub(super) fn builtin_zone_allows_ssh(zone: &str) -> bool {
    matches!(
        zone,
        "public"
            | "external"
            | "dmz"
            | "work"
            | "home"
            | "internal"
            | "trusted"
            | "FedoraServer"
            | "FedoraWorkstation"
    )
}

// ---------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::super::tests::probe;
    use super::*;

    #[test]
    fn firewalld_zones() {
        let public = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <service name=\"dhcpv6-client\"/>\n</zone>\n";
        assert_eq!(firewalld_zone(public, &probe()), Reach::Open);
        let rich = "<?xml version=\"1.0\"?>\n<zone>\n  <service name=\"http\"/>\n  <rule family=\"ipv4\">\n    <source address=\"10.1.2.0/24\"/>\n    <service name=\"ssh\"/>\n    <accept/>\n  </rule>\n</zone>\n";
        match firewalld_zone(rich, &probe()) {
            Reach::Restricted { accepts, .. } => assert_eq!(accepts[0].2, "from 10.1.2.0/24"),
            r => panic!("{r:?}"),
        }
        let drop = "<zone target=\"DROP\">\n</zone>\n";
        assert!(matches!(
            firewalld_zone(drop, &probe()),
            Reach::Blocked { .. }
        ));
        assert_eq!(
            firewalld_zone("<zone target=\"ACCEPT\"/>", &probe()),
            Reach::Open
        );
        assert_eq!(
            firewalld_zone(
                "<zone><port protocol=\"tcp\" port=\"20-30\"/></zone>",
                &probe()
            ),
            Reach::Open
        );
    }
}
