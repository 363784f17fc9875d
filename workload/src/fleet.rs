//! A fleet of functions with realistic traffic profiles: trigger, memory, timeout, rate with a daily and
//! weekly cycle, duration distribution, error rate and callers.

use crate::rng::Rng;

/// What invokes a function; the names are the `trigger` column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    ApiGateway,
    FunctionUrl,
    Sqs,
    S3,
    EventBridge,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::ApiGateway => "api_gateway",
            Trigger::FunctionUrl => "function_url",
            Trigger::Sqs => "sqs",
            Trigger::S3 => "s3",
            Trigger::EventBridge => "eventbridge",
        }
    }

    /// Whether callers reach the function over HTTP (so rows carry an IP, user agent, method and path).
    pub fn is_http(self) -> bool {
        matches!(self, Trigger::ApiGateway | Trigger::FunctionUrl)
    }
}

/// One caller of a function: an address, a user agent and a principal.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub principal: Option<String>,
}

/// Everything that shapes one function's traffic.
#[derive(Debug, Clone)]
pub struct FunctionProfile {
    pub name: String,
    pub account: String,
    pub region: String,
    pub trigger: Trigger,
    pub memory_size_mb: i64,
    pub timeout_ms: f64,
    /// Mean invocations per minute at the daily mean.
    pub rate_per_minute: f64,
    /// Relative amplitude of the daily cycle (0 = flat, 0.8 = nights at a fifth of the peak).
    pub daily_amplitude: f64,
    /// UTC hour of the daily peak.
    pub peak_hour: f64,
    /// Rate factor on Saturdays and Sundays.
    pub weekend_factor: f64,
    pub duration_median_ms: f64,
    pub duration_sigma: f64,
    pub memory_used_ratio: f64,
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub init_duration_median_ms: f64,
    /// Minutes an idle execution environment lives before Lambda reclaims it.
    pub environment_idle_minutes: i64,
    pub callers: Vec<Caller>,
    pub paths: Vec<&'static str>,
}

impl FunctionProfile {
    /// The rate factor at a time, from the daily and weekly cycle.
    pub fn cycle_factor(&self, ts_us: i64) -> f64 {
        let minutes = ts_us.div_euclid(60_000_000);
        let hour = (minutes.rem_euclid(24 * 60)) as f64 / 60.0;
        let daily = 1.0 + self.daily_amplitude * (std::f64::consts::TAU * (hour - self.peak_hour) / 24.0).cos();
        // 1970-01-01 was a Thursday: day 2 of the week is Saturday, day 3 Sunday.
        let weekday = minutes.div_euclid(24 * 60).rem_euclid(7);
        let weekly = if weekday == 2 || weekday == 3 { self.weekend_factor } else { 1.0 };
        daily * weekly
    }
}

const DOMAINS: [&str; 15] = [
    "orders",
    "payments",
    "users",
    "inventory",
    "images",
    "reports",
    "auth",
    "search",
    "notifications",
    "billing",
    "shipping",
    "catalog",
    "checkout",
    "analytics",
    "invoices",
];
const ROLES: [(&str, Trigger); 10] = [
    ("api", Trigger::ApiGateway),
    ("worker", Trigger::Sqs),
    ("resize", Trigger::S3),
    ("sync", Trigger::EventBridge),
    ("webhook", Trigger::FunctionUrl),
    ("processor", Trigger::Sqs),
    ("export", Trigger::EventBridge),
    ("ingest", Trigger::S3),
    ("graphql", Trigger::ApiGateway),
    ("scheduler", Trigger::EventBridge),
];
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
];
const API_PATHS: [&str; 8] = [
    "/v1/items",
    "/v1/items/{id}",
    "/v1/orders",
    "/v1/orders/{id}",
    "/v1/cart",
    "/v1/session",
    "/v1/search",
    "/health",
];
/// Functions before a (domain, role) pair repeats: the least common multiple of their counts.
const PAIRS_DISTINCT: usize = lcm(DOMAINS.len(), ROLES.len());

const fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// The account every generated function lives in.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// A fleet of `n_functions` functions with varied, seeded profiles.
pub fn fleet(n_functions: usize, rng: &mut Rng) -> Vec<FunctionProfile> {
    (0..n_functions)
        .map(|function_idx| {
            // Domains and roles interleave, so that even a small fleet has every kind of trigger; the pair
            // repeats only after lcm(domains, roles) functions, which get a generation suffix.
            let domain = DOMAINS[function_idx % DOMAINS.len()];
            let (role, trigger) = ROLES[function_idx % ROLES.len()];
            let generation = function_idx / PAIRS_DISTINCT;
            let name = match generation {
                0 => format!("{domain}-{role}"),
                _ => format!("{domain}-{role}-{}", generation + 1),
            };
            profile(name, trigger, function_idx, rng)
        })
        .collect()
}

