//! The univariate streaming detector: one value per step in, an anomaly score in [0, 1] and the expected
//! range out. Robust statistics (median and MAD) of a recent window and of a daily profile, a level-shift
//! test on a short window, and an anomaly likelihood over the detector's own recent surprise, so that one
//! threshold fits series of any scale and noise. Further tests are scored beside it, each with its own
//! calibration: a value beyond the extremes of the whole history, a shift of the mean of the last 48 steps
//! (bursts that come more often, a day at half its usual height), and for counts a run of zeros where zeros
//! never happen (a function that went silent). The strongest is the score.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How the detector learns and scores. Every window is counted in steps (observations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesConfig {
    /// Steps of recent history the point and shift tests compare against.
    pub baseline_steps: usize,
    /// Steps in the short window whose median is tested for a level shift.
    pub shift_steps: usize,
    /// Steps before any score above zero: the detector is learning.
    pub warmup_steps: usize,
    /// Steps of surprise history behind the anomaly likelihood.
    pub likelihood_steps: usize,
    /// Steps averaged into the surprise that the likelihood scores.
    pub likelihood_average_steps: usize,
    /// After a score, lower scores are damped for this many steps: one anomaly is reported once.
    pub cooldown_steps: usize,
    /// Steps whose mean is compared with the mean of the baseline before them: a change in how often a
    /// bursty series bursts. 0 disables it; it needs a baseline of four times as many steps.
    #[serde(default = "mean_shift_steps")]
    pub mean_shift_steps: usize,
    /// Buckets of the daily profile (for example 288 for 5-minute steps); 0 disables seasonality.
    pub daily_buckets: usize,
    /// Days of history before the daily profile is used.
    pub seasonal_days_min: u32,
    /// The values are event counts: a deviation is also judged by how likely it is under a Poisson
    /// process at the recent mean rate, and the smaller of the two surprises counts. Sparse counts (a
    /// few errors a day) then do not look infinitely surprising when three come together.
    #[serde(default)]
    pub counts: bool,
    /// Learn each day of the week's level against the daily profile (once a weekday has been seen a full
    /// day), so that weekends that are always quieter are expected.
    #[serde(default = "yes")]
    pub weekly: bool,
    /// The values vary by factors rather than by amounts (durations, costs): the detector works on
    /// ln(1 + value), and reports expected values back in the values' own scale.
    #[serde(default)]
    pub log_scale: bool,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            baseline_steps: 240,
            shift_steps: 6,
            warmup_steps: 60,
            likelihood_steps: 600,
            likelihood_average_steps: 1,
            cooldown_steps: 150,
            mean_shift_steps: 48,
            daily_buckets: 96,
            seasonal_days_min: 3,
            counts: false,
            weekly: true,
            log_scale: false,
        }
    }
}

impl SeriesConfig {
    /// The default windows, with the daily profile at the series' step (at most 288 buckets a day).
    pub fn for_step(step_us: i64) -> SeriesConfig {
        let steps_per_day = if step_us > 0 { MICROS_PER_DAY / step_us } else { 0 };
        SeriesConfig { daily_buckets: steps_per_day.clamp(0, 288) as usize, ..SeriesConfig::default() }
    }
}

/// Parses a `timestamp,value` series: a header line is skipped, timestamps are `YYYY-MM-DD HH:MM:SS`
/// (NAB's format, UTC), RFC 3339 or epoch seconds. Returns (timestamp text, microseconds, value) per row,
/// in file order: timestamps that step back or repeat are kept (`ScoringClock` scores them); the first
/// bad line is an error that names it.
pub fn parse_series(text: &str) -> Result<Vec<(String, i64, f64)>, crate::DetectError> {
    let mut rows = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            let shown: String = line.chars().take(80).collect();
            crate::DetectError::BadSeries(format!("line {}: {what}: {shown:?}", line_idx + 1))
        };
        let (stamp, value) = line.split_once(',').ok_or_else(|| bad("expected timestamp,value"))?;
        let (stamp, value) = (stamp.trim(), value.trim());
        let parsed_value = value.parse::<f64>().ok().filter(|v| v.is_finite());
        let Some(parsed_value) = parsed_value else {
            if line_idx == 0 && rows.is_empty() {
                continue; // the header
            }
            return Err(bad("the value is not a finite number"));
        };
        let ts = parse_timestamp(stamp)
            .ok_or_else(|| bad("the timestamp is not YYYY-MM-DD HH:MM:SS, RFC 3339 or epoch seconds"))?;
        rows.push((stamp.to_string(), ts, parsed_value));
    }
    if rows.is_empty() {
        return Err(crate::DetectError::BadSeries("no timestamp,value rows".into()));
    }
    Ok(rows)
}

/// What was irregular about a series' timestamps. Each is a warning: every row is scored all the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Irregularities {
    /// Rows whose timestamp is earlier than the one before (a clock set back, a repeated local hour).
    pub steps_back: u64,
    /// Rows with the same timestamp as the one before.
    pub duplicates: u64,
    /// Gaps longer than twice the usual step.
    pub gaps: u64,
}

/// The time a detector sees for each row of a series in file order, so that every row is scored and the
/// detector's time never runs backwards: a duplicate timestamp is scored at the same time as the row
/// before; a step back (a repeated local hour after a daylight-saving change) is scored one usual step
/// after the row before, as the time that really passed; a gap is left as it is.
pub struct ScoringClock {
    step_us: i64,
    previous_ts: Option<i64>,
    previous_scored: i64,
    pub irregularities: Irregularities,
}

impl ScoringClock {
    pub fn new(step_us: i64) -> ScoringClock {
        ScoringClock {
            step_us: step_us.max(1),
            previous_ts: None,
            previous_scored: i64::MIN,
            irregularities: Irregularities::default(),
        }
    }

    /// The time to score a row stamped `ts_us` at.
    pub fn time_of(&mut self, ts_us: i64) -> i64 {
        let scored = match self.previous_ts {
            None => ts_us,
            Some(previous) if ts_us == previous => {
                self.irregularities.duplicates += 1;
                self.previous_scored
            }
            Some(previous) if ts_us < previous => {
                self.irregularities.steps_back += 1;
                self.previous_scored.saturating_add(self.step_us)
            }
            Some(previous) => {
                if ts_us - previous > 2 * self.step_us {
                    self.irregularities.gaps += 1;
                }
                // After a step back the scored time runs ahead of the stamps by what was repeated; it
                // moves on by the stamps' own step.
                ts_us.max(self.previous_scored.saturating_add(ts_us - previous))
            }
        };
        self.previous_ts = Some(ts_us);
        self.previous_scored = scored;
        scored
    }
}

fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(naive.and_utc().timestamp_micros());
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_micros());
    }
    let seconds = text.parse::<f64>().ok().filter(|s| s.is_finite() && s.abs() < 1e12)?;
    Some((seconds * 1e6) as i64)
}

/// A value beyond the extremes seen by this share of their range is a new extreme.
const RECORD_MARGIN: f64 = 0.02;
/// For counts, the Poisson z (upper or lower tail) a new extreme needs as well: about one in 300,000.
const RECORD_COUNTS_Z: f64 = 4.5;
/// The margin while a series with a daily profile has not been seen a whole day: each hour of the first
/// morning is busier than anything before it, so only a jump far beyond the range counts.
const RECORD_MARGIN_FIRST_DAY: f64 = 0.5;
/// The score of a new extreme just past the margin; it grows towards 1 with the excess.
const RECORD_BASE: f64 = 0.6;
/// Steps of history before new extremes count: the range of a short history is no reference.
const RECORD_STEPS_MIN: usize = 300;
/// Steps of baseline a silence is judged against.
const SILENCE_BASELINE_MIN: usize = 60;
/// The lowest count of the baseline for a silence to be judged at that count's Poisson odds.
const SILENCE_LOWEST_MIN: f64 = 2.0;
/// The weight of the mean-shift score against the others: a change in burst density alone is reported
/// below the scores of points and level shifts that are beyond anything seen.
const MEAN_SHIFT_WEIGHT: f64 = 0.9;

fn mean_shift_steps() -> usize {
    48
}

fn yes() -> bool {
    true
}

/// Scores every row of a `timestamp,value` CSV series (`coldtrail detect-series`): NAB's results format
/// (`timestamp,value,anomaly_score`), and a warning for each kind of irregular timestamp met.
pub fn score_series(text: &str) -> Result<(String, Vec<String>), crate::DetectError> {
    let rows = parse_series(text)?;
    let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let step = median_step(&times);
    let mut detector = SeriesDetector::new(SeriesConfig::for_step(step));
    let mut clock = ScoringClock::new(step);
    let mut out = String::with_capacity(text.len() + rows.len() * 24);
    out.push_str("timestamp,value,anomaly_score\n");
    for (stamp, ts, value) in &rows {
        let verdict = detector.observe(clock.time_of(*ts), *value);
        out.push_str(&format!("{stamp},{value},{}\n", verdict.score));
    }
    let odd = clock.irregularities;
    let warnings = [
        (
            odd.steps_back,
            "timestamps step back (a repeated clock hour?): each is scored one usual step after the row before",
        ),
        (odd.duplicates, "timestamps repeat the one before: each is scored at that time"),
        (odd.gaps, "gaps are longer than twice the usual step"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect();
    Ok((out, warnings))
}

/// The typical step of a series: the median gap between its first timestamps.
pub fn median_step(times_us: &[i64]) -> i64 {
    let mut gaps: Vec<i64> = times_us.windows(2).take(1_000).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    if gaps.is_empty() {
        return 0;
    }
    let mid = gaps.len() / 2;
    *gaps.select_nth_unstable(mid).1
}

/// The detector's verdict on one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Anomaly score in [0, 1]: how unlikely the recent surprise is, damped after a reported anomaly.
    pub score: f64,
    /// The surprise before the likelihood: robust z-score of the strongest test.
    pub surprise: f64,
    /// The value the detector expected.
    pub expected: f64,
    /// The range it considered normal (expected ± 3 robust standard deviations).
    pub expected_low: f64,
    pub expected_high: f64,
}

/// One daily-profile bucket: exponentially weighted mean of the value at that time of day.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Bucket {
    mean: f64,
    days: u32,
    last_day: i64,
}

/// How a weekday sits against the daily profile: the exponentially weighted mean of its days' residuals.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct WeekdayLevel {
    offset: f64,
    weeks: u32,
}

/// Streaming state of one series; memory is bounded by the configured windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesDetector {
    config: SeriesConfig,
    recent: VecDeque<f64>,
    residuals: VecDeque<f64>,
    /// Signed distances outside the daily profile's range, for its shift test.
    outside: VecDeque<f64>,
    surprises: VecDeque<f64>,
    tail: TailModel,
    /// The distribution of the mean-shift surprises, scored apart: they are on another scale.
    #[serde(default = "TailModel::from_checkpoint_before_it")]
    mean_tail: TailModel,
    daily: Vec<Bucket>,
    /// Per day of the week (days since the epoch modulo 7), its level against the daily profile.
    #[serde(default)]
    weekdays: Vec<WeekdayLevel>,
    /// The residuals of the day being observed: their sum, count and the day.
    #[serde(default)]
    day_residuals: (f64, u32, i64),
    steps: u64,
    /// The lowest and highest values seen (after the warm-up): a value far beyond them is a new extreme.
    #[serde(default)]
    extremes: Option<(f64, f64)>,
    /// When the series began: with a daily profile, new extremes need a wider margin until a full day
    /// has been seen, since the first day's peak is higher than anything before it.
    #[serde(default)]
    first_ts_us: Option<i64>,
    /// The highest recent score, decaying over the cooldown.
    recent_peak: f64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Share of a day on each side of a profile bucket whose values count as expected at this time of day.
const ENVELOPE_SHARE: f64 = 1.0 / 48.0;
/// How much a score must exceed the recent peak to be reported again within the cooldown.
const ESCALATION_MIN: f64 = 0.05;
/// The share of its score that a repeated (not escalating) observation keeps.
const DAMPED_SHARE: f64 = 0.3;

