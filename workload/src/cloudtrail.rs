//! Routine CloudTrail activity of a team running Lambda functions: a CI role that creates and deploys
//! them, configuration changes, versions and aliases, permissions for API Gateway and S3, event source
//! mappings, administrators reading and tidying trail settings, and the functions' own role sessions
//! calling AWS from inside Lambda. The benign baseline of the security detections, and the deployments of
//! the demo. Records are CloudTrail JSON, as a trail delivers them.

use serde_json::{json, Value};

use crate::fleet::{ACCOUNT, REGION};
use crate::rng::Rng;

const HOUR_US: i64 = 3_600_000_000;

fn time(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Who acts in the routine activity.
pub struct Team {
    pub deployer_role: String,
    pub admin_user: String,
    pub functions: Vec<String>,
}

impl Team {
    pub fn new(functions: &[String]) -> Team {
        Team {
            deployer_role: format!("arn:aws:iam::{ACCOUNT}:role/ci-deployer"),
            admin_user: format!("arn:aws:iam::{ACCOUNT}:user/ops-alice"),
            functions: functions.to_vec(),
        }
    }
}

/// One CloudTrail record.
#[allow(clippy::too_many_arguments)]
pub fn record(
    rng: &mut Rng,
    ts_us: i64,
    source: &str,
    name: &str,
    identity: Value,
    source_ip: &str,
    user_agent: &str,
    request: Value,
    response: Value,
) -> Value {
    json!({
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": time(ts_us),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request,
        "responseElements": response,
        "requestID": rng.uuid(),
        "eventID": rng.uuid(),
        "readOnly": name.starts_with("Get") || name.starts_with("List") || name.starts_with("Describe") || name.starts_with("Lookup"),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management"
    })
}

/// A role session's identity (`arn:aws:sts::…:assumed-role/<role>/<session>`).
pub fn role_session(role: &str, session: &str, access_key: &str) -> Value {
    let role_name = role.rsplit('/').next().unwrap_or(role);
    json!({
        "type": "AssumedRole",
        "principalId": format!("AROAEXAMPLE{}:{session}", role_name.len()),
        "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{session}"),
        "accountId": ACCOUNT,
        "accessKeyId": access_key,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role, "accountId": ACCOUNT, "userName": role_name}}
    })
}

fn user(arn: &str) -> Value {
    json!({"type": "IAMUser", "principalId": "AIDAEXAMPLEOPS", "arn": arn, "accountId": ACCOUNT, "accessKeyId": "AKIAEXAMPLEOPS0001", "userName": arn.rsplit('/').next()})
}

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

pub const CI_AGENT: &str =
    "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.5 md/arch#x86_64 lang/python#3.11.8 exec-env/GitHubActions";
pub const CONSOLE_AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15";
pub const CI_ADDRESS: &str = "52.23.17.90";
pub const OFFICE_ADDRESS: &str = "198.51.100.24";

/// A CloudTrail record's `eventTime` in microseconds (0 when it has none).
pub fn event_time(record: &Value) -> i64 {
    record["eventTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_micros())
}

/// A function's SDK user agent inside Lambda.
pub fn lambda_agent() -> &'static str {
    "Boto3/1.34.34 md/Botocore#1.34.34 ua/2.0 os/linux#5.10.209 md/arch#x86_64 lang/python#3.12.1 md/pyimpl#CPython exec-env/AWS_Lambda_python3.12 cfg/retry-mode#legacy Botocore/1.34.34"
}

/// Routine activity over `hours` from `start_us`, in time order: on the first day the pipeline creates
/// every function; every third hour a deployment; during office hours an administrator; every hour the
/// functions' own role sessions.
pub fn routine(team: &Team, start_us: i64, hours: i64, seed: u64) -> Vec<Value> {
    let mut routine = Routine {
        team,
        rng: Rng::new(seed ^ 0xc10d_7a11),
        out: Vec::new(),
        layer: format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:shared-utils"),
    };
    routine.creation(start_us);
    let mut run = 2;
    for hour in 1..hours {
        let base = start_us + hour * HOUR_US;
        if hour % 3 == 0 {
            routine.deployment(base, run);
            run += 1;
        }
        routine.administration(base, hour);
        routine.role_sessions(base, hour);
    }
    let mut out = routine.out;
    out.sort_by_key(|(ts, _)| *ts);
    out.into_iter().map(|(_, record)| record).collect()
}

/// The records of `routine` as they are written, with the one random source they draw from in order.
struct Routine<'a> {
    team: &'a Team,
    rng: Rng,
    out: Vec<(i64, Value)>,
    /// The shared layer's ARN without its version.
    layer: String,
}

