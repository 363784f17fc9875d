//! Scenario tests of the streaming anomaly detectors on generated serverless traffic with a daily cycle:
//! each kind of anomaly is found within five minutes of its start by the detector meant for it, and a day
//! of normal traffic raises at most one alert per function.

use std::collections::BTreeMap;

use detect::{Alert, AnomalyStream, AnomalyStreamConfig};
use store::time::MICROS_PER_MINUTE;
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

/// 2026-11-16T00:00:00Z, a Monday.
const START_US: i64 = 1_795_219_200_000_000;

fn run(generator: &mut Generator, stream: &mut AnomalyStream, from_minute: i64, n_minutes: i64) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let mut invocations = Vec::new();
    for minute_idx in from_minute..from_minute + n_minutes {
        invocations.clear();
        generator.minute(START_US + minute_idx * MICROS_PER_MINUTE, &mut invocations);
        if let Some(batch) = invocations_batch(generator.functions(), &invocations) {
            stream.push(&batch, &mut alerts);
        }
    }
    alerts
}

#[test]
fn each_kind_of_anomaly_is_found_within_five_minutes_by_its_detector() {
    let scenarios: [(&str, Anomaly, &[&str]); 8] = [
        ("spike", Anomaly::Spike { factor: 6.0 }, &["anomaly.invocations"]),
        ("drop to zero", Anomaly::Drop, &["anomaly.invocations"]),
        ("gradual ramp", Anomaly::Ramp { factor_per_hour: 24.0 }, &["anomaly.invocations"]),
        (
            "duration creep",
            Anomaly::DurationCreep { minutes: 10.0 },
            &["anomaly.duration_p95_ms", "anomaly.multivariate"],
        ),
        ("error burst", Anomaly::ErrorBurst { error_rate: 0.3 }, &["anomaly.errors"]),
        ("cold-start storm", Anomaly::ColdStartStorm, &["anomaly.cold_starts"]),
        ("cost surge", Anomaly::CostSurge { factor: 4.0 }, &["anomaly.gb_seconds_typical", "anomaly.duration_p95_ms"]),
        ("new-caller burst", Anomaly::NewCallers { n_callers: 6, share: 0.3 }, &["anomaly.new_callers"]),
    ];
    let mut rng = Rng::new(21);
    // The fleet interleaves triggers: API Gateway, function URL, SQS, S3 and EventBridge functions (the
    // drop hits an SQS worker, the new callers an S3-triggered function with three known uploaders).
    let mut functions = fleet(16, &mut rng);
    // Steady enough traffic that five minutes say something: at least 20 invocations a minute.
    for function in &mut functions {
        function.rate_per_minute = function.rate_per_minute.max(20.0);
    }
    let mut generator = Generator::new(functions, 21);
    let onset_minute = 10 * 60;
    let onset_us = START_US + onset_minute * MICROS_PER_MINUTE;
    for (function_idx, (_, anomaly, _)) in scenarios.iter().enumerate() {
        generator.inject(Injection {
            function_idx,
            anomaly: anomaly.clone(),
            start_us: onset_us,
            end_us: onset_us + 30 * MICROS_PER_MINUTE,
        });
    }
    let names: Vec<String> = generator.functions().iter().map(|f| f.name.clone()).collect();
    let mut stream = AnomalyStream::new(AnomalyStreamConfig::default());
    let before = run(&mut generator, &mut stream, 0, onset_minute);
    let after = run(&mut generator, &mut stream, onset_minute, 8);

    let mut failures = Vec::new();
    for (function_idx, (name, _, detectors)) in scenarios.iter().enumerate() {
        let function = &names[function_idx];
        // An alert names its strongest detector; the other signals that fired in the same minute are in
        // its observed values.
        let found = after.iter().filter(|a| a.function.as_deref() == Some(function)).find(|a| {
            let fired = |detector: &&str| {
                a.detector == *detector
                    || detector.strip_prefix("anomaly.").is_some_and(|signal| a.observed.get(signal).is_some())
            };
            detectors.iter().any(fired)
                && a.window_start_us >= onset_us
                && a.window_start_us < onset_us + 5 * MICROS_PER_MINUTE
        });
        match found {
            Some(alert) => {
                assert!(!alert.evidence.is_empty(), "{name}: alert without evidence");
                assert!(alert.score >= 0.8 && alert.score <= 1.0);
                assert!(alert.observed.is_object() && alert.expected.is_object());
            }
            None => failures.push(format!(
                "{name} in {function}: no {detectors:?} alert in the first five minutes; alerts for it: {:?}",
                after
                    .iter()
                    .filter(|a| a.function.as_deref() == Some(function))
                    .map(|a| (a.detector.clone(), (a.window_start_us - onset_us) / MICROS_PER_MINUTE, a.score))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The functions left alone stay quiet around the onset.
    let bystanders: Vec<&Alert> =
        after.iter().filter(|a| names[scenarios.len()..].iter().any(|n| a.function.as_deref() == Some(n))).collect();
    assert!(bystanders.len() <= 1, "bystanders alerted: {bystanders:?}");
    let noisy_before = before.iter().filter(|a| a.window_start_us >= START_US + 2 * 60 * MICROS_PER_MINUTE).count();
    assert!(noisy_before <= names.len(), "{noisy_before} alerts in the eight normal hours before the onset");
}

#[test]
fn a_day_of_normal_traffic_raises_at_most_one_alert_per_function() {
    let mut rng = Rng::new(5);
    let mut generator = Generator::new(fleet(50, &mut rng), 5);
    let mut stream = AnomalyStream::new(AnomalyStreamConfig::default());
    let alerts = run(&mut generator, &mut stream, 0, 24 * 60);
    let mut per_function: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for alert in &alerts {
        per_function
            .entry(alert.function.clone().unwrap_or_default())
            .or_default()
            .push((alert.detector.clone(), (alert.window_start_us - START_US) / MICROS_PER_MINUTE));
    }
    let over: Vec<_> = per_function.iter().filter(|(_, list)| list.len() > 1).collect();
    assert!(over.is_empty(), "{} alerts in all; functions with more than one: {over:?}", alerts.len());
    // The bound above is the requirement; the fleet measured 0 alerts in its day (2026-11-23).
    assert!(alerts.len() <= 5, "{} alerts in a normal day of 50 functions: {per_function:?}", alerts.len());
    let stats = stream.stats();
    assert_eq!(stats.tracked_functions, 50);
    assert!(stats.minutes_scored >= 50 * (24 * 60 - 2), "{stats:?}");
}
