//! Logs go to syslog (facility daemon, ident `cloudprep`), and to stderr when no syslog socket listens.
//! Warnings and errors always reach stderr too; `-v` adds info, `-vv` debug.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::sync::Mutex;

struct Logger {
    syslog: Option<Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>>,
    stderr_level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // Debug output of dependencies (the HTTP client's wire dumps carry auth headers) stays off.
        m.level() <= LevelFilter::Info
            || (m.level() <= LevelFilter::Debug && m.target().starts_with("cloudprep"))
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // Whatever logs it, a registered secret (password, token) never reaches syslog or stderr.
        let msg = crate::upload::secret::redact(&format!("{}", r.args()));
        let mut to_stderr = r.level() <= self.stderr_level;
        if r.level() <= Level::Info {
            match &self.syslog {
                Some(s) => {
                    let sent = s.lock().map(|mut w| match r.level() {
                        Level::Error => w.err(&msg).is_ok(),
                        Level::Warn => w.warning(&msg).is_ok(),
                        _ => w.info(&msg).is_ok(),
                    });
                    if !matches!(sent, Ok(true)) {
                        to_stderr = true;
                    }
                }
                None => to_stderr = true,
            }
        }
        if to_stderr {
            eprintln!("cloudprep: {}: {}", r.level().as_str().to_lowercase(), msg);
        }
    }
    fn flush(&self) {}
}

pub fn init(verbose: u8) {
    let stderr_level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "cloudprep".into(),
        pid: std::process::id(),
    };
    let syslog = if std::path::Path::new("/dev/log").exists() {
        syslog::unix(formatter).ok().map(Mutex::new)
    } else {
        None
    };
    let logger = Logger {
        syslog,
        stderr_level,
    };
    let max = if verbose >= 2 {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}