impl SeriesDetector {
    pub fn new(config: SeriesConfig) -> Self {
        let daily = vec![Bucket::default(); config.daily_buckets];
        SeriesDetector {
            recent: VecDeque::with_capacity(config.baseline_steps + 1),
            residuals: VecDeque::with_capacity(config.baseline_steps + 1),
            outside: VecDeque::with_capacity(config.shift_steps + 1),
            surprises: VecDeque::with_capacity(config.likelihood_average_steps + 1),
            tail: TailModel::new(config.likelihood_steps),
            mean_tail: TailModel::new(config.likelihood_steps),
            daily,
            weekdays: vec![WeekdayLevel::default(); 7],
            day_residuals: (0.0, 0, i64::MIN),
            steps: 0,
            extremes: None,
            first_ts_us: None,
            recent_peak: 0.0,
            config,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Scores `value` observed at `ts_us`, then learns it.
    pub fn observe(&mut self, ts_us: i64, value: f64) -> Verdict {
        let value = if value.is_finite() { value } else { 0.0 };
        let value = if self.config.log_scale { value.max(0.0).ln_1p() } else { value };
        let day = ts_us.div_euclid(MICROS_PER_DAY);
        let bucket_idx = self.bucket_of(ts_us);
        let seasonal =
            bucket_idx.map(|idx| self.daily[idx]).filter(|bucket| bucket.days >= self.config.seasonal_days_min);
        // Once a weekday has been seen a full day, its level against the profile moves the expectation:
        // quiet weekends are expected, a weekend as busy as a weekday is not.
        let weekday_offset = self.weekday_offset(day);

        // The recent level and spread, robustly.
        let (level, spread) = self.window_stats(Window::Recent);
        // With a daily profile, expect the range the profile spans around this time of day (the same event
        // comes a little earlier or later each day), moved by how far the series sits from its profile
        // lately; the noise is that of successive changes.
        let by_profile = seasonal.is_some() && self.residuals.len() >= self.config.shift_steps;
        let (expected, expected_low, expected_high, expected_spread) = match (seasonal, bucket_idx) {
            (Some(bucket), Some(idx)) if by_profile => {
                let (residual_level, _) = self.window_stats(Window::Residuals);
                let (low, high) = self.envelope(idx);
                let noise = self.step_noise().min(spread);
                let shift = residual_level + weekday_offset;
                (bucket.mean + shift, low + shift, high + shift, noise)
            }
            _ => (level, level, level, spread),
        };
        let floor = spread_floor(expected);
        let outside = if value < expected_low {
            expected_low - value
        } else if value > expected_high {
            value - expected_high
        } else {
            0.0
        };
        let point_z = outside / expected_spread.max(floor);
        let shift_z = if by_profile {
            // Against the daily profile: a run of values outside it, such as a missing daily peak.
            let signed = if value < expected_low { -outside } else { outside };
            self.seasonal_shift_z(signed, expected_spread.max(floor))
        } else {
            self.outside.clear();
            self.shift_z(value, level, spread.max(floor))
        };
        let mut surprise = point_z.max(shift_z).min(1e6);
        // With a daily profile, the shift of the residuals against it: the daily swing is no shift.
        let mean_z = match seasonal {
            Some(bucket) if self.residuals.len() >= 4 * self.config.mean_shift_steps => {
                self.mean_shift_z(Window::Residuals, value - bucket.mean - weekday_offset)
            }
            _ => self.mean_shift_z(Window::Recent, value),
        };
        // For counts, a new extreme must also be unlikely for a Poisson process at the recent rate: three
        // errors where there was at most one are a new extreme, but a common one.
        let mut extreme_is_likely = false;
        if self.config.counts && !self.recent.is_empty() {
            // Nothing in the whole window is taken as half an event in it.
            let rate = (self.recent.iter().sum::<f64>() / self.recent.len() as f64)
                .max(expected)
                .max(0.5 / self.recent.len() as f64);
            let n = self.config.shift_steps.max(1);
            let window_sum = self.recent.iter().rev().take(n - 1).sum::<f64>() + value;
            let window_steps = (self.recent.len() + 1).min(n) as f64;
            let point_poisson = poisson_z(value, rate);
            extreme_is_likely = point_poisson < RECORD_COUNTS_Z;
            surprise = surprise.min(point_poisson.max(poisson_z(window_sum, rate * window_steps)));
        }
        // Always called: it learns the extremes.
        let record = self.record_score(ts_us, value);
        let record = if extreme_is_likely { 0.0 } else { record };

        // The tests, each calibrated on its own: the point and level-shift surprise against its history, a
        // new extreme of the whole history, a shift of the mean against its history, a silence.
        let mean_score = MEAN_SHIFT_WEIGHT * self.mean_tail.score(mean_z);
        let likelihood = self.likelihood(surprise).max(record).max(mean_score).max(self.silence_score(value));
        // Like the surprises, mean shifts of the warm-up are not learned.
        if self.steps as usize >= self.config.warmup_steps && mean_z > 0.0 {
            self.mean_tail.learn(mean_z);
        }
        self.learn(value, surprise, bucket_idx, seasonal.map(|b| b.mean), weekday_offset, day);

        let warm = self.steps as usize > self.config.warmup_steps;
        let score = report_once(&mut self.recent_peak, if warm { likelihood } else { 0.0 }, self.config.cooldown_steps);
        let band = 3.0 * expected_spread.max(floor);
        let back = |v: f64| if self.config.log_scale { v.exp_m1() } else { v };
        Verdict {
            score,
            surprise,
            expected: back(expected),
            expected_low: back(expected_low - band),
            expected_high: back(expected_high + band),
        }
    }

    /// A new extreme: how far `value` goes beyond the lowest and highest values of the whole history, as
    /// a share of their range. From `RECORD_MARGIN` on it scores `RECORD_BASE`, growing towards 1 with the
    /// excess; 0 inside the range and during the first `RECORD_STEPS_MIN` steps. With a daily
    /// profile, the first day's margin is `RECORD_MARGIN_FIRST_DAY`. Unlike the surprise, it
    /// does not get used to spikes: a spike twice as high as every spike before is news even in a series
    /// made of spikes. Learns `value` as it goes.
    fn record_score(&mut self, ts_us: i64, value: f64) -> f64 {
        let first_ts_us = *self.first_ts_us.get_or_insert(ts_us);
        if (self.steps as usize) < self.config.warmup_steps {
            return 0.0;
        }
        let Some((low, high)) = self.extremes else {
            self.extremes = Some((value, value));
            return 0.0;
        };
        self.extremes = Some((low.min(value), high.max(value)));
        if (self.steps as usize) < RECORD_STEPS_MIN {
            return 0.0;
        }
        let a_day_seen = self.config.daily_buckets == 0 || ts_us - first_ts_us >= MICROS_PER_DAY;
        let margin = if a_day_seen { RECORD_MARGIN } else { RECORD_MARGIN_FIRST_DAY };
        let range = (high - low).max(spread_floor(high));
        let excess = (value - high).max(low - value) / range;
        if excess < margin {
            return 0.0;
        }
        RECORD_BASE + (1.0 - RECORD_BASE) * (1.0 - (-(excess - margin) / margin).exp())
    }

    /// For counts: a run of zeros where every step of the baseline counted at least a few events (a
    /// function that went silent). Scored by how unlikely the run is under a Poisson process at the
    /// baseline's lowest count, on the tail model's scale; the robust spread of a daily swing, which
    /// blunts the surprise, does not blunt this.
    fn silence_score(&self, value: f64) -> f64 {
        if !self.config.counts || value > 0.0 || self.recent.len() < SILENCE_BASELINE_MIN {
            return 0.0;
        }
        let run = 1 + self.recent.iter().rev().take_while(|v| **v <= 0.0).count();
        let before = self.recent.len() + 1 - run;
        if before < SILENCE_BASELINE_MIN {
            return 0.0;
        }
        let mut baseline: Vec<f64> = self.recent.iter().take(before).copied().collect();
        baseline.sort_unstable_by(f64::total_cmp);
        let lowest = baseline[0];
        // Where every step of the baseline counted a few events: P(run zeros) = exp(-lowest * run).
        let by_lowest =
            if lowest >= SILENCE_LOWEST_MIN { lowest * run as f64 * std::f64::consts::LOG10_E } else { 0.0 };
        // Otherwise, a step is silent with the larger of the baseline's own share of zeros (with one more
        // silent and one more busy step, so that no share is 0) and a Poisson zero at its tenth
        // percentile: a function that often idles, or whose rate is falling into its nightly trough,
        // makes runs of zeros likely.
        let zeros = baseline.iter().take_while(|v| **v <= 0.0).count();
        let share = (zeros as f64 + 1.0) / (before as f64 + 2.0);
        let low = baseline[before / 10];
        let silent = share.max((-low).exp());
        let by_share = -(run as f64) * silent.log10();
        let rarity = by_lowest.max(by_share);
        1.0 - (-rarity / RARITY_SCALE).exp()
    }

    fn weekday_offset(&self, day: i64) -> f64 {
        if !self.config.weekly || self.weekdays.len() != 7 {
            return 0.0;
        }
        let level = self.weekdays[day.rem_euclid(7) as usize];
        if level.weeks >= 1 {
            level.offset
        } else {
            0.0
        }
    }

    /// Accumulates today's residual against the daily profile; when a day ends with enough of it
    /// observed, its mean becomes its weekday's level.
    fn learn_weekday(&mut self, residual: Option<f64>, day: i64) {
        if !self.config.weekly || self.weekdays.len() != 7 {
            return;
        }
        let (sum, n, current) = self.day_residuals;
        if day != current {
            let steps_per_day = self.config.daily_buckets.max(1) as u32;
            if current != i64::MIN && n >= steps_per_day / 2 {
                let mean = sum / n as f64;
                let level = &mut self.weekdays[current.rem_euclid(7) as usize];
                level.offset = if level.weeks == 0 { mean } else { level.offset + 0.5 * (mean - level.offset) };
                level.weeks += 1;
            }
            self.day_residuals = (0.0, 0, day);
        }
        if let Some(residual) = residual {
            self.day_residuals.0 += residual;
            self.day_residuals.1 += 1;
        }
    }

    fn bucket_of(&self, ts_us: i64) -> Option<usize> {
        (self.config.daily_buckets > 0).then(|| {
            let into_day = ts_us.rem_euclid(MICROS_PER_DAY);
            (into_day as i128 * self.config.daily_buckets as i128 / MICROS_PER_DAY as i128) as usize
        })
    }

    /// The lowest and highest profile values within `ENVELOPE_SHARE` of a day around bucket `idx`.
    fn envelope(&self, idx: usize) -> (f64, f64) {
        let n = self.daily.len();
        let reach = ((n as f64 * ENVELOPE_SHARE).round() as usize).min(n / 2);
        let mut low = f64::INFINITY;
        let mut high = f64::NEG_INFINITY;
        for offset in 0..=2 * reach {
            let bucket = self.daily[(idx + n + offset - reach) % n];
            if bucket.days > 0 {
                low = low.min(bucket.mean);
                high = high.max(bucket.mean);
            }
        }
        (low, high)
    }

    /// The noise of the series as the robust spread of its successive changes (divided by √2): unlike the
    /// spread around the median, it does not grow with a daily swing.
    fn step_noise(&self) -> f64 {
        let changes = self.recent.iter().zip(self.recent.iter().skip(1)).map(|(a, b)| b - a);
        median_and_spread(changes).1 / std::f64::consts::SQRT_2
    }

    fn window_stats(&self, window: Window) -> (f64, f64) {
        let source = match window {
            Window::Recent => &self.recent,
            Window::Residuals => &self.residuals,
        };
        if source.is_empty() {
            return (0.0, 0.0);
        }
        median_and_spread(source.iter().copied())
    }

    /// Robust z of the median distance outside the daily profile's range over the last `shift_steps`.
    fn seasonal_shift_z(&mut self, signed_outside: f64, noise: f64) -> f64 {
        let n = self.config.shift_steps;
        push_bounded(&mut self.outside, signed_outside, n);
        if n < 2 || self.outside.len() < n {
            return 0.0;
        }
        let short = median_of(self.outside.iter().copied());
        short.abs() / (noise * 1.25 / (n as f64).sqrt())
    }

    /// z of the mean of the last `mean_shift_steps` values against the mean and standard deviation of the
    /// baseline before them: a change in how often a bursty series bursts, or a level change inside
    /// noise, which the median of a few steps does not see.
    fn mean_shift_z(&self, window: Window, value: f64) -> f64 {
        let m = self.config.mean_shift_steps;
        let source = match window {
            Window::Recent => &self.recent,
            Window::Residuals => &self.residuals,
        };
        if m < 2 || source.len() < 4 * m {
            return 0.0;
        }
        let older = source.len() - (m - 1);
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for v in source.iter().take(older) {
            sum += v;
            sum_sq += v * v;
        }
        let mean = sum / older as f64;
        let std = (sum_sq / older as f64 - mean * mean).max(0.0).sqrt().max(spread_floor(mean));
        let short = (source.iter().skip(older).sum::<f64>() + value) / m as f64;
        (short - mean).abs() / (std / (m as f64).sqrt())
    }

    /// Robust z of the median of the last `shift_steps` values (this one included) against the level
    /// before them: catches level shifts and drops that single points hide in noise.
    fn shift_z(&self, value: f64, level: f64, spread: f64) -> f64 {
        let n = self.config.shift_steps;
        if n < 2 || self.recent.len() < 2 * n {
            return 0.0;
        }
        let short = median_of(self.recent.iter().rev().take(n - 1).copied().chain([value]));
        // The median of n values varies about 1.25/sqrt(n) as much as one value.
        (short - level).abs() / (spread * 1.25 / (n as f64).sqrt())
    }

    /// How unusual the recent average surprise is against this series' own history of surprises: its
    /// tail probability in that history, on a log scale where 1.0 is beyond anything seen.
    fn likelihood(&self, surprise: f64) -> f64 {
        let k = self.config.likelihood_average_steps.max(1);
        let recent: f64 = self.surprises.iter().rev().take(k - 1).sum::<f64>() + surprise;
        self.tail.score(recent / k.min(self.surprises.len() + 1) as f64)
    }

    fn learn(
        &mut self,
        value: f64,
        surprise: f64,
        bucket_idx: Option<usize>,
        seasonal: Option<f64>,
        weekday_offset: f64,
        day: i64,
    ) {
        self.steps += 1;
        push_bounded(&mut self.recent, value, self.config.baseline_steps);
        if let Some(expected) = seasonal {
            push_bounded(&mut self.residuals, value - expected - weekday_offset, self.config.baseline_steps);
        }
        self.learn_weekday(seasonal.map(|expected| value - expected), day);
        let k = self.config.likelihood_average_steps.max(1);
        let recent: f64 = self.surprises.iter().rev().take(k - 1).sum::<f64>() + surprise;
        // Surprises of the warm-up, measured against a baseline of a few values, would mask real anomalies
        // for as long as the tail model remembers them.
        if self.steps as usize > self.config.warmup_steps {
            self.tail.learn(recent / k.min(self.surprises.len() + 1) as f64);
        }
        push_bounded(&mut self.surprises, surprise, k);
        if let Some(idx) = bucket_idx {
            let bucket = &mut self.daily[idx];
            if bucket.days == 0 {
                *bucket = Bucket { mean: value, days: 1, last_day: day };
            } else {
                bucket.mean += 0.3 * (value - bucket.mean);
                if day != bucket.last_day {
                    bucket.days += 1;
                    bucket.last_day = day;
                }
            }
        }
    }
}

/// The distribution of a series' surprises: counts in logarithmic buckets, forgotten exponentially with
/// an effective memory of `memory_steps`. Bounded at a few hundred bytes however long the series runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TailModel {
    counts: Vec<f64>,
    total: f64,
    keep: f64,
}

const TAIL_BUCKETS: usize = 144;
/// How much wider than a standard normal the tail beyond the surprises seen is assumed to be.
const TAIL_WIDENING: f64 = 2.0;
/// Orders of magnitude of rarity per e-fold towards a score of 1.
const RARITY_SCALE: f64 = 3.0;
/// Surprises seen before scores mean anything: with a short history every fluctuation is a record.
const TAIL_HISTORY_MIN: f64 = 100.0;
const TAIL_BUCKETS_PER_OCTAVE: f64 = 6.0;

impl TailModel {
    /// The tail of a surprise a checkpoint did not keep yet: it learns from the restart on.
    fn from_checkpoint_before_it() -> Self {
        TailModel::new(SeriesConfig::default().likelihood_steps)
    }

