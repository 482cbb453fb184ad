//! A small reader/editor for shell variable files such as /etc/default/grub: quotes ('..', ".."), comments,
//! `export`, `$VAR` / `${VAR}` expansion of earlier assignments (`X="$X more"`), continuation lines, CRLF.
//! Edits splice the raw value of one assignment and keep every other byte as it was.

use anyhow::{bail, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    /// 1-based line of the assignment.
    pub line: usize,
    /// Last physical line of its statement.
    pub end_line: usize,
    /// Byte range of the raw value (after `NAME=`).
    pub value_start: usize,
    pub value_end: usize,
    pub raw: String,
    /// The value after quote removal and expansion of earlier assignments.
    pub value: String,
    /// The statement is just this assignment (optionally `export`ed): it can be commented out whole.
    pub simple: bool,
    /// The physical line holding the assignment (for evidence).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
    pub why: String,
}

#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub assignments: Vec<Assignment>,
    pub bad: Vec<BadLine>,
}

impl Parsed {
    /// The last assignment of `name`.
    pub fn last(&self, name: &str) -> Option<&Assignment> {
        self.assignments.iter().rev().find(|a| a.name == name)
    }
}

struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(s: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(s.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }
    /// 1-based line of a byte offset.
    fn of(&self, off: usize) -> usize {
        self.starts.partition_point(|&s| s <= off)
    }
    fn text<'a>(&self, s: &'a str, line: usize) -> &'a str {
        let a = self.starts[line - 1];
        let b = self.starts.get(line).map(|e| e - 1).unwrap_or(s.len());
        s[a..b.max(a)].trim_end_matches('\r')
    }
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\r'
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// End of a `$(...)` starting at `i` (pointing at `(`), or None.
fn skip_parens(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b'\'' => i = i + 1 + b[i + 1..].iter().position(|&c| c == b'\'')?,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// End of the word starting at `i`.
fn scan_word(b: &[u8], mut i: usize) -> std::result::Result<usize, &'static str> {
    while i < b.len() {
        match b[i] {
            c if is_blank(c) => break,
            b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => break,
            b'\\' => i += 2,
            b'\'' => match b[i + 1..].iter().position(|&c| c == b'\'') {
                Some(p) => i += p + 2,
                None => return Err("unterminated single quote"),
            },
            b'"' => {
                let mut j = i + 1;
                loop {
                    if j >= b.len() {
                        return Err("unterminated double quote");
                    }
                    match b[j] {
                        b'\\' => j += 2,
                        b'"' => break,
                        b'$' if b.get(j + 1) == Some(&b'(') => {
                            j = skip_parens(b, j + 1).ok_or("unterminated $( in double quotes")?
                        }
                        b'`' => {
                            j += 1 + b[j + 1..]
                                .iter()
                                .position(|&c| c == b'`')
                                .ok_or("unterminated backquote")?;
                            j += 1;
                        }
                        _ => j += 1,
                    }
                }
                i = j + 1;
            }
            b'`' => match b[i + 1..].iter().position(|&c| c == b'`') {
                Some(p) => i += p + 2,
                None => return Err("unterminated backquote"),
            },
            b'$' if b.get(i + 1) == Some(&b'(') => {
                i = skip_parens(b, i + 1).ok_or("unterminated $(")?;
            }
            b'$' if b.get(i + 1) == Some(&b'{') => match b[i..].iter().position(|&c| c == b'}') {
                Some(p) => i += p + 1,
                None => return Err("unterminated ${"),
            },
            _ => i += 1,
        }
    }
    Ok(i.min(b.len()))
}

/// Expand `$NAME` / `${NAME}` at `b[i] == '$'`; returns (text, new index).
fn expand(b: &[u8], i: usize, env: &HashMap<String, String>) -> (Vec<u8>, usize) {
    let rest = &b[i + 1..];
    if rest.first() == Some(&b'{') {
        if let Some(p) = rest.iter().position(|&c| c == b'}') {
            let inner = String::from_utf8_lossy(&rest[1..p]);
            let end = i + 1 + p + 1;
            if is_name(&inner) {
                return (
                    env.get(&*inner).cloned().unwrap_or_default().into_bytes(),
                    end,
                );
            }
            return (b[i..end].to_vec(), end);
        }
    }
    let n = rest
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n > 0 && !rest[0].is_ascii_digit() {
        let name = String::from_utf8_lossy(&rest[..n]).into_owned();
        return (
            env.get(&name).cloned().unwrap_or_default().into_bytes(),
            i + 1 + n,
        );
    }
    (vec![b'$'], i + 1)
}

