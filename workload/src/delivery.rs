//! A generated fleet delivered, minute by minute, for `coldtrail generate`: as `invocations` batches
//! (`InvocationBatches`, straight into a store), or as what AWS would deliver about it (`deliver`):
//! subscription payloads of Lambda log lines, X-Ray segment documents and the team's routine CloudTrail,
//! into a `Destination`. `Files` writes them as files an hour at a time; the binary publishes them to
//! Kafka through the same trait.

use arrow::array::RecordBatch;
use serde_json::{json, Value};
use store::time::MICROS_PER_MINUTE;

use crate::cloudtrail::{routine, Team};
use crate::shapes::{write_file, Shape};
use crate::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub functions: usize,
    /// The same seed gives the same rows.
    pub seed: u64,
    /// Event time of the first minute.
    pub start_us: i64,
    /// Stop after this many minutes of event time.
    pub minutes: Option<i64>,
    /// Stop after this many invocations (the last minute is completed).
    pub invocations: Option<u64>,
    pub injections: Vec<Injection>,
    /// Share of successful invocations traced by X-Ray (failed ones always are).
    pub xray_sample: f64,
}

impl Plan {
    fn generator(&self) -> Generator {
        let functions = fleet(self.functions, &mut Rng::new(self.seed));
        let mut generator = Generator::new(functions, self.seed);
        for injection in &self.injections {
            generator.inject(injection.clone());
        }
        generator
    }

    fn done(&self, invocations: u64, minutes: i64) -> bool {
        self.invocations.is_some_and(|max| invocations >= max) || self.minutes.is_some_and(|max| minutes >= max)
    }
}

/// An anomaly injected for 30 minutes from `KIND:FUNCTION:MINUTE`: KIND is spike, drop, ramp, creep,
/// errors, cold, cost, callers or mining, FUNCTION the function's index in the fleet and MINUTE the
/// start, counted from `start_us`.
pub fn parse_injection(spec: &str, start_us: i64, n_functions: usize) -> Result<Injection, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [kind, function, minute] = parts[..] else {
        return Err(format!("{spec:?}: expected KIND:FUNCTION:MINUTE"));
    };
    let anomaly = match kind {
        "spike" => Anomaly::Spike { factor: 6.0 },
        "drop" => Anomaly::Drop,
        "ramp" => Anomaly::Ramp { factor_per_hour: 24.0 },
        "creep" => Anomaly::DurationCreep { minutes: 10.0 },
        "errors" => Anomaly::ErrorBurst { error_rate: 0.3 },
        "cold" => Anomaly::ColdStartStorm,
        "cost" => Anomaly::CostSurge { factor: 4.0 },
        "callers" => Anomaly::NewCallers { n_callers: 6, share: 0.3 },
        "mining" => Anomaly::CryptoMining,
        other => return Err(format!("{spec:?}: unknown kind {other:?}")),
    };
    let function_idx: usize = function.parse().map_err(|e| format!("{spec:?}: bad function index: {e}"))?;
    if function_idx >= n_functions {
        return Err(format!(
            "{spec:?}: the fleet has {n_functions} functions (0 to {})",
            n_functions.saturating_sub(1)
        ));
    }
    let minute: i64 = minute.parse().map_err(|e| format!("{spec:?}: bad minute: {e}"))?;
    let start_us = minute.checked_mul(MICROS_PER_MINUTE).and_then(|m| start_us.checked_add(m));
    let start_us = start_us.ok_or_else(|| format!("{spec:?}: minute {minute} is out of range"))?;
    Ok(Injection { function_idx, anomaly, start_us, end_us: start_us.saturating_add(30 * MICROS_PER_MINUTE) })
}

/// The plan's invocations as `invocations` batches of about `rows_per_batch` rows (whole minutes), in
/// event-time order.
pub struct InvocationBatches {
    plan: Plan,
    generator: Generator,
    rows_per_batch: usize,
    pending: Vec<crate::Invocation>,
    /// Invocations and minutes generated so far.
    pub invocations: u64,
    pub minutes: i64,
}

impl InvocationBatches {
    pub fn new(plan: Plan, rows_per_batch: usize) -> InvocationBatches {
        let generator = plan.generator();
        InvocationBatches { plan, generator, rows_per_batch, pending: Vec::new(), invocations: 0, minutes: 0 }
    }
}

impl Iterator for InvocationBatches {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        while self.pending.len() < self.rows_per_batch && !self.plan.done(self.invocations, self.minutes) {
            let before = self.pending.len();
            self.generator.minute(self.plan.start_us + self.minutes * MICROS_PER_MINUTE, &mut self.pending);
            self.invocations += (self.pending.len() - before) as u64;
            self.minutes += 1;
        }
        let batch = invocations_batch(self.generator.functions(), &self.pending);
        self.pending.clear();
        batch
    }
}