    pub(crate) fn new(memory_steps: usize) -> Self {
        TailModel { counts: vec![0.0; TAIL_BUCKETS], total: 0.0, keep: 1.0 - 1.0 / memory_steps.max(2) as f64 }
    }

    /// Bucket and position inside it (0..1) of a surprise.
    fn position(surprise: f64) -> (usize, f64) {
        let at = (1.0 + surprise.max(0.0)).log2() * TAIL_BUCKETS_PER_OCTAVE;
        if at >= TAIL_BUCKETS as f64 {
            return (TAIL_BUCKETS - 1, 1.0);
        }
        (at as usize, at.fract())
    }

    pub(crate) fn learn(&mut self, surprise: f64) {
        for count in self.counts.iter_mut() {
            *count *= self.keep;
        }
        self.total = self.total * self.keep + 1.0;
        self.counts[Self::position(surprise).0] += 1.0;
    }

    /// 0 for a surprise as common as any, towards 1 the rarer it is in the memory; beyond every bucket
    /// seen, the score keeps growing with the surprise so that rarer outliers rank higher.
    pub(crate) fn score(&self, surprise: f64) -> f64 {
        if self.total < TAIL_HISTORY_MIN {
            return 0.0;
        }
        let (bucket, inside) = Self::position(surprise);
        let above: f64 = self.counts[bucket + 1..].iter().sum::<f64>() + self.counts[bucket] * (1.0 - inside);
        let probability = if above > 0.01 {
            (above + 0.5) / (self.total + 1.0)
        } else {
            // Beyond the history: extrapolate from the highest bucket seen, one octave per halving.
            let top = self.counts.iter().rposition(|c| *c > 0.01).unwrap_or(0);
            // Beyond the history the tail is extrapolated as a normal tail twice as wide as the surprises
            // (which are z-scores): it falls off faster the further out it is, but not as fast as a
            // textbook normal, because real series have heavier tails.
            let top_surprise = 2f64.powf((top + 1) as f64 / TAIL_BUCKETS_PER_OCTAVE) - 1.0;
            let at = 2f64.powf((bucket as f64 + inside) / TAIL_BUCKETS_PER_OCTAVE) - 1.0;
            let fall =
                normal_tail(at / TAIL_WIDENING) / normal_tail(top_surprise / TAIL_WIDENING).max(f64::MIN_POSITIVE);
            0.5 / (self.total + 1.0) * fall.min(1.0)
        };
        // -log10 of the probability, squashed into [0, 1) without saturating: 0.67 for one in two
        // thousand, 0.81 for one in 100,000, 0.96 for one in 10^10; rarer is always higher.
        let rarity = -probability.log10();
        (1.0 - (-rarity / RARITY_SCALE).exp()).clamp(0.0, 1.0)
    }
}

#[derive(Clone, Copy)]
enum Window {
    Recent,
    Residuals,
}

/// One anomaly is reported once: a score counts in full only when it rises clearly above the recent peak,
/// which decays over `cooldown_steps`; a run of high scores reports its first and its escalations, the
/// rest keep `DAMPED_SHARE` of their score.
pub(crate) fn report_once(recent_peak: &mut f64, score: f64, cooldown_steps: usize) -> f64 {
    let peak = *recent_peak;
    *recent_peak = score.max(peak * (1.0 - 1.0 / cooldown_steps.max(1) as f64));
    if score <= peak + ESCALATION_MIN {
        score * DAMPED_SHARE
    } else {
        score
    }
}

/// The smallest spread a series is given: a flat series that moves a little is not a million sigma off.
fn spread_floor(expected: f64) -> f64 {
    (expected.abs() * 0.01).max(1e-3)
}

fn push_bounded(window: &mut VecDeque<f64>, value: f64, capacity: usize) {
    if window.len() == capacity {
        window.pop_front();
    }
    window.push_back(value);
}

thread_local! {
    /// Scratch space for medians, shared by every detector on a thread instead of held by each.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        scratch.extend(values);
        if scratch.is_empty() {
            return 0.0;
        }
        median_in_place(scratch)
    })
}

