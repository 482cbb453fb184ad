//! Secrets (passwords, application credential secrets, tokens) that must never reach a log line, a report
//! or an error message. [`Secret`] prints as `<redacted>` in every `Debug`/`Display`; [`register`] adds
//! the value to a process-wide list that [`redact`] scrubs from any text that came from elsewhere
//! (server error bodies, transport errors) before it is shown.

use std::fmt;
use std::sync::Mutex;

static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        let s = s.into();
        register(&s);
        Secret(s)
    }
    /// The clear value, for the one place that sends it (a request header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Values shorter than this are redacted only where they stand as a whole word (a 3-character password
/// inside a longer word is left alone, or every "abc" of every message would go).
const SHORT: usize = 4;

/// Remember a secret value so that [`redact`] removes it from any text.
pub fn register(s: &str) {
    if s.is_empty() {
        return;
    }
    if let Ok(mut k) = KNOWN.lock() {
        if !k.iter().any(|x| x == s) {
            k.push(s.to_string());
            // Longest first, so a secret containing another is replaced whole.
            k.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }
}

/// Replace every registered secret in `text`, and every value of a header or JSON key that carries one
/// (`X-Auth-Token`, `X-Subject-Token`, `"password"`, `"secret"`), with `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(k) = KNOWN.lock() {
        for s in k.iter() {
            if s.len() < SHORT {
                out = replace_word(&out, s);
            } else if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
    }
    redact_patterns(&out)
}

/// `text` with every occurrence of `word` that has no letter or digit right before or after it replaced.
fn replace_word(text: &str, word: &str) -> String {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back().or(prev);
        let after = rest[i + word.len()..].chars().next();
        if !alnum(before) && !alnum(after) {
            out.push_str(&rest[..i]);
            out.push_str(REDACTED);
        } else {
            out.push_str(&rest[..i + word.len()]);
        }
        prev = rest[..i + word.len()].chars().next_back();
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

fn redact_patterns(text: &str) -> String {
    use std::sync::OnceLock;
    static RES: OnceLock<Vec<regex::Regex>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            // Header lines: `X-Auth-Token: abc`, `X-Subject-Token=abc`.
            r#"(?i)(x-(?:auth|subject)-token["']?\s*[:=]\s*["']?)[^\s"',;})]+"#,
            // JSON / YAML / query keys holding a secret.
            r#"(?i)((?:password|secret|token_id|passcode)["']?\s*[:=]\s*["']?)[^\s"',;})]+"#,
        ]
        .iter()
        .map(|r| regex::Regex::new(r).expect("valid regex"))
        .collect()
    });
    let mut out = text.to_string();
    for re in res {
        out = re
            .replace_all(&out, |c: &regex::Captures| {
                if &c[0][c[1].len()..] == REDACTED {
                    c[0].to_string()
                } else {
                    format!("{}{}", &c[1], REDACTED)
                }
            })
            .into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), format!("Some({REDACTED})"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn registered_values_are_scrubbed_anywhere() {
        let _s = Secret::new("gAAAAABfake-token-value");
        let r = redact(
            "server said: bad token gAAAAABfake-token-value!; again gAAAAABfake-token-value",
        );
        assert!(!r.contains("gAAAAABfake"), "{r}");
        assert_eq!(r.matches(REDACTED).count(), 2);
    }

    #[test]
    fn header_and_key_patterns() {
        for (input, leaked) in [
            ("X-Auth-Token: abcdef123", "abcdef123"),
            ("x-subject-token=zzz999", "zzz999"),
            (r#"{"password": "p@ss w"}"#, "p@ss"),
            (r#"{"secret":"s3cr3t"}"#, "s3cr3t"),
            ("password=plain\n", "plain"),
            ("application_credential_secret: yamlsecret", "yamlsecret"),
        ] {
            let r = redact(input);
            assert!(!r.contains(leaked), "{input} -> {r}");
            assert!(r.contains(REDACTED), "{input} -> {r}");
        }
        // Idempotent, and ordinary text is untouched.
        let once = redact("X-Auth-Token: abc");
        assert_eq!(redact(&once), once);
        assert_eq!(
            redact("uploading 10 MiB to image 1234"),
            "uploading 10 MiB to image 1234"
        );
    }

    #[test]
    fn short_values_are_redacted_as_whole_words() {
        let _s = Secret::new("q7");
        assert_eq!(
            redact("password was q7; q7x and xq7 are words, (q7) is not"),
            format!("password was {REDACTED}; q7x and xq7 are words, ({REDACTED}) is not")
        );
        assert_eq!(redact("q7"), REDACTED);
        assert_eq!(replace_word("aq7q7 q7", "q7"), format!("aq7q7 {REDACTED}"));
    }
}
