//! Progress: a redrawn bar with rate and ETA on a terminal, plain log lines at most every 5 s otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: u64,
    start: Instant,
    last: Instant,
    tty: bool,
    quiet: bool,
}

pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn update(&mut self, done: u64, written: u64) {
        if self.quiet {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let t = self.elapsed().max(0.001);
        let rate = done as f64 / t;
        let eta = if rate > 0.0 {
            (self.total - done.min(self.total)) as f64 / rate
        } else {
            0.0
        };
        let pct = if self.total > 0 {
            done as f64 * 100.0 / self.total as f64
        } else {
            100.0
        };
        if self.tty {
            let w = 30usize;
            let filled = ((pct / 100.0) * w as f64) as usize;
            eprint!(
                "\r[{}{}] {pct:5.1}% {} / {}  {}/s  written {}  ETA {}  ",
                "#".repeat(filled.min(w)),
                " ".repeat(w - filled.min(w)),
                human(done),
                human(self.total),
                human(rate as u64),
                human(written),
                hms(eta)
            );
            let _ = std::io::stderr().flush();
        } else {
            eprintln!(
                "cloudprep: export {pct:.1}% ({} of {}, {}/s, {} written, ETA {})",
                human(done),
                human(self.total),
                human(rate as u64),
                human(written),
                hms(eta)
            );
        }
    }

    pub fn finish(&mut self, _written: u64) {
        if self.tty && !self.quiet {
            eprint!("\r{}\r", " ".repeat(110));
        }
    }
}