/// Median and robust standard deviation (1.4826 MAD); zeros for no values.
fn median_and_spread(values: impl Iterator<Item = f64>) -> (f64, f64) {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        scratch.extend(values);
        if scratch.is_empty() {
            return (0.0, 0.0);
        }
        let median = median_in_place(scratch);
        for v in scratch.iter_mut() {
            *v = (*v - median).abs();
        }
        (median, 1.4826 * median_in_place(scratch))
    })
}

fn median_in_place(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    let (_, median, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    *median
}

/// How far `count` is from a Poisson mean `rate`, as the z-score of a normal variable with the same tail
/// probability (upper tail above the mean, lower tail below it).
pub fn poisson_z(count: f64, rate: f64) -> f64 {
    let count = count.max(0.0).round();
    let rate = rate.max(1e-9);
    let tail = if count > rate { poisson_upper_tail(count, rate) } else { poisson_lower_tail(count, rate) };
    z_of_tail(tail)
}

/// P(X >= k) for X ~ Poisson(rate).
fn poisson_upper_tail(k: f64, rate: f64) -> f64 {
    if rate > 200.0 {
        return normal_tail((k - 0.5 - rate) / rate.sqrt());
    }
    // Sum the pmf from k upwards until the terms vanish, in logs to avoid overflow.
    let mut log_term = k * rate.ln() - rate - ln_factorial(k);
    let mut sum = 0.0;
    let mut i = k;
    while i < k + 1_000.0 {
        let term = log_term.exp();
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
        i += 1.0;
        log_term += rate.ln() - i.ln();
    }
    sum.min(1.0)
}

/// P(X <= k) for X ~ Poisson(rate).
fn poisson_lower_tail(k: f64, rate: f64) -> f64 {
    if rate > 200.0 {
        return 1.0 - normal_tail((k + 0.5 - rate) / rate.sqrt());
    }
    let mut log_term = -rate;
    let mut sum = log_term.exp();
    let mut i = 0.0;
    while i < k {
        i += 1.0;
        log_term += rate.ln() - f64::ln(i);
        sum += log_term.exp();
    }
    sum.min(1.0)
}

fn ln_factorial(n: f64) -> f64 {
    if n < 20.0 {
        return (1..=n as u64).map(|i| (i as f64).ln()).sum();
    }
    // Stirling's series.
    n * n.ln() - n + 0.5 * (std::f64::consts::TAU * n).ln() + 1.0 / (12.0 * n)
}

/// The z whose upper normal tail is `tail` (0 for tails of a half or more).
fn z_of_tail(tail: f64) -> f64 {
    if tail >= 0.5 {
        return 0.0;
    }
    let tail = tail.max(1e-300);
    // Bisection on the normal tail: monotone, and cheap enough for one call per step.
    let (mut low, mut high) = (0.0f64, 40.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (low + high);
        if normal_tail(mid) > tail {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// P(Z > z) for a standard normal Z (Abramowitz and Stegun 7.1.26 on erfc, error below 1.5e-7).
pub fn normal_tail(z: f64) -> f64 {
    if z < 0.0 {
        return 1.0 - normal_tail(-z);
    }
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP_US: i64 = 60_000_000;

    fn noisy(step: i64) -> f64 {
        // Deterministic noise in [-1, 1].
        let x = (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn run(values: impl Iterator<Item = f64>) -> Vec<Verdict> {
        let mut detector = SeriesDetector::new(SeriesConfig::default());
        values.enumerate().map(|(step, value)| detector.observe(step as i64 * STEP_US, value)).collect()
    }

    #[test]
    fn weekday_levels_make_quiet_weekends_expected_and_a_busy_one_surprising() {
        let step_us = 15 * STEP_US;
        let day_steps = 96i64;
        let weekend = |day: i64| matches!(day.rem_euclid(7), 2 | 3);
        let value = |step: i64, busy_weekend: bool| {
            let day = step / day_steps;
            let phase = (step % day_steps) as f64 / day_steps as f64;
            let daily = 100.0 + 50.0 * (std::f64::consts::TAU * phase).sin();
            let level = if weekend(day) && !busy_weekend { 0.4 } else { 1.0 };
            daily * level + 2.0 * noisy(step)
        };
        let run = |weekly: bool, anomalous_day: Option<i64>| {
            let mut detector = SeriesDetector::new(SeriesConfig { weekly, ..SeriesConfig::for_step(step_us) });
            (0..28 * day_steps)
                .map(|step| detector.observe(step * step_us, value(step, Some(step / day_steps) == anomalous_day)))
                .collect::<Vec<Verdict>>()
        };
        let day_max = |verdicts: &[Verdict], day: i64, of: fn(&Verdict) -> f64| {
            verdicts[(day * day_steps) as usize..((day + 1) * day_steps) as usize].iter().map(of).fold(0.0, f64::max)
        };
        let weekend_surprise = |verdicts: &[Verdict]| -> f64 {
            (14..28).filter(|d| weekend(*d)).map(|d| day_max(verdicts, d, |v| v.surprise)).sum()
        };
        // Weeks 3 and 4 of normal traffic raise nothing; with weekday levels, weekends surprise far less.
        let normal = run(true, None);
        for day in 14..28 {
            let score = day_max(&normal, day, |v| v.score);
            assert!(score < 0.7, "day {day} (weekend: {}) scored {score}", weekend(day));
        }
        let without = run(false, None);
        assert!(weekend_surprise(&normal) < 0.5 * weekend_surprise(&without));
        // A weekend day in week 4 as busy as a weekday: invisible to the daily profile alone, far out of
        // line with its weekday's level.
        let busy_day = (21..28).find(|d| weekend(*d)).unwrap();
        let seen = day_max(&run(true, Some(busy_day)), busy_day, |v| v.surprise);
        let unseen = day_max(&run(false, Some(busy_day)), busy_day, |v| v.surprise);
        assert!(seen > 30.0 && unseen < 10.0, "busy weekend surprise {seen} with weekday levels, {unseen} without");
    }

    #[test]
    fn series_files_parse_or_name_their_bad_line() {
        let rows = parse_series("timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,2\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1 - rows[0].1, 300_000_000);
        assert_eq!(parse_series("2026-01-01T00:00:00Z,3\n1767225660,4\n").unwrap()[1].1, 1_767_225_660_000_000);
        let cases = [
            ("timestamp,value\n2014-04-01 00:00:00,abc\n", "line 2: the value is not a finite number"),
            ("timestamp,value\nyesterday,1\n", "line 2: the timestamp"),
            ("timestamp,value\n2014-04-01 00:00:00\n", "line 2: expected timestamp,value"),
            ("timestamp,value\n2014-04-01 00:00:00,NaN\n", "line 2: the value is not a finite number"),
            ("", "no timestamp,value rows"),
            ("\u{0}\u{1}binary,\u{ff}", "no timestamp,value rows"),
        ];
        for (input, message) in cases {
            let error = parse_series(input).unwrap_err().to_string();
            assert!(error.starts_with(message), "{input:?}: {error}");
        }
        let long = format!("timestamp,value\n{},1\n", "9".repeat(100_000));
        assert!(parse_series(&long).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn a_repeated_hour_a_duplicate_and_a_gap_are_scored_row_by_row() {
        // Five-minute steps; 01:00 to 01:55 comes twice (a daylight-saving hour), 02:30 twice, and the
        // hour after 04:00 is missing.
        let mut text = String::from("timestamp,value\n");
        let mut stamps = Vec::new();
        for minute in (0..120).step_by(5) {
            stamps.push(format!("2014-10-26 {:02}:{:02}:00", minute / 60, minute % 60));
        }
        for minute in (60..150).step_by(5) {
            stamps.push(format!("2014-10-26 {:02}:{:02}:00", minute / 60, minute % 60));
        }
        stamps.push("2014-10-26 02:30:00".to_string());
        stamps.push("2014-10-26 02:30:00".to_string());
        for minute in (155..240).step_by(5).chain((300..360).step_by(5)) {
            stamps.push(format!("2014-10-26 {:02}:{:02}:00", minute / 60, minute % 60));
        }
        for (i, stamp) in stamps.iter().enumerate() {
            text.push_str(&format!("{stamp},{}\n", 10 + i % 3));
        }
        let rows = parse_series(&text).unwrap();
        assert_eq!(rows.len(), stamps.len(), "every row is kept");
        let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let step = median_step(&times);
        assert_eq!(step, 300_000_000);
        let mut clock = ScoringClock::new(step);
        let mut detector = SeriesDetector::new(SeriesConfig::for_step(step));
        let mut scored_times = Vec::new();
        for (_, ts, value) in &rows {
            let at = clock.time_of(*ts);
            let verdict = detector.observe(at, *value);
            assert!((0.0..=1.0).contains(&verdict.score), "{verdict:?}");
            scored_times.push(at);
        }
        assert_eq!(scored_times.len(), rows.len());
        assert!(scored_times.windows(2).all(|w| w[1] >= w[0]), "the detector's time never runs back");
        assert_eq!(clock.irregularities, Irregularities { steps_back: 1, duplicates: 1, gaps: 1 });
        // The repeated hour is scored as the hour that passed: two hours after 01:00 for the second 01:00.
        let first_repeat = 24;
        assert_eq!(scored_times[first_repeat] - scored_times[first_repeat - 1], step);
    }

    #[test]
    fn poisson_surprises_follow_the_poisson_tails() {
        // P(X >= 3 | 0.25) = 0.0022: a z of about 2.85.
        assert!((poisson_z(3.0, 0.25) - 2.85).abs() < 0.05, "{}", poisson_z(3.0, 0.25));
        // Nothing where 44 were expected: P = e^-44, far out.
        assert!(poisson_z(0.0, 44.0) > 8.0);
        assert!(poisson_z(10.0, 10.0) < 0.5);
        assert!(poisson_z(1_500.0, 1_000.0) > 10.0);
        assert!((ln_factorial(25.0) - (2..=25).map(|i| (i as f64).ln()).sum::<f64>()).abs() < 1e-6);
    }

    #[test]
    fn the_normal_tail_matches_known_values() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.96) - 0.025).abs() < 1e-4);
        assert!((normal_tail(-1.0) - 0.841_344_7).abs() < 1e-6);
        assert!(normal_tail(8.0) < 1e-14);
    }

    #[test]
    fn extreme_and_non_finite_values_give_scores_in_range() {
        for counts in [false, true] {
            let mut detector = SeriesDetector::new(SeriesConfig { counts, ..SeriesConfig::default() });
            let values = [1e308, -1e308, 0.0, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE, 5.0, -0.0];
            for step in 0..3_000i64 {
                let value = values[(step as usize * 7 + step as usize / 5) % values.len()];
                let verdict = detector.observe(step * STEP_US, value);
                assert!((0.0..=1.0).contains(&verdict.score), "step {step} value {value}: {verdict:?}");
            }
        }
    }

    #[test]
    fn noise_alone_scores_low_and_a_spike_scores_high_once() {
        let verdicts = run((0..2_000).map(|step| 100.0 + 5.0 * noisy(step) + if step == 1_500 { 60.0 } else { 0.0 }));
        let before = verdicts[100..1_500].iter().map(|v| v.score).fold(0.0, f64::max);
        assert!(before < 0.5, "noise scored {before}");
        assert!(verdicts[1_500].score > 0.7, "spike scored {:?}", verdicts[1_500]);
        assert!(verdicts[1_500].expected_high < 160.0 && verdicts[1_500].expected_low > 80.0);
        let after = verdicts[1_501..1_520].iter().filter(|v| v.score >= verdicts[1_500].score).count();
        assert_eq!(after, 0, "the spike is reported once");
    }

    /// A series of spikes of about the same height, every `period` steps, over a noisy floor.
    fn spiky(step: i64, period: i64) -> f64 {
        let floor = 10.0 + noisy(step);
        if step % period == 0 {
            floor + 100.0 + 10.0 * noisy(step + 7)
        } else {
            floor
        }
    }

    #[test]
    fn a_spike_far_beyond_every_spike_before_is_a_new_extreme_and_an_ordinary_one_is_not() {
        let mut detector = SeriesDetector::new(SeriesConfig::default());
        let mut scores = Vec::new();
        for step in 0..3_000i64 {
            let value = if step == 2_500 { 250.0 } else { spiky(step, 50) };
            scores.push(detector.observe(step * STEP_US, value).score);
        }
        // The surprise of spikes is ordinary by now; the spike two and a half times higher is not.
        assert!(scores[2_500] > 0.8, "new extreme scored {}", scores[2_500]);
        let ordinary = (2_000..2_500).step_by(50).map(|s| scores[s]).fold(0.0, f64::max);
        // Spikes a little higher than any before are new extremes too, but they stay below alerting.
        assert!(ordinary < 0.7, "ordinary spikes scored {ordinary}");
    }

    #[test]
    fn a_daily_peak_at_half_its_height_shifts_the_mean_against_the_profile() {
        // Five-minute steps; busy (80) from 08:00 to 16:00, quiet (20) otherwise, with noise and a busy
        // period that starts a little earlier or later each day. Day 9's busy period runs at 45.
        let step_us = 5 * STEP_US;
        let day_steps = 288i64;
        let value = |step: i64, low_day: bool| {
            let day = step / day_steps;
            let into = step % day_steps;
            let start = 96 + (day * 7) % 5 - 2;
            let busy = (start..start + 96).contains(&into);
            let level = match (busy, low_day) {
                (true, true) => 45.0,
                (true, false) => 80.0,
                _ => 20.0,
            };
            level + 3.0 * noisy(step)
        };
        let mut detector = SeriesDetector::new(SeriesConfig::for_step(step_us));
        let scores: Vec<f64> = (0..10 * day_steps)
            .map(|step| detector.observe(step * step_us, value(step, step / day_steps == 9)).score)
            .collect();
        let day_max = |days: std::ops::Range<i64>| {
            scores[(days.start * day_steps) as usize..(days.end * day_steps) as usize]
                .iter()
                .copied()
                .fold(0.0, f64::max)
        };
        let (normal, low_day) = (day_max(5..9), day_max(9..10));
        assert!(normal < 0.6 && low_day > 0.8, "normal days scored {normal}, the low day {low_day}");
        // Against the profile, the daily rise is no shift of the mean; against the recent values it is.
        let mut detector = SeriesDetector::new(SeriesConfig::for_step(step_us));
        let rise = 6 * day_steps + 96 + (6 * 7) % 5 - 2;
        for step in 0..rise + 24 {
            detector.observe(step * step_us, value(step, false));
        }
        let next = rise + 24;
        let bucket = detector.daily[detector.bucket_of(next * step_us).unwrap()];
        let raw = detector.mean_shift_z(Window::Recent, value(next, false));
        let against_profile = detector.mean_shift_z(Window::Residuals, value(next, false) - bucket.mean);
        assert!(raw > 5.0 && against_profile < 2.0, "mean shift {raw} raw, {against_profile} against the profile");
    }

    #[test]
    fn a_count_that_goes_silent_is_found_at_once_and_a_sparse_one_is_not() {
        let mut rng = workload::Rng::new(3);
        let config = SeriesConfig { counts: true, ..SeriesConfig::default() };
        // About 30 events a step, the rate itself varying between 15 and 45 from step to step (batches of
        // a queue): zero is only three robust deviations away. Silent from step 600.
        let mut busy = SeriesDetector::new(config.clone());
        let mut scores = Vec::new();
        for step in 0..610i64 {
            let rate = 30.0 * (0.5 + rng.unit());
            let value = if step >= 600 { 0.0 } else { rng.poisson(rate) as f64 };
            scores.push(busy.observe(step * STEP_US, value).score);
        }
        let first = scores[600..].iter().position(|s| *s >= 0.8);
        assert!(first.is_some_and(|steps| steps <= 2), "silence first scored 0.8 after {first:?} steps");
        // Two events a step on average: zeros happen, and three in a row are not news.
        let mut sparse = SeriesDetector::new(config);
        let mut worst: f64 = 0.0;
        for step in 0..1_000i64 {
            let value = if (900..903).contains(&step) { 0.0 } else { rng.poisson(2.0) as f64 };
            let score = sparse.observe(step * STEP_US, value).score;
            if step >= 900 {
                worst = worst.max(score);
            }
        }
        assert!(worst < 0.8, "zeros of a sparse count scored {worst}");
    }

    #[test]
    fn a_new_extreme_of_a_count_must_be_unlikely_for_its_poisson_rate() {
        let mut rng = workload::Rng::new(9);
        let config = SeriesConfig { counts: true, daily_buckets: 0, ..SeriesConfig::default() };
        // Errors at 0.3 a step, then one more than ever seen: a new extreme, but a common one.
        let mut errors = SeriesDetector::new(config.clone());
        let mut highest = 0.0f64;
        for step in 0..1_000i64 {
            let value = rng.poisson(0.3) as f64;
            errors.observe(step * STEP_US, value);
            highest = highest.max(value);
        }
        let score = errors.observe(1_000 * STEP_US, highest + 1.0).score;
        assert!(score < 0.8, "{} errors where at most {highest} were seen scored {score}", highest + 1.0);
        // New callers of a function that never had one: four in a step is.
        let mut callers = SeriesDetector::new(config);
        let mut last = 0.0;
        for step in 0..600i64 {
            last = callers.observe(step * STEP_US, if step == 599 { 4.0 } else { 0.0 }).score;
        }
        assert!(last > 0.9, "four new callers scored {last}");
    }

    #[test]
    fn a_drop_to_zero_and_a_level_shift_are_found_within_a_few_steps() {
        for (name, change) in [("drop", 0.0), ("shift", 140.0)] {
            let verdicts = run((0..2_000).map(|step| if step >= 1_500 { change } else { 100.0 + 5.0 * noisy(step) }));
            let first = verdicts[1_500..].iter().position(|v| v.score > 0.7);
            assert!(first.is_some_and(|steps| steps <= 5), "{name}: first high score after {first:?} steps");
        }
    }

    #[test]
    fn a_daily_cycle_is_learned_and_a_missing_peak_is_found() {
        let day_steps = 1_440i64;
        let value = |step: i64| {
            let phase = (step % day_steps) as f64 / day_steps as f64;
            100.0 + 80.0 * (std::f64::consts::TAU * phase).sin() + 3.0 * noisy(step)
        };
        let n = 6 * day_steps;
        let missing_from = 5 * day_steps + 300;
        let verdicts =
            run((0..n).map(
                |step| {
                    if (missing_from..missing_from + 240).contains(&step) {
                        100.0
                    } else {
                        value(step)
                    }
                },
            ));
        let normal_days = verdicts[(3 * day_steps) as usize..(5 * day_steps) as usize].iter().map(|v| v.score);
        let worst = normal_days.fold(0.0, f64::max);
        assert!(worst < 0.7, "a learned daily cycle scored {worst}");
        let found = verdicts[missing_from as usize..(missing_from + 240) as usize].iter().any(|v| v.score > 0.7);
        assert!(found, "the missing daily peak was not found");
    }
}
