//! Upload progress on stderr: a redrawn bar with rate and ETA on a terminal, plain lines (every 10 %, or
//! every 30 s when the size is unknown) otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// One progress line (without the bar) for `done` of `total` after `elapsed`.
pub fn line(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let rate_s = format!("{}/s", human_bytes(rate as u64));
    match total {
        Some(t) if t > 0 => {
            let pct = (done as f64 * 100.0 / t as f64).min(100.0);
            let eta = if rate > 0.0 && done < t {
                format!(", ETA {}", duration((t - done) as f64 / rate))
            } else {
                String::new()
            };
            format!(
                "{pct:3.0}% ({} of {}) at {rate_s}{eta}",
                human_bytes(done),
                human_bytes(t)
            )
        }
        _ => format!("{} at {rate_s}", human_bytes(done)),
    }
}

pub struct Progress {
    total: Option<u64>,
    done: u64,
    start: Instant,
    last_draw: Instant,
    tty: bool,
    next_pct: u64,
    label: String,
}

impl Progress {
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            start: now,
            last_draw: now,
            tty: std::io::stderr().is_terminal(),
            next_pct: 10,
            label: label.to_string(),
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        let now = Instant::now();
        if self.tty {
            if now.duration_since(self.last_draw) >= Duration::from_millis(200) {
                self.last_draw = now;
                self.draw();
            }
            return;
        }
        let due = match self.total {
            Some(t) if t > 0 => self.done * 100 / t >= self.next_pct,
            _ => now.duration_since(self.last_draw) >= Duration::from_secs(30),
        };
        if due {
            self.last_draw = now;
            if let Some(t) = self.total.filter(|t| *t > 0) {
                self.next_pct = (self.done * 100 / t) / 10 * 10 + 10;
            }
            eprintln!(
                "cloudprep: {}: {}",
                self.label,
                line(self.done, self.total, self.start.elapsed())
            );
        }
    }

    fn draw(&self) {
        let bar = match self.total {
            Some(t) if t > 0 => {
                let w = 24usize;
                let full = ((self.done.min(t) as f64 / t as f64) * w as f64) as usize;
                format!("[{}{}] ", "#".repeat(full), ".".repeat(w - full))
            }
            _ => String::new(),
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[2K{}: {bar}{}",
            self.label,
            line(self.done, self.total, self.start.elapsed())
        );
        let _ = e.flush();
    }

    /// Final line (also on a terminal, ending the redrawn one).
    pub fn finish(&self, ok: bool) {
        if self.tty {
            self.draw();
            eprintln!();
        } else if ok {
            eprintln!(
                "cloudprep: {}: done, {}",
                self.label,
                line(self.done, self.total, self.start.elapsed())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(duration(61.4), "1:01");
        let l = line(50 << 20, Some(100 << 20), Duration::from_secs(5));
        assert_eq!(l, " 50% (50.0 MiB of 100.0 MiB) at 10.0 MiB/s, ETA 0:05");
        let l = line(100 << 20, Some(100 << 20), Duration::from_secs(5));
        assert!(!l.contains("ETA") && l.starts_with("100%"), "{l}");
        assert_eq!(line(1024, None, Duration::ZERO), "1.0 KiB at 0 B/s");
    }
}