/// Quote removal and expansion of a raw word (command substitutions are kept literally).
pub fn eval(raw: &str, env: &HashMap<String, String>) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if let Some(&c) = b.get(i + 1) {
                    if c != b'\n' {
                        out.push(c);
                    }
                }
                i += 2;
            }
            b'\'' => {
                let p = b[i + 1..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .unwrap_or(b.len() - i - 1);
                out.extend_from_slice(&b[i + 1..i + 1 + p]);
                i += p + 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    match b[i] {
                        b'\\'
                            if matches!(b.get(i + 1), Some(b'$' | b'`' | b'"' | b'\\' | b'\n')) =>
                        {
                            if b[i + 1] != b'\n' {
                                out.push(b[i + 1]);
                            }
                            i += 2;
                        }
                        b'$' => {
                            let (t, j) = expand(b, i, env);
                            out.extend(t);
                            i = j;
                        }
                        c => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            b'$' => {
                let (t, j) = expand(b, i, env);
                out.extend(t);
                i = j;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `content`, evaluating assignments in order into `env` (pass the values of files sourced before).
pub fn parse(content: &str, env: &mut HashMap<String, String>) -> Parsed {
    let b = content.as_bytes();
    let lines = Lines::new(content);
    let mut out = Parsed::default();
    let mut i = 0;
    while i < b.len() {
        // One statement.
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut broken = false;
        let mut end_pos = b.len().saturating_sub(1);
        loop {
            while i < b.len() && (is_blank(b[i]) || (b[i] == b'\\' && b.get(i + 1) == Some(&b'\n')))
            {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            if i >= b.len() {
                break;
            }
            match b[i] {
                b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => {
                    end_pos = i;
                    i += 1;
                    break;
                }
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                _ => {}
            }
            match scan_word(b, i) {
                Ok(end) => {
                    words.push((i, end));
                    i = end;
                }
                Err(why) => {
                    let line = lines.of(i);
                    out.bad.push(BadLine {
                        line,
                        text: lines.text(content, line).to_string(),
                        why: why.to_string(),
                    });
                    broken = true;
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    break;
                }
            }
        }
        if broken || words.is_empty() {
            continue;
        }
        let first = &content[words[0].0..words[0].1];
        let skip = usize::from(first == "export");
        let rest = &words[skip..];
        let mut found = Vec::new();
        let mut command = false;
        for &(s, e) in rest {
            let w = &content[s..e];
            match w.find('=') {
                Some(eq) if is_name(&w[..eq]) && !command => found.push((s, e, eq)),
                _ => command = true,
            }
        }
        if command && first != "export" {
            // `A=1 cmd` only sets A for cmd.
            continue;
        }
        // Alone on its lines: nothing before it on its first line, and it ends at a newline (or EOF).
        let line_start = lines.starts[lines.of(words[0].0) - 1];
        let alone = content[line_start..words[0].0].trim().is_empty()
            && (end_pos + 1 >= b.len() || b[end_pos] == b'\n');
        let simple = found.len() == 1 && !command && alone;
        let end_line = lines.of(end_pos);
        for (s, e, eq) in found {
            let name = content[s..s + eq].to_string();
            let raw = content[s + eq + 1..e].to_string();
            let value = eval(&raw, env);
            env.insert(name.clone(), value.clone());
            let line = lines.of(s);
            out.assignments.push(Assignment {
                name,
                line,
                end_line,
                value_start: s + eq + 1,
                value_end: e,
                raw,
                value,
                simple,
                text: lines.text(content, line).to_string(),
            });
        }
    }
    out
}

/// What to do with one word of a kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WordEdit {
    Keep,
    Replace(String),
    Remove,
}

enum Quoting {
    Double,
    Single,
    Bare,
}

fn split_raw(raw: &str) -> Result<(Quoting, &str)> {
    let b = raw.as_bytes();
    if b.is_empty() {
        return Ok((Quoting::Bare, ""));
    }
    if b[0] == b'"' && b.len() >= 2 && b[b.len() - 1] == b'"' {
        // The closing quote must be the last byte: find the first unescaped quote after the opening one.
        let mut j = 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => break,
                _ => j += 1,
            }
        }
        if j == b.len() - 1 {
            return Ok((Quoting::Double, &raw[1..raw.len() - 1]));
        }
    } else if b[0] == b'\'' && b.len() >= 2 && raw[1..].find('\'') == Some(raw.len() - 2) {
        return Ok((Quoting::Single, &raw[1..raw.len() - 1]));
    } else if !raw.contains(['"', '\'', '\\', '$', '`']) {
        return Ok((Quoting::Bare, raw));
    }
    bail!("the value {raw} mixes quoting styles; edit it by hand")
}

/// Tokens of a quoted body: (separator before, word).
fn tokens(body: &str) -> (Vec<(String, String)>, String) {
    let b = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut sep_start = 0;
    loop {
        while i < b.len()
            && (matches!(b[i], b' ' | b'\t' | b'\n' | b'\r')
                || (b[i] == b'\\' && b.get(i + 1) == Some(&b'\n')))
        {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        if i >= b.len() {
            return (out, body[sep_start..].to_string());
        }
        let ws = i;
        while i < b.len()
            && !matches!(b[i], b' ' | b'\t' | b'\n' | b'\r')
            && !(b[i] == b'\\' && b.get(i + 1) == Some(&b'\n'))
        {
            i += if b[i] == b'\\' { 2.min(b.len() - i) } else { 1 };
        }
        out.push((body[sep_start..ws].to_string(), body[ws..i].to_string()));
        sep_start = i;
    }
}

/// Apply `f` to every plain word (no quotes, `$`, backslashes) of a raw value; `Ok(None)` if nothing changed.
pub fn edit_words(raw: &str, mut f: impl FnMut(&str) -> WordEdit) -> Result<Option<String>> {
    let (q, body) = split_raw(raw)?;
    let (toks, tail) = tokens(body);
    let mut changed = false;
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut pending_sep: Option<String> = None;
    for (sep, w) in toks {
        let plain = !w.contains(['"', '\'', '\\', '$', '`']);
        let e = if plain { f(&w) } else { WordEdit::Keep };
        match e {
            WordEdit::Keep => {
                let sep = if kept.is_empty() {
                    pending_sep.take().unwrap_or(sep)
                } else {
                    sep
                };
                kept.push((sep, w));
            }
            WordEdit::Replace(n) => {
                changed |= n != w;
                let sep = if kept.is_empty() {
                    pending_sep.take().unwrap_or(sep)
                } else {
                    sep
                };
                kept.push((sep, n));
            }
            WordEdit::Remove => {
                changed = true;
                // A removed first word keeps the leading separator for the next one.
                if kept.is_empty() && pending_sep.is_none() {
                    pending_sep = Some(sep);
                }
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut body: String = kept.iter().map(|(s, w)| format!("{s}{w}")).collect();
    if kept.is_empty() {
        body.push_str(pending_sep.as_deref().unwrap_or(""));
    }
    body.push_str(&tail);
    Ok(Some(requote(q, &body)))
}

fn requote(q: Quoting, body: &str) -> String {
    match q {
        Quoting::Double => format!("\"{body}\""),
        Quoting::Single => format!("'{body}'"),
        Quoting::Bare if body.split_whitespace().count() > 1 || body.is_empty() => {
            format!("\"{body}\"")
        }
        Quoting::Bare => body.to_string(),
    }
}

/// Append plain words at the end of a raw value, keeping its quoting.
pub fn append_words(raw: &str, words: &[&str]) -> Result<String> {
    let (q, body) = split_raw(raw)?;
    let mut b = body.to_string();
    if !b.trim().is_empty() && !b.ends_with([' ', '\t']) {
        b.push(' ');
    }
    b.push_str(&words.join(" "));
    Ok(requote(q, &b))
}

/// Replace the raw values of assignments chosen by `f` (which returns the new raw value).
pub fn rewrite_values(
    content: &str,
    mut f: impl FnMut(&Assignment) -> Result<Option<String>>,
) -> Result<String> {
    let parsed = parse(content, &mut HashMap::new());
    let mut edits = Vec::new();
    for a in &parsed.assignments {
        if let Some(new) = f(a).map_err(|e| e.context(format!("line {}", a.line)))? {
            if new != a.raw {
                edits.push((a.value_start, a.value_end, new));
            }
        }
    }
    let mut out = content.to_string();
    for (s, e, new) in edits.into_iter().rev() {
        out.replace_range(s..e, &new);
    }
    Ok(out)
}

/// Comment out (prefix `#` to every physical line of) the simple assignments chosen by `f`.
pub fn comment_out(content: &str, f: impl Fn(&Assignment) -> bool) -> String {
    let parsed = parse(content, &mut HashMap::new());
    let lines = Lines::new(content);
    let mut starts: Vec<usize> = Vec::new();
    for a in parsed.assignments.iter().filter(|a| a.simple && f(a)) {
        for l in a.line..=a.end_line {
            starts.push(lines.starts[l - 1]);
        }
    }
    starts.sort();
    starts.dedup();
    let mut out = content.to_string();
    for s in starts.into_iter().rev() {
        out.insert(s, '#');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(s, &mut HashMap::new())
    }

    #[test]
    fn debian_default_grub() {
        let t = "# comment\nGRUB_DEFAULT=0\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
                 GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n#GRUB_DISABLE_LINUX_UUID=true\n";
        let r = p(t);
        assert!(r.bad.is_empty(), "{:?}", r.bad);
        let names: Vec<&str> = r.assignments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "GRUB_DEFAULT",
                "GRUB_DISTRIBUTOR",
                "GRUB_CMDLINE_LINUX_DEFAULT",
                "GRUB_CMDLINE_LINUX"
            ]
        );
        assert_eq!(r.last("GRUB_CMDLINE_LINUX_DEFAULT").unwrap().value, "quiet");
        assert_eq!(r.last("GRUB_CMDLINE_LINUX_DEFAULT").unwrap().line, 4);
        assert!(r.last("GRUB_DISABLE_LINUX_UUID").is_none());
    }

    #[test]
    fn quoting_expansion_continuation_crlf() {
        let t = "export A='x y'\r\nB=\"$A \\\"q\\\" ${A}\"\nC=a\\\n  b=c # tail\nD=\"one \\\n  two\" E=3\n\tF=$(echo \"(\" hi)\n";
        let r = p(t);
        assert!(r.bad.is_empty(), "{:?}", r.bad);
        assert_eq!(r.last("A").unwrap().value, "x y");
        assert_eq!(r.last("B").unwrap().value, "x y \"q\" x y");
        assert_eq!(r.last("C").unwrap().value, "a");
        assert_eq!(r.last("b").unwrap().value, "c");
        let d = r.last("D").unwrap();
        assert_eq!(
            (d.value.as_str(), d.line, d.end_line, d.simple),
            ("one   two", 5, 6, false)
        );
        assert_eq!(r.last("E").unwrap().value, "3");
        assert_eq!(r.last("F").unwrap().raw, "$(echo \"(\" hi)");
    }

    #[test]
    fn append_form_and_garbage() {
        let t = "GRUB_CMDLINE_LINUX=\"a\"\nthis is garbage 'unclosed\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX b\"\n";
        let r = p(t);
        // The unterminated quote runs to the end in sh: we report the line and recover at the next one.
        assert_eq!(r.bad.len(), 1);
        assert_eq!(r.bad[0].line, 2);
        assert_eq!(r.last("GRUB_CMDLINE_LINUX").unwrap().value, "a b");
        let r = p("if [ -x /x ]; then\n  GRUB_X=1\nfi\nFOO=1 cmd arg\n");
        assert_eq!(r.last("GRUB_X").unwrap().value, "1");
        assert!(r.last("FOO").is_none());
    }

    #[test]
    fn word_edits_keep_quoting() {
        let f = |w: &str| match w {
            w if w.starts_with("root=") => WordEdit::Replace("root=UUID=1234".into()),
            "resume=/dev/sda5" => WordEdit::Remove,
            _ => WordEdit::Keep,
        };
        assert_eq!(
            edit_words("\"quiet root=/dev/sda1\tresume=/dev/sda5 splash\"", f)
                .unwrap()
                .unwrap(),
            "\"quiet root=UUID=1234 splash\""
        );
        assert_eq!(
            edit_words("'resume=/dev/sda5 quiet'", f).unwrap().unwrap(),
            "'quiet'"
        );
        assert_eq!(
            edit_words("root=/dev/hda1", f).unwrap().unwrap(),
            "root=UUID=1234"
        );
        assert_eq!(edit_words("resume=/dev/sda5", f).unwrap().unwrap(), "\"\"");
        assert_eq!(
            edit_words("\"$GRUB_CMDLINE_LINUX quiet\"", f).unwrap(),
            None
        );
        assert_eq!(
            edit_words("\" resume=/dev/sda5\"", f).unwrap().unwrap(),
            "\" \""
        );
        assert!(edit_words("\"a\"'root=/dev/sda1'", f).is_err());
        assert_eq!(
            append_words("\"\"", &["console=tty0", "console=ttyS0,115200"]).unwrap(),
            "\"console=tty0 console=ttyS0,115200\""
        );
        assert_eq!(append_words("'quiet'", &["x"]).unwrap(), "'quiet x'");
        assert_eq!(append_words("quiet", &["x"]).unwrap(), "\"quiet x\"");
        assert_eq!(append_words("", &["x"]).unwrap(), "x");
        assert_eq!(
            append_words("\"$GRUB_CMDLINE_LINUX \"", &["x"]).unwrap(),
            "\"$GRUB_CMDLINE_LINUX x\""
        );
    }

    #[test]
    fn file_rewrites_keep_other_bytes() {
        let t = "# c\r\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 quiet\"\r\nX=1";
        let out = rewrite_values(t, |a| {
            if a.name == "GRUB_CMDLINE_LINUX" {
                edit_words(&a.raw, |w| {
                    if w.starts_with("root=") {
                        WordEdit::Remove
                    } else {
                        WordEdit::Keep
                    }
                })
            } else {
                Ok(None)
            }
        })
        .unwrap();
        assert_eq!(out, "# c\r\nGRUB_CMDLINE_LINUX=\"quiet\"\r\nX=1");
        let t = "A=1\nGRUB_DISABLE_LINUX_UUID=\"true\" \\\n  # x\nexport GRUB_DISABLE_LINUX_UUID=true\nY=2";
        let out = comment_out(t, |a| a.name == "GRUB_DISABLE_LINUX_UUID");
        assert_eq!(out, "A=1\n#GRUB_DISABLE_LINUX_UUID=\"true\" \\\n#  # x\n#export GRUB_DISABLE_LINUX_UUID=true\nY=2");
        assert!(p(&out).last("GRUB_DISABLE_LINUX_UUID").is_none());
        assert_eq!(
            comment_out(&out, |a| a.name == "GRUB_DISABLE_LINUX_UUID"),
            out
        );
    }

    #[test]
    fn random_input_never_panics() {
        let alphabet: &[u8] = b"AB_=\"'\\$`(){}#; \t\r\nxyz0";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let len = (seed % 40) as usize;
            let mut s = Vec::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let t = String::from_utf8(s).unwrap();
            let r = p(&t);
            for a in &r.assignments {
                let _ = edit_words(&a.raw, |_| WordEdit::Remove);
                let _ = append_words(&a.raw, &["x"]);
            }
            let _ = comment_out(&t, |_| true);
            let _ = rewrite_values(&t, |_| Ok(Some("v".into())));
        }
    }
}
