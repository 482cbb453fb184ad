//! CSV of a fleet report: one row per host × finding (RFC 4180: CRLF line ends, fields with a comma, quote,
//! CR or LF quoted, quotes doubled). A field a spreadsheet would run as a formula (starting with `=`, `+`,
//! `-`, `@`, tab or CR) gets a leading `'`: report text comes from the guests and is not trusted.

use super::Fleet;

pub const HEADER: [&str; 9] = [
    "host",
    "check_id",
    "severity",
    "status",
    "path",
    "line",
    "text",
    "title",
    "host_status",
];

pub fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn row(out: &mut String, cells: &[&str]) {
    let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
    out.push_str(&line.join(","));
    out.push_str("\r\n");
}

/// Path, line and text of a finding's first evidence (the message when it has none).
pub fn render(f: &Fleet) -> String {
    let mut out = String::new();
    row(&mut out, &HEADER);
    for h in &f.hosts {
        for x in &h.findings {
            let (path, line, text) = match x.evidence.first() {
                Some(e) => (
                    e.path.as_str(),
                    e.line.map(|l| l.to_string()).unwrap_or_default(),
                    e.text.as_str(),
                ),
                None => ("", String::new(), x.message.as_str()),
            };
            row(
                &mut out,
                &[
                    &h.name,
                    &x.id,
                    &x.severity.to_string(),
                    &format!("{:?}", x.status).to_lowercase(),
                    path,
                    &line,
                    text,
                    &x.title,
                    h.status.label(),
                ],
            );
        }
    }
    out
}

/// Parse RFC 4180 CSV (for the tests and for checking our own output).
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            '"' => {
                return Err(format!(
                    "a quote inside an unquoted field in row {}",
                    rows.len() + 1
                ))
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, report};
    use super::super::{merge, waivers::Waivers, Input};
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
    }

    #[test]
    fn one_row_per_host_and_finding_round_trips() {
        let mut hostile = finding("fstab.device-names", "blocker", "open");
        hostile["evidence"][0]["text"] = json!("/dev/sda1, \"quoted\"\r\nnext line");
        let f = merge(
            &[
                Input {
                    source: "h1.json".into(),
                    content: Ok(report(
                        json!([hostile, finding("net.x", "warning", "waived")]),
                        "bios",
                    )),
                },
                Input {
                    source: "h2.json".into(),
                    content: Ok(report(json!([]), "bios")),
                },
            ],
            &Waivers::default(),
        );
        let text = render(&f);
        assert!(text.ends_with("\r\n"));
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0], HEADER);
        assert_eq!(
            rows[1][..7],
            [
                "h1",
                "fstab.device-names",
                "blocker",
                "open",
                "/etc/fstab",
                "3",
                "/dev/sda1, \"quoted\"\r\nnext line"
            ]
        );
        assert_eq!(rows[2][3], "waived");
        assert!(rows.iter().all(|r| r.len() == HEADER.len()));
    }
}
