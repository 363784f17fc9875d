//! The behavioural security detections on generated traffic: crypto-mining in a function (durations
//! pinned at the timeout, memory full), a denial-of-wallet flood, and new callers after the callers were
//! learned, each found within one resource window (five minutes) of its start, on the function it hit.

use detect::security::{SecurityConfig, SecurityDetections, SigmaRules};
use detect::Alert;
use store::time::MICROS_PER_MINUTE;
use store::Table;
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

/// 2026-11-16T00:00:00Z.
const START_US: i64 = 1_795_219_200_000_000;

#[test]
fn mining_wallet_floods_and_new_callers_are_found_on_their_function() {
    let mut rng = Rng::new(8);
    let mut functions = fleet(6, &mut rng);
    for function in &mut functions {
        function.rate_per_minute = function.rate_per_minute.max(20.0);
    }
    let mut generator = Generator::new(functions, 8);
    let onset_us = START_US + 8 * 60 * MICROS_PER_MINUTE;
    let scenarios = [
        ("resource.cryptomining", Anomaly::CryptoMining),
        ("resource.denial_of_wallet", Anomaly::Spike { factor: 20.0 }),
        ("callers.new", Anomaly::NewCallers { n_callers: 3, share: 0.3 }),
    ];
    for (function_idx, (_, anomaly)) in scenarios.iter().enumerate() {
        generator.inject(Injection {
            function_idx,
            anomaly: anomaly.clone(),
            start_us: onset_us,
            end_us: onset_us + 30 * MICROS_PER_MINUTE,
        });
    }
    let names: Vec<String> = generator.functions().iter().map(|f| f.name.clone()).collect();
    let mut security = SecurityDetections::new(SecurityConfig::default(), SigmaRules::default());
    let mut alerts: Vec<Alert> = Vec::new();
    let mut invocations = Vec::new();
    for minute in 0..(8 * 60 + 40) {
        invocations.clear();
        generator.minute(START_US + minute * MICROS_PER_MINUTE, &mut invocations);
        if let Some(batch) = invocations_batch(generator.functions(), &invocations) {
            security.push(Table::Invocations, &batch, &mut alerts);
        }
    }
    let before: Vec<&Alert> = alerts.iter().filter(|a| a.ts_us < onset_us).collect();
    assert!(before.is_empty(), "alerts before any anomaly: {before:#?}");
    for (function_idx, (detection, _)) in scenarios.iter().enumerate() {
        let found = alerts
            .iter()
            .filter(|a| a.detector == *detection && a.function.as_deref() == Some(names[function_idx].as_str()))
            .map(|a| a.window_end_us.max(a.ts_us))
            .min();
        let found = found.unwrap_or_else(|| panic!("{detection} not raised for {}: {alerts:#?}", names[function_idx]));
        assert!(
            found <= onset_us + 10 * MICROS_PER_MINUTE,
            "{detection} raised {} min after the onset",
            (found - onset_us) / MICROS_PER_MINUTE
        );
    }
    let elsewhere: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !scenarios.iter().enumerate().any(|(i, (_, _))| a.function.as_deref() == Some(names[i].as_str())))
        .collect();
    assert!(elsewhere.is_empty(), "alerts on functions with no anomaly: {elsewhere:#?}");
}