/// Where `deliver` puts what it renders.
pub trait Destination {
    type Error;
    /// One CloudWatch Logs subscription payload of one log stream's minute.
    fn log_payload(&mut self, log_stream: &str, payload: &Value) -> Result<(), Self::Error>;
    /// One X-Ray segment document.
    fn segment(&mut self, trace_id: &str, segment: &Value) -> Result<(), Self::Error>;
    /// One CloudTrail record.
    fn cloudtrail(&mut self, record: Value) -> Result<(), Self::Error>;
    /// The hour from `hour_us` is complete.
    fn end_hour(&mut self, hour_us: i64) -> Result<(), Self::Error>;
}

/// What `deliver` rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub invocations: u64,
    pub minutes: i64,
    pub log_lines: u64,
    pub segments: u64,
    pub cloudtrail_events: u64,
}

/// Renders the plan into `destination`, a minute at a time (one subscription payload per log stream
/// and minute, as CloudWatch Logs batches them), with the team's routine CloudTrail a day at a time,
/// and ends each hour.
pub fn deliver<D: Destination>(plan: &Plan, destination: &mut D) -> Result<Delivered, D::Error> {
    let mut generator = plan.generator();
    let functions = generator.functions().to_vec();
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    let team = Team::new(&names);
    let day_us = 24 * 60 * MICROS_PER_MINUTE;
    let mut trail_day = 0i64;
    let mut trail = routine(&team, plan.start_us, 24, plan.seed).into_iter().peekable();
    let mut rng = Rng::new(plan.seed ^ 0x7e4d);
    let mut invocations = Vec::new();
    let mut delivered = Delivered::default();
    let mut payload_id = 0u64;
    while !plan.done(delivered.invocations, delivered.minutes) {
        let minute_us = plan.start_us + delivered.minutes * MICROS_PER_MINUTE;
        invocations.clear();
        generator.minute(minute_us, &mut invocations);
        delivered.invocations += invocations.len() as u64;
        let rendered = crate::render::render_minute(&functions, &invocations, &mut rng, &mut payload_id, |i, rng| {
            i.status != "success" || rng.chance(plan.xray_sample)
        });
        delivered.log_lines += rendered.log_lines;
        for (trace_id, segment) in &rendered.segments {
            destination.segment(trace_id, segment)?;
            delivered.segments += 1;
        }
        for (_, log_stream, payload) in &rendered.payloads {
            destination.log_payload(log_stream, payload)?;
        }
        if minute_us >= plan.start_us + (trail_day + 1) * day_us {
            trail_day += 1;
            let seed = plan.seed.wrapping_add(trail_day as u64);
            trail = routine(&team, plan.start_us + trail_day * day_us, 24, seed).into_iter().peekable();
        }
        let minute_end_us = minute_us + MICROS_PER_MINUTE;
        while let Some(record) = trail.next_if(|r| crate::cloudtrail::event_time(r) < minute_end_us) {
            destination.cloudtrail(record)?;
            delivered.cloudtrail_events += 1;
        }
        delivered.minutes += 1;
        if delivered.minutes % 60 == 0 {
            destination.end_hour(plan.start_us + (delivered.minutes - 60) * MICROS_PER_MINUTE)?;
        }
    }
    if delivered.minutes % 60 != 0 {
        destination.end_hour(plan.start_us + (delivered.minutes - delivered.minutes % 60) * MICROS_PER_MINUTE)?;
    }
    Ok(delivered)
}

/// Files under a directory, each hour's complete when written: `logs/…` in the chosen shape (gzip'd
/// subscription payloads by default), `xray/<hour>.ndjson.gz` and
/// `cloudtrail/<account>_CloudTrail_<region>_<hour>.json.gz`.
pub struct Files {
    dir: std::path::PathBuf,
    shape: Shape,
    logs: Vec<Value>,
    xray: Vec<u8>,
    trail: Vec<Value>,
    /// Files written so far.
    pub files: u64,
}

