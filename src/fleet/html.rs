//! The fleet report as one self-contained HTML page for the change board: inline CSS, JS and SVG, nothing
//! fetched. Summary counts with a chart, a sortable and filterable host table, each host expandable to its
//! findings with evidence and planned diffs.
//!
//! Every string from a report is escaped ([`esc`]); report data only ever lands in element text or quoted
//! attributes, never inside the `<script>`. The script reads the DOM. `#q=TEXT&status=S&sort=COL` in the URL
//! sets the filter and sort on load (handy for links, and how the browser test drives it). A script error
//! puts `<div id="js-error">` into the page.

use super::{text::nics, Fleet, FleetFinding, FleetHost, HostStatus};
use crate::checks::Status;

/// Escape for HTML text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters other than newline and tab are not valid in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
.cards{display:flex;gap:.8em;flex-wrap:wrap}
.card{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;min-width:7em}
.card b{display:block;font-size:1.6em}
.ready{color:#17752e}.warnings{color:#9a6700}.blocked{color:#b3261e}.audit-error{color:#7b2a9e}.unreadable{color:#555}
table{border-collapse:collapse;width:100%;margin-top:.6em}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th.sortable{cursor:pointer;user-select:none;white-space:nowrap}
th.sortable::after{content:" \2195";color:#999}
th[aria-sort=ascending]::after{content:" \2191";color:#222}
th[aria-sort=descending]::after{content:" \2193";color:#222}
tr.host{cursor:pointer} tr.host:hover{background:#f4f6fa}
tr.details>td{background:#fafafa}
.finding{border-left:4px solid #ccc;padding:.2em .8em;margin:.6em 0}
.finding.blocker{border-color:#b3261e}.finding.warning{border-color:#d4a017}.finding.info{border-color:#3b7dd8}
.finding.waived{opacity:.65}
pre{background:#f3f3f3;padding:.5em;overflow:auto;white-space:pre-wrap}
.add{color:#17752e}.del{color:#b3261e}
.controls{display:flex;gap:1em;align-items:center;margin:.6em 0}
#js-error{background:#b3261e;color:#fff;padding:.5em}
.muted{color:#666}
"#;

const JS: &str = r#"
(function(){
  'use strict';
  window.onerror = function(msg){
    var d = document.createElement('div'); d.id = 'js-error'; d.textContent = 'script error: ' + msg;
    document.body.insertBefore(d, document.body.firstChild);
  };
  var table = document.getElementById('hosts'), body = table.tBodies[0];
  var q = document.getElementById('filter'), st = document.getElementById('status-filter');
  var shown = document.getElementById('shown');
  function pairs(){
    var out = [], rows = body.rows;
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].className.indexOf('host') === 0) out.push([rows[i], rows[i + 1]]);
    }
    return out;
  }
  function apply(){
    var text = q.value.toLowerCase(), want = st.value, n = 0;
    pairs().forEach(function(p){
      var ok = (!text || p[0].getAttribute('data-search').indexOf(text) >= 0) &&
               (!want || p[0].getAttribute('data-status') === want);
      p[0].hidden = !ok; p[1].hidden = !ok || p[0].getAttribute('aria-expanded') !== 'true';
      if (ok) n++;
    });
    shown.textContent = n;
    body.setAttribute('data-visible', String(n));
  }
  function sortBy(th, dir){
    var col = th.getAttribute('data-col'), num = th.getAttribute('data-type') === 'num';
    var ps = pairs();
    ps.sort(function(a, b){
      var x = a[0].getAttribute('data-' + col), y = b[0].getAttribute('data-' + col);
      var c = num ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
      return dir === 'descending' ? -c : c;
    });
    ps.forEach(function(p){ body.appendChild(p[0]); body.appendChild(p[1]); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(c){ c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    body.setAttribute('data-sorted', col + ':' + dir);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th){
    if (!th.getAttribute('data-col')) return;
    th.className = 'sortable';
    th.addEventListener('click', function(){
      sortBy(th, th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending');
    });
  });
  function toggle(row, open){
    row.setAttribute('aria-expanded', open ? 'true' : 'false');
    row.nextElementSibling.hidden = !open || row.hidden;
  }
  pairs().forEach(function(p){
    p[0].addEventListener('click', function(){ toggle(p[0], p[0].getAttribute('aria-expanded') !== 'true'); });
  });
  document.getElementById('expand-all').addEventListener('click', function(){
    pairs().forEach(function(p){ toggle(p[0], true); });
  });
  q.addEventListener('input', apply); st.addEventListener('change', apply);
  // Initial state from the URL fragment: #q=web&status=blocked&sort=-blockers&open=all
  var h = new URLSearchParams(location.hash.replace(/^#/, ''));
  if (h.get('q')) q.value = h.get('q');
  if (h.get('status')) st.value = h.get('status');
  var s = h.get('sort');
  if (s) {
    var desc = s.charAt(0) === '-', th = table.querySelector('th[data-col="' + s.replace(/^-/, '').replace(/[^a-z_]/g, '') + '"]');
    if (th) sortBy(th, desc ? 'descending' : 'ascending');
  }
  if (h.get('open') === 'all') pairs().forEach(function(p){ toggle(p[0], true); });
  apply();
  document.getElementById('js-status').textContent = 'interactive';
})();
"#;

/// Inline SVG bar chart of the host statuses.
fn chart(f: &Fleet) -> String {
    let t = &f.totals;
    let bars = [
        ("ready", t.ready, "#2e9e4f"),
        ("warnings", t.warnings, "#d4a017"),
        ("blocked", t.blocked, "#b3261e"),
        ("audit error", t.audit_error, "#7b2a9e"),
        ("unreadable", t.unreadable, "#888"),
    ];
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let (w, row) = (360.0, 26);
    let mut s = format!(
        "<svg id=\"status-chart\" role=\"img\" aria-label=\"hosts by status\" xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"{}\">",
        bars.len() * row + 8
    );
    for (i, (label, n, colour)) in bars.iter().enumerate() {
        let y = i * row + 4;
        let len = (*n as f64 / max as f64 * w).round();
        s.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{label}</text><rect class=\"bar\" data-status=\"{label}\" x=\"100\" y=\"{y}\" width=\"{len}\" height=\"18\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"13\">{n}</text>",
            y + 14,
            100.0 + len + 6.0,
            y + 14
        ));
    }
    s.push_str("</svg>");
    s
}

fn diff_html(d: &str) -> String {
    d.lines()
        .map(|l| {
            let cls = if l.starts_with('+') && !l.starts_with("+++") {
                "add"
            } else if l.starts_with('-') && !l.starts_with("---") {
                "del"
            } else {
                ""
            };
            if cls.is_empty() {
                esc(l)
            } else {
                format!("<span class=\"{cls}\">{}</span>", esc(l))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn finding_html(x: &FleetFinding) -> String {
    let status = match x.status {
        Status::Open => "open",
        Status::Error => "check error",
        Status::Waived => "waived",
    };
    let mut s = format!(
        "<div class=\"finding {} {}\" data-id=\"{}\"><b>{}</b> <code>{}</code> [{}] {}<br>{}",
        x.severity,
        if x.status == Status::Waived {
            "waived"
        } else {
            ""
        },
        esc(&x.id),
        esc(&x.severity.to_string().to_uppercase()),
        esc(&x.id),
        status,
        esc(&x.title),
        esc(&x.message)
    );
    if let Some(w) = &x.waiver {
        s.push_str(&format!("<br><i>{}</i>", esc(w)));
    }
    if !x.evidence.is_empty() {
        s.push_str("<pre class=\"evidence\">");
        for e in &x.evidence {
            let loc = match e.line {
                Some(l) => format!("{}:{l}", e.path),
                None => e.path.clone(),
            };
            s.push_str(&format!("{}: {}\n", esc(&loc), esc(&e.text)));
        }
        s.push_str("</pre>");
    }
    if !x.remediation.is_empty() {
        s.push_str(&format!("<div>fix: {}</div>", esc(&x.remediation)));
    }
    for d in &x.diffs {
        s.push_str(&format!(
            "<div class=\"muted\">planned ({} {}):</div><pre class=\"diff\">{}</pre>",
            esc(&d.action),
            esc(&d.path),
            diff_html(&d.diff)
        ));
    }
    for c in &x.commands {
        s.push_str(&format!(
            "<div class=\"muted\">planned command: <code>{}</code></div>",
            esc(c)
        ));
    }
    s.push_str("</div>");
    s
}

fn status_class(s: HostStatus) -> &'static str {
    match s {
        HostStatus::Ready => "ready",
        HostStatus::Warnings => "warnings",
        HostStatus::AuditError => "audit-error",
        HostStatus::Blocked => "blocked",
    }
}

fn host_rows(h: &FleetHost) -> String {
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let flavour = format!(
        "{} vCPU / {} MiB",
        h.flavour
            .vcpus
            .map(|x| x.to_string())
            .unwrap_or_else(|| "?".into()),
        h.flavour
            .ram_mib
            .map(|x| x.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let nic_lines = nics(h);
    let os = h.os.clone().unwrap_or_else(|| "unknown".into());
    let search = format!(
        "{} {} {} {}",
        h.name,
        os,
        h.blocker_ids.join(" "),
        nic_lines.join(" ")
    )
    .to_lowercase();
    // Sort keys: the status sorts worst-last ascending (ready < warnings < audit error < blocked).
    let rank = h.status as u8;
    let mut s = format!(
        "<tr class=\"host {cls}\" tabindex=\"0\" aria-expanded=\"false\" data-host=\"{name}\" data-status=\"{cls}\" data-search=\"{search}\" \
data-name=\"{name}\" data-os=\"{oss}\" data-state=\"{rank}\" data-blockers=\"{b}\" data-warnings=\"{w}\" data-vcpus=\"{vc}\" data-ram=\"{ram}\" data-disk=\"{disk}\" data-firmware=\"{fw}\">\
<td>{name}</td><td class=\"{cls}\">{label}</td><td>{oss}</td><td>{b}</td><td>{w}</td><td>{ids}</td><td>{flavour}</td><td>{disk}</td><td>{fw}</td><td>{nics}</td></tr>\n",
        cls = status_class(h.status),
        name = esc(&h.name),
        search = esc(&search),
        oss = esc(&os),
        rank = rank,
        b = h.blockers,
        w = h.warnings,
        vc = opt(h.flavour.vcpus),
        ram = opt(h.flavour.ram_mib),
        disk = opt(h.min_disk_gib),
        fw = esc(&h.firmware),
        label = h.status.label(),
        ids = esc(&h.blocker_ids.join(", ")),
        flavour = esc(&flavour),
        nics = nic_lines.iter().map(|n| esc(n)).collect::<Vec<_>>().join("<br>"),
    );
    s.push_str("<tr class=\"details\" hidden><td colspan=\"10\">");
    s.push_str(&format!("<div class=\"muted\">report: {}", esc(&h.source)));
    if !h.image_properties.is_empty() {
        let props: Vec<String> = h
            .image_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!(
            "; image properties: <code>{}</code>",
            esc(&props.join(" "))
        ));
    }
    s.push_str("</div>");
    if h.findings.is_empty() {
        s.push_str("<p>No findings.</p>");
    }
    for x in &h.findings {
        s.push_str(&finding_html(x));
    }
    s.push_str("</td></tr>\n");
    s
}

pub fn render(f: &Fleet) -> String {
    let t = &f.totals;
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    // No network: a CSP that forbids every fetch; only the inline style and script run.
    s.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">");
    s.push_str(&format!(
        "<title>cloudprep fleet report: {} hosts</title><style>{CSS}</style></head><body>\n",
        t.hosts
    ));
    s.push_str(&format!(
        "<h1>cloudprep fleet readiness</h1><p class=\"muted\">cloudprep {} &middot; <span id=\"js-status\">static</span></p>\n",
        esc(&f.tool.version)
    ));
    s.push_str("<div class=\"cards\" id=\"totals\">");
    for (label, cls, n) in [
        ("hosts", "", t.hosts),
        ("ready", "ready", t.ready),
        ("warnings", "warnings", t.warnings),
        ("blocked", "blocked", t.blocked),
        ("audit error", "audit-error", t.audit_error),
        ("unreadable reports", "unreadable", t.unreadable),
    ] {
        s.push_str(&format!(
            "<div class=\"card {cls}\" data-total=\"{}\"><b>{n}</b>{label}</div>",
            label.replace(' ', "-")
        ));
    }
    s.push_str("</div>\n");
    s.push_str(&chart(f));
    s.push_str("\n<h2>Hosts</h2><div class=\"controls\"><label>Filter <input id=\"filter\" type=\"search\" placeholder=\"host, OS, check id, MAC\"></label>");
    s.push_str("<label>Status <select id=\"status-filter\"><option value=\"\">all</option><option value=\"ready\">ready</option><option value=\"warnings\">warnings</option><option value=\"blocked\">blocked</option><option value=\"audit-error\">audit error</option></select></label>");
    s.push_str(&format!(
        "<span><span id=\"shown\">{}</span> shown</span><button id=\"expand-all\" type=\"button\">expand all</button></div>\n",
        f.hosts.len()
    ));
    s.push_str("<table id=\"hosts\"><thead><tr><th data-col=\"name\">host</th><th data-col=\"state\" data-type=\"num\">status</th><th data-col=\"os\">OS</th><th data-col=\"blockers\" data-type=\"num\">blockers</th><th data-col=\"warnings\" data-type=\"num\">warnings</th><th>blocker ids</th><th data-col=\"ram\" data-type=\"num\">flavour</th><th data-col=\"disk\" data-type=\"num\">min disk (GiB)</th><th data-col=\"firmware\">firmware</th><th>NICs (name MAC addresses gateway)</th></tr></thead><tbody>\n");
    for h in &f.hosts {
        s.push_str(&host_rows(h));
    }
    s.push_str("</tbody></table>\n");
    s.push_str("<h2>Checks by failing hosts</h2><table id=\"checks\"><thead><tr><th>hosts failing</th><th>severity</th><th>check</th><th>title</th><th>waived on</th><th>hosts</th></tr></thead><tbody>\n");
    for c in &f.checks {
        s.push_str(&format!(
            "<tr data-check=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&c.id),
            c.hosts_failing,
            c.severity,
            esc(&c.id),
            esc(&c.title),
            c.hosts_waived,
            esc(&c.hosts.join(", "))
        ));
    }
    s.push_str("</tbody></table>\n");
    if !f.skipped.is_empty() {
        s.push_str("<h2 class=\"unreadable\">Skipped inputs (not merged)</h2><ul id=\"skipped\">");
        for k in &f.skipped {
            s.push_str(&format!(
                "<li><code>{}</code>: {}</li>",
                esc(&k.source),
                esc(&k.reason)
            ));
        }
        s.push_str("</ul>\n");
    }
    s.push_str(&format!("<script>{JS}</script>\n</body></html>\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finding, report};
    use super::super::{merge, waivers::Waivers, Input};
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_everything() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(esc("a\u{1}b\n"), "a\u{fffd}b\n");
    }

    #[test]
    fn hostile_report_strings_stay_text() {
        let mut bad = finding("fstab.device-names", "blocker", "open");
        bad["evidence"][0]["text"] =
            json!("</pre><script>alert(1)</script><img src=x onerror=alert(2)>");
        bad["title"] = json!("\"><svg onload=alert(3)>");
        bad["fix"]["files"][0]["diff"] = json!("-</script>\n+<b>x</b>\n");
        let r = report(json!([bad]), "bios").replace(
            "Debian GNU/Linux 12 (bookworm)",
            "</script><script>alert(4)</script>",
        );
        let f = merge(
            &[
                Input {
                    source: "\"><script>alert(5)</script>.json".into(),
                    content: Ok(r),
                },
                Input {
                    source: "<b>bad</b>.json".into(),
                    content: Ok("{".into()),
                },
            ],
            &Waivers::default(),
        );
        let h = render(&f);
        assert_eq!(h.matches("<script>").count(), 1, "only our own script");
        assert_eq!(h.matches("</script>").count(), 1);
        assert!(!h.contains("<img"), "{h}");
        assert!(!h.contains("<svg onload"));
        assert!(!h.contains("<b>bad"));
        assert!(h.contains("&lt;img src=x onerror=alert(2)&gt;"));
        // Our script comes after all data.
        assert!(h.rfind("alert(").unwrap() < h.find("<script>").unwrap());
    }

    #[test]
    fn page_is_self_contained_with_rows_chart_and_findings() {
        let f = merge(
            &[
                Input {
                    source: "web1.json".into(),
                    content: Ok(report(
                        json!([finding("fstab.device-names", "blocker", "open")]),
                        "bios",
                    )),
                },
                Input {
                    source: "db1.json".into(),
                    content: Ok(report(json!([]), "uefi")),
                },
            ],
            &Waivers::default(),
        );
        let h = render(&f);
        for needle in ["http://", "https://", "src=", "@import", "url("] {
            // The SVG namespace is an identifier, not a fetch.
            let n = h.matches(needle).count() - if needle == "http://" { 1 } else { 0 };
            assert_eq!(n, 0, "{needle} in the page");
        }
        assert!(h.contains("data-host=\"web1\""));
        assert!(h.contains("data-host=\"db1\" data-status=\"ready\""));
        assert!(h.contains("<svg id=\"status-chart\""));
        assert!(h.contains("<span class=\"del\">-a</span>"));
        assert!(h.contains("data-total=\"blocked\"><b>1</b>"));
    }
}
