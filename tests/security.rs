//! Security detections over real attack detonations (Stratus Red Team CloudTrail) and a benign set (the
//! CloudTrail fixtures of aws-lambda-events, a generated team's routine deployments and administration,
//! and a day of a generated fleet's invocations), through the same parsing as `coldtrail ingest`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use detect::incidents::{Correlator, IncidentConfig};
use detect::security::{SecurityConfig, SecurityDetections, SigmaRules};
use detect::Alert;
use ingest::pipeline::{Format, Pipeline, PipelineConfig, Unit};
use store::Table;

/// Real samples written by others, with their licenses (`tests/data/README.md`).
fn test_data() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Parses one input as `coldtrail ingest` does.
fn parse(bytes: &[u8], name: &str) -> Vec<(Table, RecordBatch)> {
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    pipeline.ingest(Format::Auto, bytes, &Unit { source: name, position: "0", key: Some(name), log_group: None });
    pipeline.finish();
    pipeline.take_batches()
}

fn detect(security: &mut SecurityDetections, batches: &[(Table, RecordBatch)]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for table in SecurityDetections::TABLES {
        for (t, batch) in batches {
            if *t == table {
                security.push(table, batch, &mut alerts);
            }
        }
    }
    alerts
}

/// Detections with no learning period: a detonation is a snapshot of an account with no history to learn.
fn fresh() -> SecurityDetections {
    SecurityDetections::new(SecurityConfig { learning_us: 0, ..SecurityConfig::default() }, SigmaRules::shipped())
}

/// The detection meant for each Lambda-related and CloudTrail-tampering technique, and its ATT&CK id.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("aws.persistence.lambda-backdoor-function", "lambda.public_permission", "T1098"),
    ("aws.persistence.lambda-layer-extension", "lambda.layer_added", "T1648"),
    ("aws.persistence.lambda-overwrite-code", "lambda.code_by_new_principal", "T1648"),
    ("aws.defense-evasion.cloudtrail-delete", "trail.deleted", "T1562.008"),
    ("aws.defense-evasion.cloudtrail-event-selectors", "trail.selectors_reduced", "T1562.008"),
    ("aws.defense-evasion.cloudtrail-stop", "trail.stopped", "T1562.008"),
    // Covered by the shipped Sigma rules.
    ("aws.defense-evasion.dns-delete-logs", "sigma.coldtrail-aws-dns-query-logging-deleted", "T1562.008"),
    ("aws.defense-evasion.vpc-remove-flow-logs", "sigma.coldtrail-aws-vpc-flow-logs-deleted", "T1562.008"),
    ("aws.defense-evasion.organizations-leave", "sigma.coldtrail-aws-organizations-leave", "T1666"),
    ("aws.persistence.iam-create-user-login-profile", "sigma.coldtrail-aws-iam-login-profile-changed", "T1098"),
    (
        "aws.privilege-escalation.iam-update-user-login-profile",
        "sigma.coldtrail-aws-iam-login-profile-changed",
        "T1098",
    ),
    ("aws.persistence.sts-federation-token", "sigma.coldtrail-aws-sts-federation-token", "T1550.001"),
    ("aws.persistence.rolesanywhere-create-trust-anchor", "sigma.coldtrail-aws-rolesanywhere-trust-anchor", "T1098"),
    ("aws.lateral-movement.ec2-instance-connect", "sigma.coldtrail-aws-ec2-instance-connect-key", "T1021.004"),
    (
        "aws.lateral-movement.ec2-serial-console-send-ssh-public-key",
        "sigma.coldtrail-aws-ec2-instance-connect-key",
        "T1021.004",
    ),
    ("aws.discovery.ec2-download-user-data", "sigma.coldtrail-aws-ec2-user-data-read", "T1552.005"),
    (
        "aws.credential-access.secretsmanager-batch-retrieve-secrets",
        "sigma.coldtrail-aws-secrets-batch-retrieved",
        "T1555.006",
    ),
];