impl Routine<'_> {
    /// Adds one record at `ts_us` by `identity` from `source_ip` with `user_agent`.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        ts_us: i64,
        identity: &Value,
        source_ip: &str,
        user_agent: &str,
        source: &str,
        name: &str,
        request: Value,
        response: Value,
    ) {
        let record =
            record(&mut self.rng, ts_us, source, name, identity.clone(), source_ip, user_agent, request, response);
        self.out.push((ts_us, record));
    }

    /// The deployment pipeline's session of CI run `run`.
    fn ci(&self, run: i64) -> Value {
        role_session(&self.team.deployer_role, &format!("GitHubActions-{run}"), &format!("ASIAEXAMPLECI{run:05}"))
    }

    /// Day one: the pipeline creates every function with its own role and the shared layer.
    fn creation(&mut self, start_us: i64) {
        let team = self.team;
        for (i, function) in team.functions.iter().enumerate() {
            let ts = start_us + i as i64 * 20_000_000;
            let role = format!("arn:aws:iam::{ACCOUNT}:role/{function}-exec");
            let identity = self.ci(1);
            self.add(ts, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "CreateFunction20150331", json!({"functionName": function, "runtime": "python3.12", "role": role, "handler": "app.handler", "memorySize": 256, "timeout": 30, "layers": [format!("{}:3", self.layer)], "environment": {"variables": {"LOG_LEVEL": "INFO", "TABLE_NAME": format!("{function}-table")}}}), json!({"functionName": function, "functionArn": function_arn(function), "role": role, "codeSha256": "b2V4YW1wbGUtY29kZS1oYXNo", "layers": [{"arn": format!("{}:3", self.layer), "codeSize": 1024}]}));
            let ts = ts + 5_000_000;
            self.add(ts, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "AddPermission20150331v2", json!({"functionName": function, "statementId": "apigateway-invoke", "action": "lambda:InvokeFunction", "principal": "apigateway.amazonaws.com", "sourceArn": format!("arn:aws:execute-api:{REGION}:{ACCOUNT}:abc123/*")}), json!({"statement": "{\"Sid\":\"apigateway-invoke\",\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"apigateway.amazonaws.com\"}}"}));
            if i % 3 == 0 {
                let ts = ts + 5_000_000;
                self.add(ts, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "CreateFunctionUrlConfig20211031", json!({"functionName": function, "authType": "AWS_IAM"}), json!({"functionUrl": format!("https://{i}abc.lambda-url.{REGION}.on.aws/"), "authType": "AWS_IAM"}));
            }
            if i % 4 == 1 {
                let ts = ts + 8_000_000;
                let mapping = self.rng.uuid();
                self.add(ts, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "CreateEventSourceMapping20150331", json!({"functionName": function, "eventSourceArn": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{function}-queue"), "batchSize": 10}), json!({"uUID": mapping, "state": "Creating"}));
                self.add(
                    ts + 1_000_000,
                    &identity,
                    CI_ADDRESS,
                    CI_AGENT,
                    "lambda.amazonaws.com",
                    "PutFunctionConcurrency20171031",
                    json!({"functionName": function, "reservedConcurrentExecutions": 50}),
                    json!({"reservedConcurrentExecutions": 50}),
                );
            }
        }
    }

    /// New code for about half the functions, sometimes a configuration change, a version and an alias.
    fn deployment(&mut self, base: i64, run: i64) {
        let team = self.team;
        let identity = self.ci(run);
        let run = run + 1;
        for (i, function) in team.functions.iter().enumerate() {
            if self.rng.chance(0.5) {
                continue;
            }
            let ts = base + 600_000_000 + i as i64 * 7_000_000;
            self.add(ts, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "UpdateFunctionCode20150331v2", json!({"functionName": function, "publish": true, "dryRun": false}), json!({"functionName": function, "codeSha256": format!("c2hhLXtydW59LXtpfQ{run}{i}"), "version": format!("{run}")}));
            if self.rng.chance(0.3) {
                let version = 3 + run / 6;
                let memory = [256, 512, 1024][self.rng.below(3)];
                let level = ["INFO", "DEBUG"][self.rng.below(2)];
                self.add(ts + 2_000_000, &identity, CI_ADDRESS, CI_AGENT, "lambda.amazonaws.com", "UpdateFunctionConfiguration20150331v2", json!({"functionName": function, "memorySize": memory, "timeout": 30, "layers": [format!("{}:{version}", self.layer)], "environment": {"variables": {"LOG_LEVEL": level, "TABLE_NAME": format!("{function}-table")}}}), json!({"functionName": function, "lastUpdateStatus": "InProgress"}));
            }
            self.add(
                ts + 4_000_000,
                &identity,
                CI_ADDRESS,
                CI_AGENT,
                "lambda.amazonaws.com",
                "UpdateAlias20150331",
                json!({"functionName": function, "name": "live", "functionVersion": format!("{run}")}),
                json!({"name": "live"}),
            );
        }
    }

    /// During office hours an administrator looks around and sometimes tidies the trail's selectors.
    fn administration(&mut self, base: i64, hour: i64) {
        let team = self.team;
        if (8..18).contains(&(hour % 24)) {
            let admin = user(&team.admin_user);
            for (k, name) in
                ["ListFunctions20150331", "GetFunction20150331v2", "DescribeTrails", "GetTrailStatus", "LookupEvents"]
                    .iter()
                    .enumerate()
            {
                let ts = base + 900_000_000 + k as i64 * 30_000_000;
                let source =
                    if name.contains("Function") { "lambda.amazonaws.com" } else { "cloudtrail.amazonaws.com" };
                let request = if name.starts_with("GetFunction") {
                    json!({"functionName": team.functions[self.rng.below(team.functions.len())]})
                } else {
                    json!({})
                };
                self.add(ts, &admin, OFFICE_ADDRESS, CONSOLE_AGENT, source, name, request, Value::Null);
            }
            if hour % 24 == 10 {
                let ts = base + 1_800_000_000;
                self.add(ts, &admin, OFFICE_ADDRESS, CONSOLE_AGENT, "cloudtrail.amazonaws.com", "PutEventSelectors", json!({"trailName": "org-trail", "eventSelectors": [{"readWriteType": "All", "includeManagementEvents": true, "dataResources": [{"type": "AWS::Lambda::Function", "values": ["arn:aws:lambda"]}], "excludeManagementEventSources": []}]}), json!({"trailARN": format!("arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/org-trail")}));
                self.add(
                    ts + 60_000_000,
                    &admin,
                    OFFICE_ADDRESS,
                    CONSOLE_AGENT,
                    "cloudtrail.amazonaws.com",
                    "StartLogging",
                    json!({"name": "org-trail"}),
                    Value::Null,
                );
            }
            // Now and then a permission the admin does not have.
            if self.rng.chance(0.2) {
                let ts = base + 2_400_000_000;
                let mut denied = record(
                    &mut self.rng,
                    ts,
                    "iam.amazonaws.com",
                    "ListRoles",
                    admin.clone(),
                    OFFICE_ADDRESS,
                    CONSOLE_AGENT,
                    json!({}),
                    Value::Null,
                );
                denied["errorCode"] = json!("AccessDenied");
                denied["errorMessage"] = json!("User is not authorized to perform: iam:ListRoles");
                self.out.push((ts, denied));
            }
        }
    }

    /// The functions' own role sessions, from inside Lambda.
    fn role_sessions(&mut self, base: i64, hour: i64) {
        let team = self.team;
        for (i, function) in team.functions.iter().enumerate() {
            let role = format!("arn:aws:iam::{ACCOUNT}:role/{function}-exec");
            let identity = role_session(&role, function, &format!("ASIAEXAMPLEFN{i:03}{hour:04}"));
            for k in 0..3 {
                let ts = base + (k * 1_000 + i as i64 * 37) * 1_000_000;
                let (source, name, request) = if k % 2 == 0 {
                    ("dynamodb.amazonaws.com", "DescribeTable", json!({"tableName": format!("{function}-table")}))
                } else {
                    ("kms.amazonaws.com", "Decrypt", json!({"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}))
                };
                let address = format!("3.{}.{}.{}", 80 + i % 8, self.rng.below(256), 1 + self.rng.below(254));
                self.add(ts, &identity, &address, lambda_agent(), source, name, request, Value::Null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_722_470_400_000_000 + 3_661_000_000), "2024-08-01T01:01:01Z");
    }

    #[test]
    fn routine_activity_is_ordered_and_deterministic() {
        let team = Team::new(&["orders-api".to_string(), "thumbnailer".to_string()]);
        let a = routine(&team, 1_722_470_400_000_000, 24, 7);
        let b = routine(&team, 1_722_470_400_000_000, 24, 7);
        assert_eq!(a, b);
        assert!(a.len() > 100);
        let times: Vec<&str> = a.iter().map(|r| r["eventTime"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(a.iter().any(|r| r["eventName"] == "UpdateFunctionCode20150331v2"));
    }
}