impl Files {
    pub fn new(dir: impl Into<std::path::PathBuf>, shape: Shape) -> Files {
        Files { dir: dir.into(), shape, logs: Vec::new(), xray: Vec::new(), trail: Vec::new(), files: 0 }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Destination for Files {
    type Error = std::io::Error;

    fn log_payload(&mut self, _log_stream: &str, payload: &Value) -> std::io::Result<()> {
        self.logs.push(payload.clone());
        Ok(())
    }

    fn segment(&mut self, _trace_id: &str, segment: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.xray, segment)?;
        self.xray.push(b'\n');
        Ok(())
    }

    fn cloudtrail(&mut self, record: Value) -> std::io::Result<()> {
        self.trail.push(record);
        Ok(())
    }

    fn end_hour(&mut self, hour_us: i64) -> std::io::Result<()> {
        let hour = crate::render::iso_millis(hour_us)[..13].to_string();
        for (path, bytes) in crate::shapes::render(self.shape, &std::mem::take(&mut self.logs), &hour) {
            match self.shape {
                Shape::Subscription => write_file(&self.dir.join(format!("{path}.gz")), &bytes, true)?,
                _ => write_file(&self.dir.join(path), &bytes, false)?,
            }
            self.files += 1;
        }
        if !self.xray.is_empty() {
            write_file(
                &self.dir.join("xray").join(format!("{hour}.ndjson.gz")),
                &std::mem::take(&mut self.xray),
                true,
            )?;
            self.files += 1;
        }
        if !self.trail.is_empty() {
            let stamp = hour.replace(['-', ':'], "");
            let body = serde_json::to_vec(&json!({ "Records": std::mem::take(&mut self.trail) }))?;
            let name = format!("{}_CloudTrail_{}_{stamp}00Z.json.gz", crate::fleet::ACCOUNT, crate::fleet::REGION);
            write_file(&self.dir.join("cloudtrail").join(name), &body, true)?;
            self.files += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_767_225_600_000_000;

    fn plan(minutes: i64) -> Plan {
        Plan {
            functions: 3,
            seed: 7,
            start_us: START,
            minutes: Some(minutes),
            invocations: None,
            injections: Vec::new(),
            xray_sample: 0.5,
        }
    }

    #[test]
    fn injections_parse_or_say_what_is_wrong() {
        let injection = parse_injection("spike:2:10", START, 3).unwrap();
        assert_eq!((injection.function_idx, injection.start_us), (2, START + 10 * MICROS_PER_MINUTE));
        assert_eq!(injection.end_us - injection.start_us, 30 * MICROS_PER_MINUTE);
        for (spec, says) in [
            ("spike:3:10", "has 3 functions"),
            ("boil:0:1", "unknown kind"),
            ("spike:0", "KIND:FUNCTION:MINUTE"),
            ("spike:x:1", "bad function index"),
            ("spike:0:99999999999999999", "out of range"),
        ] {
            let error = parse_injection(spec, START, 3).unwrap_err();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }

    #[test]
    fn batches_hold_whole_minutes_in_order_and_stop_at_the_plan() {
        let mut batches = InvocationBatches::new(plan(30), 1);
        let first = batches.next().unwrap();
        // One minute at least, however small the batch size.
        assert!(first.num_rows() > 0);
        let rest: usize = batches.by_ref().map(|b| b.num_rows()).sum();
        assert_eq!(batches.minutes, 30);
        assert_eq!(batches.invocations as usize, first.num_rows() + rest);
        let by_count = InvocationBatches::new(Plan { minutes: None, invocations: Some(10), ..plan(0) }, 1_000);
        assert!(by_count.map(|b| b.num_rows()).sum::<usize>() >= 10);
    }

    /// Counts what it is given.
    #[derive(Default)]
    struct Counted {
        payloads: u64,
        segments: u64,
        trail: u64,
        hours: Vec<i64>,
    }

    impl Destination for Counted {
        type Error = std::convert::Infallible;
        fn log_payload(&mut self, _: &str, _: &Value) -> Result<(), Self::Error> {
            self.payloads += 1;
            Ok(())
        }
        fn segment(&mut self, _: &str, _: &Value) -> Result<(), Self::Error> {
            self.segments += 1;
            Ok(())
        }
        fn cloudtrail(&mut self, _: Value) -> Result<(), Self::Error> {
            self.trail += 1;
            Ok(())
        }
        fn end_hour(&mut self, hour_us: i64) -> Result<(), Self::Error> {
            self.hours.push(hour_us);
            Ok(())
        }
    }

    #[test]
    fn delivery_renders_every_minute_and_ends_every_hour_once() {
        let mut counted = Counted::default();
        let delivered = deliver(&plan(90), &mut counted).unwrap();
        assert_eq!(delivered.minutes, 90);
        assert_eq!(counted.hours, vec![START, START + 60 * MICROS_PER_MINUTE]);
        assert_eq!((counted.segments, counted.trail), (delivered.segments, delivered.cloudtrail_events));
        assert!(counted.payloads > 0 && delivered.log_lines > delivered.invocations);
        // The same plan renders the same again.
        assert_eq!(deliver(&plan(90), &mut Counted::default()).unwrap(), delivered);
    }

    #[test]
    fn files_are_written_per_hour_and_read_back_as_gzip() {
        let dir = std::env::temp_dir().join(format!("coldtrail-delivery-{}", std::process::id()));
        let mut files = Files::new(&dir, Shape::Subscription);
        let delivered = deliver(&plan(61), &mut files).unwrap();
        assert!(files.files >= 2, "{} files", files.files);
        let xray: Vec<_> = std::fs::read_dir(dir.join("xray")).unwrap().collect();
        assert_eq!(xray.len() as i64, 2, "one X-Ray file an hour");
        assert!(delivered.segments > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