/// The Stratus detonation files, in name order.
fn detonations() -> Vec<PathBuf> {
    let dir = test_data().join("stratus-detonation-logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_stratus_technique_raises_its_detection() {
    let mut table = Vec::new();
    let files = detonations();
    assert!(files.len() >= 35, "{}", files.len());
    for file in &files {
        let technique = file.file_stem().unwrap().to_string_lossy().to_string();
        let batches = parse(&std::fs::read(file).unwrap(), &technique);
        let alerts = detect(&mut fresh(), &batches);
        let raised: BTreeMap<String, Vec<String>> =
            alerts.iter().map(|a| (a.detector.clone(), a.attack_ids.clone())).collect();
        table.push(format!("{technique}: {:?}", raised.keys().collect::<Vec<_>>()));
        if let Some((_, detection, attack)) = EXPECTED.iter().find(|(t, _, _)| *t == technique) {
            let ids =
                raised.get(*detection).unwrap_or_else(|| panic!("{technique} raised {raised:?}, not {detection}"));
            assert!(ids.iter().any(|i| i == attack), "{technique}: {detection} carries {ids:?}, not {attack}");
            let alert = alerts.iter().find(|a| a.detector == *detection).unwrap();
            assert!(!alert.evidence.is_empty() && alert.query.contains("timeline("), "{alert:?}");
        }
    }
    println!("{}", table.join("\n"));
}

/// Issue 21: on the detonations, incidents group each detonation's alerts by its principals, addresses
/// and time: no incident mixes two detonations (each ran in its own account from its own address), and
/// a detonation that raised an alert worth opening one is one incident holding all of its alerts.
#[test]
fn every_stratus_detonation_is_one_incident_of_its_own() {
    let files = detonations();
    let mut detonation_of = BTreeMap::new();
    let mut alerts = Vec::new();
    for file in &files {
        let technique = file.file_stem().unwrap().to_string_lossy().to_string();
        for alert in detect(&mut fresh(), &parse(&std::fs::read(file).unwrap(), &technique)) {
            detonation_of.insert(alert.alert_id.clone(), technique.clone());
            alerts.push(alert);
        }
    }
    alerts.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
    // The latest row of each incident (the correlator forgets incidents past its horizon; the rows stay).
    let mut correlator = Correlator::new(IncidentConfig::default());
    let mut latest = BTreeMap::new();
    for alert in &alerts {
        for row in correlator.add(alert) {
            latest.insert(row.incident_id.clone(), row);
        }
    }
    let mut incidents_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for incident in latest.values().filter(|row| row.status.as_deref() == Some("open")) {
        let ids: Vec<String> = serde_json::from_str(incident.alert_ids.as_deref().unwrap()).unwrap();
        let detonations: std::collections::BTreeSet<&str> = ids.iter().map(|id| detonation_of[id].as_str()).collect();
        assert_eq!(detonations.len(), 1, "{} mixes {detonations:?}", incident.incident_id);
        let detonation = detonations.into_iter().next().unwrap();
        incidents_of.entry(detonation).or_default().push(incident.incident_id.clone());
        let all: Vec<(&str, &Vec<store::alerts::Entity>)> = alerts
            .iter()
            .filter(|a| detonation_of[&a.alert_id] == detonation)
            .map(|a| (a.detector.as_str(), &a.entities))
            .collect();
        assert_eq!(ids.len(), all.len(), "{detonation}: {:?} of {all:?}", incident.summary);
    }
    for (detonation, incidents) in &incidents_of {
        assert_eq!(incidents.len(), 1, "{detonation}: {incidents:?}");
    }
    // The Lambda and CloudTrail techniques (high and critical) each open theirs.
    for (technique, _, _) in EXPECTED.iter().take(6) {
        assert!(incidents_of.contains_key(technique), "{technique}: {incidents_of:?}");
    }
    println!("{} detonations, {} incidents", files.len(), incidents_of.len());
}

#[test]
fn the_benign_set_raises_nothing() {
    let mut security = fresh();
    let mut alerts = Vec::new();
    // The CloudTrail fixtures of aws-lambda-events (CloudTrail through EventBridge).
    for name in
        ["example-cloudwatch-cloudtrail-assumed-role.json", "example-cloudwatch-cloudtrail-unknown-user-auth.json"]
    {
        let bytes = std::fs::read(test_data().join("aws-lambda-events").join(name)).unwrap();
        alerts.extend(detect(&mut security, &parse(&bytes, name)));
    }
    // Two days of a generated fleet's routine CloudTrail and a day of its invocations, interleaved by hour.
    let start = 1_722_470_400_000_000i64; // 2024-08-01
    let functions = workload::fleet(12, &mut workload::Rng::new(3));
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    let records = workload::cloudtrail::routine(&workload::cloudtrail::Team::new(&names), start, 48, 11);
    let mut generator = workload::Generator::new(functions.clone(), 5);
    let mut invocations = Vec::new();
    let mut n_records = 0;
    for hour in 0..48i64 {
        let from = start + hour * 3_600_000_000;
        let hour_records: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| {
                let t =
                    chrono::DateTime::parse_from_rfc3339(r["eventTime"].as_str().unwrap()).unwrap().timestamp_micros();
                t >= from && t < from + 3_600_000_000
            })
            .collect();
        n_records += hour_records.len();
        let body = serde_json::json!({ "Records": hour_records }).to_string();
        alerts.extend(detect(&mut security, &parse(body.as_bytes(), "routine.json")));
        if hour < 24 {
            invocations.clear();
            for minute in 0..60 {
                generator.minute(from + minute * 60_000_000, &mut invocations);
            }
            let batch = workload::invocations_batch(&functions, &invocations).unwrap();
            security.push(Table::Invocations, &batch, &mut alerts);
        }
    }
    assert_eq!(n_records, records.len());
    let stats = security.stats();
    assert!(stats.cloudtrail_events > 1_000 && stats.invocations > 10_000, "{stats:?}");
    assert!(
        alerts.is_empty(),
        "{} alerts on benign activity, first: {:#?}",
        alerts.len(),
        alerts.iter().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn stolen_role_credentials_and_a_backdoor_story_are_found_and_routine_is_not() {
    use serde_json::json;
    use workload::cloudtrail::{lambda_agent, record, role_session, Team};
    let team = Team::new(&["orders-api".to_string()]);
    let start = 1_722_470_400_000_000i64;
    let mut records = workload::cloudtrail::routine(&team, start, 6, 1);
    let mut rng = workload::Rng::new(9);
    let role = "arn:aws:iam::123456789012:role/orders-api-exec";
    let identity = role_session(role, "orders-api", "ASIASTOLEN0000000001");
    let late = start + 7 * 3_600_000_000;
    // The function's own calls, then the same session from a laptop.
    records.push(record(
        &mut rng,
        late,
        "dynamodb.amazonaws.com",
        "Scan",
        identity.clone(),
        "3.81.1.1",
        lambda_agent(),
        json!({"tableName": "orders"}),
        json!(null),
    ));
    records.extend(
        workload::stories::stolen_session_calls(
            &mut rng,
            &identity,
            late + 1,
            "203.0.113.66",
            "aws-cli/2.13.0 Python/3.11.4 Darwin/23.0.0",
        )
        .into_iter()
        .map(|(_, record)| record),
    );
    // A stranger replaces the code and opens the function to everyone, with a URL without auth and a hijacking variable.
    let stranger = json!({"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/intern", "accountId": "123456789012", "accessKeyId": "AKIAINTERN"});
    records.push(record(
        &mut rng,
        late + 3,
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        stranger.clone(),
        "203.0.113.66",
        "aws-cli/2.13.0",
        json!({"functionName": "orders-api"}),
        json!({"codeSha256": "evil"}),
    ));
    records.push(record(&mut rng, late + 4, "lambda.amazonaws.com", "AddPermission20150331v2", stranger.clone(), "203.0.113.66", "aws-cli/2.13.0", json!({"functionName": "orders-api", "principal": "999988887777", "action": "lambda:InvokeFunction", "statementId": "x"}), json!(null)));
    records.push(record(
        &mut rng,
        late + 5,
        "lambda.amazonaws.com",
        "CreateFunctionUrlConfig20211031",
        stranger.clone(),
        "203.0.113.66",
        "aws-cli/2.13.0",
        json!({"functionName": "orders-api", "authType": "NONE"}),
        json!(null),
    ));
    records.push(record(&mut rng, late + 6, "lambda.amazonaws.com", "UpdateFunctionConfiguration20150331v2", stranger.clone(), "203.0.113.66", "aws-cli/2.13.0", json!({"functionName": "orders-api", "role": "arn:aws:iam::123456789012:role/AdminRole", "environment": {"variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrap"}}, "layers": ["arn:aws:lambda:us-east-1:999988887777:layer:x:1"]}), json!(null)));
    records.push(record(
        &mut rng,
        late + 7,
        "lambda.amazonaws.com",
        "PutFunctionConcurrency20171031",
        stranger,
        "203.0.113.66",
        "aws-cli/2.13.0",
        json!({"functionName": "orders-api", "reservedConcurrentExecutions": 0}),
        json!(null),
    ));
    let body = json!({ "Records": records }).to_string();
    // The routine's six hours are the learning period.
    let config = SecurityConfig { learning_us: 6 * 3_600_000_000, ..SecurityConfig::default() };
    let alerts =
        detect(&mut SecurityDetections::new(config, SigmaRules::shipped()), &parse(body.as_bytes(), "story.json"));
    let detectors: Vec<&str> = alerts.iter().map(|a| a.detector.as_str()).collect();
    for expected in [
        "credentials.outside_lambda",
        "lambda.code_by_new_principal",
        "lambda.public_permission",
        "lambda.url_without_auth",
        "lambda.role_swapped",
        "lambda.runtime_hijack",
        "lambda.layer_added",
        "lambda.concurrency_zero",
    ] {
        assert!(detectors.contains(&expected), "{expected} not in {detectors:?}");
    }
    // Once per session and address, and never for the calls from inside Lambda.
    let outside: Vec<&Alert> = alerts.iter().filter(|a| a.detector == "credentials.outside_lambda").collect();
    assert_eq!(outside.len(), 1, "{outside:#?}");
    assert!(outside[0].title.contains("203.0.113.66"));
    let layer = alerts.iter().find(|a| a.detector == "lambda.layer_added").unwrap();
    assert_eq!(layer.severity, detect::Severity::Critical, "a layer from another account");
}

fn coldtrail(data: &Path, args: &[&str]) -> (String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "coldtrail {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[test]
fn the_retro_hunt_raises_what_the_stream_raised() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stratus = test_data().join("stratus-detonation-logs");
    let samples = test_data().join("samples");
    let mut inputs: Vec<String> = vec![samples.display().to_string()];
    for technique in [
        "aws.persistence.lambda-backdoor-function",
        "aws.defense-evasion.cloudtrail-stop",
        "aws.defense-evasion.dns-delete-logs",
    ] {
        inputs.push(stratus.join(format!("{technique}.json")).display().to_string());
    }
    let mut args = vec!["ingest"];
    args.extend(inputs.iter().map(String::as_str));
    coldtrail(&data, &args);
    let (csv, _) = coldtrail(
        &data,
        &[
            "sql",
            "SELECT alert_id, detector FROM alerts WHERE detector NOT LIKE 'anomaly.%' ORDER BY alert_id",
            "--format",
            "csv",
        ],
    );
    let streamed: Vec<String> = csv.lines().skip(1).map(|l| l.to_string()).collect();
    let detectors: Vec<&str> = streamed.iter().filter_map(|l| l.split(',').nth(1)).collect();
    for expected in
        ["lambda.public_permission", "trail.stopped", "sigma.coldtrail-aws-dns-query-logging-deleted", "injection.sql"]
    {
        assert!(detectors.contains(&expected), "the stream did not raise {expected}: {streamed:?}");
    }
    let (json, summary) = coldtrail(&data, &["hunt", "--format", "json"]);
    let mut hunted: Vec<String> = json
        .lines()
        .map(|l| {
            let alert: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{},{}", alert["alert_id"].as_str().unwrap(), alert["detector"].as_str().unwrap())
        })
        .collect();
    hunted.sort();
    assert_eq!(hunted, streamed, "{summary}");
    // Stored again with --store: nothing new, the ids are the same.
    let (_, summary) = coldtrail(&data, &["hunt", "--store", "--since", "2000-01-01T00:00:00Z"]);
    assert!(summary.contains(" 0 new ones stored"), "{summary}");
}

/// Issue 16: with the detectors on, `coldtrail ingest` exited 2 on 4 of the 35 detonations
/// (`detector checkpoint: key must be a string`) while an authorization-failure burst was open.
#[test]
fn every_stratus_detonation_ingests_with_the_detectors_on() {
    let dir = tempfile::tempdir().unwrap();
    let stratus = test_data().join("stratus-detonation-logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&stratus)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 35);
    for (idx, file) in files.iter().enumerate() {
        // `coldtrail` asserts the exit status, with stderr in the message.
        let (_, stderr) = coldtrail(&dir.path().join(format!("d{idx}")), &["ingest", file.to_str().unwrap()]);
        assert!(!stderr.contains("checkpoint"), "{}: {stderr}", file.display());
    }
    let (_, stderr) = coldtrail(&dir.path().join("all"), &["ingest", stratus.to_str().unwrap()]);
    assert!(!stderr.contains("checkpoint"), "{stderr}");
}

/// Issue 16: a fresh installation stays quiet on first-seen changes until it has watched an account's
/// CloudTrail for the learning period (7 days), and fires at once on changes that need no history;
/// `hunt --learn-from` learns from stored history before it hunts; `coldtrail info` shows the progress.
#[test]
fn first_seen_detections_wait_for_a_week_of_cloudtrail_and_hunt_can_learn_from_history() {
    use serde_json::json;
    use workload::cloudtrail::{record, Team};
    const HOUR: i64 = 3_600_000_000;
    let start = 1_722_470_400_000_000i64;
    let mut records = workload::cloudtrail::routine(&Team::new(&["orders-api".to_string()]), start, 8 * 24 + 2, 3);
    let mut rng = workload::Rng::new(4);
    let intruder = |name: &str| json!({"type": "IAMUser", "arn": format!("arn:aws:iam::123456789012:user/{name}"), "accountId": "123456789012", "accessKeyId": format!("AKIA{}", name.to_uppercase())});
    let code = |rng: &mut workload::Rng, ts: i64, who: &str| {
        record(
            rng,
            ts,
            "lambda.amazonaws.com",
            "UpdateFunctionCode20150331v2",
            intruder(who),
            "203.0.113.66",
            "aws-cli/2.13.0",
            json!({"functionName": "orders-api"}),
            json!({"codeSha256": "evil"}),
        )
    };
    // Day two, inside the learning period: a new deployer (learned, not reported) and a public permission.
    records.push(code(&mut rng, start + 26 * HOUR, "early"));
    records.push(record(
        &mut rng,
        start + 26 * HOUR + 1,
        "lambda.amazonaws.com",
        "AddPermission20150331v2",
        intruder("early"),
        "203.0.113.66",
        "aws-cli/2.13.0",
        json!({"functionName": "orders-api", "principal": "*", "action": "lambda:InvokeFunction", "statementId": "x"}),
        json!(null),
    ));
    // Day nine, after it: a new deployer is reported.
    let late = start + 8 * 24 * HOUR + HOUR;
    records.push(code(&mut rng, late, "late"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trail.json");
    std::fs::write(&file, json!({ "Records": records }).to_string()).unwrap();
    let data = dir.path().join("data");
    coldtrail(&data, &["ingest", file.to_str().unwrap()]);
    let query = "SELECT alert_id, detector, entity FROM alerts WHERE detector LIKE 'lambda.%' ORDER BY ts";
    let (csv, _) = coldtrail(&data, &["sql", query, "--format", "csv"]);
    let streamed: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(streamed.len(), 2, "{csv}");
    assert!(streamed[0].contains(",lambda.public_permission,") && streamed[0].contains("early"), "{csv}");
    assert!(streamed[1].contains(",lambda.code_by_new_principal,") && streamed[1].contains("late"), "{csv}");
    let (info, _) = coldtrail(&data, &["info"]);
    assert!(info.contains("learning: account 123456789012 learned (8."), "{info}");
    let (info, _) = coldtrail(&data, &["info", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["detect"]["learning"][0]["learned"], true, "{info}");

    // A hunt of the last day alone has not watched the account for a week: the deployer is not new to it.
    let since = store::time::format_seconds(late - HOUR);
    let hunted = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["hunt", "--format", "json", "--since", &since];
        all.extend(args);
        let (json, _) = coldtrail(&data, &all);
        json.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|a| a["detector"].as_str().unwrap().starts_with("lambda."))
            .map(|a| format!("{},{}", a["alert_id"].as_str().unwrap(), a["detector"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(hunted(&[]), Vec::<String>::new());
    // Learning from the stored week first, it raises the stream's alert, with its id.
    let from = store::time::format_seconds(start);
    let late_alert: Vec<String> = streamed[1].split(',').take(2).map(str::to_string).collect();
    assert_eq!(hunted(&["--learn-from", &from]), [late_alert.join(",")]);
    // With no learning period, every first deployment in the hunted day is new.
    assert!(!hunted(&["--learning", "0s"]).is_empty());
}
