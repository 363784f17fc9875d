//! Fault injection for crash tests: `COLDTRAIL_FAULT=POINT:N:WHAT` makes the `N`th time the process
//! reaches the named point fail, so that a test can stop a run exactly inside a window that a random
//! SIGKILL hits only now and then. `WHAT` is `abort` (the process dies there, as with SIGKILL: nothing
//! after it runs, what was written stays in the page cache) or `enospc` (the write fails with "No space
//! left on device"). Unset, a point costs one relaxed load.
//!
//! Points: `wal.frame` (before each frame of an append is written, so `wal.frame:2:abort` dies between
//! the first and the second frame of a multi-frame append); `ledger.head` (after a ledger entry is
//! written, before the chain's head names it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a fault.
pub const FAULT_ENV: &str = "COLDTRAIL_FAULT";

struct Fault {
    point: String,
    nth: u64,
    abort: bool,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let spec = std::env::var(FAULT_ENV).ok()?;
            let parsed = parse(&spec);
            if parsed.is_none() {
                tracing::warn!(spec, "{FAULT_ENV} is not POINT:N:abort or POINT:N:enospc; ignored");
            }
            parsed
        })
        .as_ref()
}

fn parse(spec: &str) -> Option<Fault> {
    let mut parts = spec.rsplitn(3, ':');
    let abort = match parts.next()? {
        "abort" => true,
        "enospc" => false,
        _ => return None,
    };
    let nth = parts.next()?.parse::<u64>().ok().filter(|n| *n > 0)?;
    let point = parts.next()?.to_string();
    Some(Fault { point, nth, abort, hits: AtomicU64::new(0) })
}

/// Reached `point`: fails when the armed fault says this is the time.
pub fn hit(point: &str) -> std::io::Result<()> {
    let Some(fault) = armed() else { return Ok(()) };
    if fault.point != point || fault.hits.fetch_add(1, Ordering::Relaxed) + 1 != fault.nth {
        return Ok(());
    }
    if fault.abort {
        eprintln!("{FAULT_ENV}: aborting at {point}");
        std::process::abort();
    }
    Err(std::io::Error::from_raw_os_error(28))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_spec_names_a_point_a_count_and_what_happens() {
        let fault = parse("wal.frame:2:abort").unwrap();
        assert_eq!((fault.point.as_str(), fault.nth, fault.abort), ("wal.frame", 2, true));
        assert!(!parse("wal.frame:1:enospc").unwrap().abort);
        for bad in ["wal.frame:0:abort", "wal.frame:x:abort", "wal.frame:1:explode", "abort", ""] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