fn profile(name: String, trigger: Trigger, function_idx: usize, rng: &mut Rng) -> FunctionProfile {
    let memory_size_mb = [128, 256, 512, 1024, 1769, 2048][rng.below(6)];
    let timeout_ms = [3_000.0, 6_000.0, 15_000.0, 30_000.0, 60_000.0][rng.below(5)];
    let duration_median_ms = (timeout_ms * 0.01 * (0.5 + 3.0 * rng.unit())).clamp(8.0, 4_000.0);
    let rate_per_minute = match trigger {
        Trigger::ApiGateway | Trigger::FunctionUrl => rng.log_normal(60.0, 0.8),
        Trigger::Sqs | Trigger::S3 => rng.log_normal(25.0, 0.8),
        Trigger::EventBridge => rng.log_normal(4.0, 0.6),
    }
    .clamp(0.5, 600.0);
    let n_callers = match trigger {
        Trigger::ApiGateway | Trigger::FunctionUrl => 40 + rng.below(60),
        _ => 1 + rng.below(3),
    };
    let callers = (0..n_callers).map(|caller_idx| caller(trigger, function_idx, caller_idx, rng)).collect();
    FunctionProfile {
        name,
        account: ACCOUNT.to_string(),
        region: REGION.to_string(),
        trigger,
        memory_size_mb,
        timeout_ms,
        rate_per_minute,
        daily_amplitude: match trigger {
            Trigger::EventBridge => 0.1 * rng.unit(),
            _ => 0.3 + 0.4 * rng.unit(),
        },
        peak_hour: 13.0 + 6.0 * rng.unit(),
        weekend_factor: 0.6 + 0.3 * rng.unit(),
        duration_median_ms,
        duration_sigma: 0.25 + 0.25 * rng.unit(),
        memory_used_ratio: 0.3 + 0.4 * rng.unit(),
        error_rate: 0.002 + 0.01 * rng.unit(),
        timeout_rate: 0.0002 * rng.unit(),
        init_duration_median_ms: 150.0 + 600.0 * rng.unit(),
        environment_idle_minutes: 5 + rng.below(30) as i64,
        callers,
        paths: API_PATHS.to_vec(),
    }
}

/// A routine caller of one function. HTTP callers come from a few client networks; queue, bucket and
/// schedule triggers carry the principal that sent the event.
pub fn caller(trigger: Trigger, function_idx: usize, caller_idx: usize, rng: &mut Rng) -> Caller {
    if trigger.is_http() {
        let network = [(198, 51), (203, 0), (192, 0), (100, 64)][caller_idx % 4];
        return Caller {
            source_ip: Some(format!("{}.{}.{}.{}", network.0, network.1, rng.below(256), 1 + rng.below(254))),
            user_agent: Some(USER_AGENTS[rng.below(USER_AGENTS.len())].to_string()),
            principal: None,
        };
    }
    let principal = match trigger {
        Trigger::Sqs => format!("arn:aws:iam::{ACCOUNT}:role/producer-{function_idx}-{caller_idx}"),
        Trigger::S3 => format!("arn:aws:iam::{ACCOUNT}:user/uploader-{function_idx}-{caller_idx}"),
        // A scheduled EventBridge event names its source, not a principal.
        _ => "aws.events".to_string(),
    };
    Caller { source_ip: None, user_agent: None, principal: Some(principal) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_have_unique_names_and_sane_profiles() {
        let functions = fleet(400, &mut Rng::new(5));
        let names: std::collections::BTreeSet<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 400);
        for function in &functions {
            assert!(function.duration_median_ms < function.timeout_ms / 4.0, "{function:?}");
            assert!(!function.callers.is_empty());
            assert_eq!(function.trigger.is_http(), function.callers[0].source_ip.is_some());
        }
        // A small fleet already has every kind of trigger.
        let small: std::collections::BTreeSet<&str> =
            fleet(8, &mut Rng::new(5)).iter().map(|f| f.trigger.name()).collect();
        assert_eq!(small.len(), 5, "{small:?}");
    }

    #[test]
    fn the_daily_cycle_peaks_at_the_peak_hour() {
        let mut function = fleet(1, &mut Rng::new(1)).remove(0);
        function.peak_hour = 14.0;
        function.daily_amplitude = 0.5;
        let monday = 4 * 86_400_000_000i64; // 1970-01-05
        let at = |hour: i64| function.cycle_factor(monday + hour * 3_600_000_000);
        assert!((at(14) - 1.5).abs() < 1e-9);
        assert!((at(2) - 0.5).abs() < 1e-9);
        let saturday = monday - 2 * 86_400_000_000;
        assert!(function.cycle_factor(saturday + 14 * 3_600_000_000) < at(14));
    }
}
