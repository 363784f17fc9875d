//! Risky Lambda control-plane changes and trail tampering in CloudTrail, and a function's execution-role
//! credentials used outside Lambda.
//!
//! Some rules need history: who has deployed a function before, which role and layers it runs with, which
//! role sessions belong to functions. That history is learned from the same CloudTrail stream (and the
//! function names of `invocations`), is bounded, and is part of the checkpointed state.
//!
//! The rules that compare with history (a deployer, a layer or a role never seen before) stay quiet for
//! an account until its CloudTrail has been watched for the learning period (`learning_us`, 7 days by
//! default): on a fresh installation every first deployment is "new". The rules that need no history
//! (a public or cross-account permission, a function URL without auth, a privileged role, a layer of
//! another account, trail tampering, role credentials outside Lambda) fire from the first event.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rows::CloudTrailEvent;
use super::Finding;

/// Most functions (and principals per function) remembered.
const FUNCTIONS_MAX: usize = 20_000;
const DEPLOYERS_PER_FUNCTION_MAX: usize = 64;
const ACCOUNT_DEPLOYERS_MAX: usize = 4_096;
/// Most accounts whose watched span is remembered.
const ACCOUNTS_MAX: usize = 4_096;
/// The learning period of a fresh installation: a week of an account's CloudTrail.
pub const LEARNING_US_DEFAULT: i64 = 7 * 24 * 3_600 * 1_000_000;

/// Environment variables that make a runtime load code before the handler: setting one hijacks the function.
pub const HIJACK_VARIABLES: [&str; 12] = [
    "AWS_LAMBDA_EXEC_WRAPPER",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "LD_PRELOAD",
    "PERL5OPT",
    "RUBYOPT",
    "DOTNET_STARTUP_HOOKS",
];

/// AWS managed policies that make a role privileged.
const PRIVILEGED_POLICIES: [&str; 5] =
    ["/AdministratorAccess", "/PowerUserAccess", "/IAMFullAccess", "/AWSLambda_FullAccess", "/AmazonS3FullAccess"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FunctionConfig {
    role: Option<String>,
    /// Layer ARNs without their version.
    layers: BTreeSet<String>,
    deployers: BTreeSet<String>,
}

/// What the control-plane rules have learned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlPlane {
    functions: BTreeMap<String, FunctionConfig>,
    /// Identities that have deployed any function in the account.
    deployers: BTreeSet<String>,
    /// Roles known to be privileged (from the policies attached to them).
    privileged_roles: BTreeSet<String>,
    /// The event-time span of each account's CloudTrail seen so far (the account that received the
    /// event; "" when a record names none).
    #[serde(default)]
    watched: BTreeMap<String, Watched>,
}

/// The first and last event time seen of one account's CloudTrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub first_us: i64,
    pub last_us: i64,
}

impl Watched {
    pub fn span_us(&self) -> i64 {
        self.last_us.saturating_sub(self.first_us)
    }
}

/// The function name of an ARN or a name.
pub fn function_name(name_or_arn: &str) -> &str {
    match name_or_arn.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None => name_or_arn,
    }
}

/// The account of an ARN.
fn arn_account(arn: &str) -> Option<&str> {
    arn.starts_with("arn:").then(|| arn.split(':').nth(4)).flatten().filter(|a| !a.is_empty())
}

/// The layers an event sets: from its request, or where only the response names them (some CloudTrail
/// records of CreateFunction and UpdateFunctionConfiguration carry them there alone); `None` when it
/// sets none.
fn layers_set_by(event: &CloudTrailEvent) -> Option<&Value> {
    event.request.get("layers").or_else(|| event.response.get("layers")).filter(|layers| !layers.is_null())
}

/// A layer ARN without its version.
fn layer_name(arn: &str) -> String {
    match arn.rsplit_once(':') {
        Some((name, version)) if version.chars().all(|c| c.is_ascii_digit()) && name.contains(":layer:") => {
            name.to_string()
        }
        _ => arn.to_string(),
    }
}

fn layers_of(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .filter_map(|layer| layer.as_str().or_else(|| layer.get("arn").and_then(Value::as_str)))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn looks_privileged(role: &str) -> bool {
    let name = role.rsplit('/').next().unwrap_or(role).to_ascii_lowercase();
    ["admin", "poweruser", "organizationaccountaccess", "fullaccess"].iter().any(|p| name.contains(p))
}

/// The AWS SDKs running inside Lambda say so in their user agent (`exec-env/AWS_Lambda_python3.12`,
/// `exec-env#AWS_Lambda_nodejs20.x`).
pub fn is_lambda_runtime_agent(user_agent: &str) -> bool {
    user_agent.contains("AWS_Lambda_")
}

impl ControlPlane {
    fn function(&mut self, name: &str) -> &mut FunctionConfig {
        if !self.functions.contains_key(name) && self.functions.len() >= FUNCTIONS_MAX {
            // Bounded: forget the first function in name order (cheap, deterministic).
            let first = self.functions.keys().next().cloned().expect("not empty");
            self.functions.remove(&first);
        }
        self.functions.entry(name.to_string()).or_default()
    }

    /// Remembers a function seen running (from `invocations`), so that its role session is recognised.
    pub fn note_function(&mut self, name: &str) {
        if !self.functions.contains_key(name) {
            self.function(name);
        }
    }

    fn note_deployer(&mut self, function: &str, actor: &str) {
        let config = self.function(function);
        if config.deployers.len() < DEPLOYERS_PER_FUNCTION_MAX {
            config.deployers.insert(actor.to_string());
        }
        if self.deployers.len() < ACCOUNT_DEPLOYERS_MAX {
            self.deployers.insert(actor.to_string());
        }
    }

    fn is_privileged(&self, role: &str) -> bool {
        self.privileged_roles.contains(role) || looks_privileged(role)
    }

    /// The span of CloudTrail watched per account.
    pub fn watched(&self) -> &BTreeMap<String, Watched> {
        &self.watched
    }

    fn watch(&mut self, event: &CloudTrailEvent) -> Watched {
        let account = event.recipient_account.as_deref().or(event.account.as_deref()).unwrap_or_default();
        if !self.watched.contains_key(account) && self.watched.len() >= ACCOUNTS_MAX {
            // Bounded: forget the account watched longest ago (its rules go back to learning).
            if let Some(stale) = self.watched.iter().min_by_key(|(_, w)| w.last_us).map(|(a, _)| a.clone()) {
                self.watched.remove(&stale);
            }
        }
        let watched =
            self.watched.entry(account.to_string()).or_insert(Watched { first_us: event.ts_us, last_us: event.ts_us });
        watched.first_us = watched.first_us.min(event.ts_us);
        watched.last_us = watched.last_us.max(event.ts_us);
        *watched
    }

    /// Looks at one CloudTrail event. The rules that compare with history report only once the event's
    /// account has been watched for `learning_us`.
    pub fn observe(&mut self, event: &CloudTrailEvent, learning_us: i64, out: &mut Vec<Finding>) {
        let learned = self.watch(event).span_us() >= learning_us;
        self.outside_lambda(event, out);
        if !event.succeeded() {
            return;
        }
        match event.event_source.as_str() {
            "lambda.amazonaws.com" => self.lambda(event, learned, out),
            "cloudtrail.amazonaws.com" => trail(event, out),
            "iam.amazonaws.com" => self.iam(event),
            _ => {}
        }
    }

    /// A CloudTrail event that came after its minute was scored (a late row): only the rules that need
    /// no history and learn nothing run (a function opened to everyone or another account, a URL
    /// without auth, trail tampering), so a late record of an attack still raises them; what it would
    /// have taught (deployers, roles, layers) is not learned out of order.
    pub fn observe_late(event: &CloudTrailEvent, out: &mut Vec<Finding>) {
        if !event.succeeded() {
            return;
        }
        match event.event_source.as_str() {
            "lambda.amazonaws.com" => {
                if let Some((function, account)) = subject(event) {
                    stateless_lambda(event, &function, account.as_deref(), out);
                }
            }
            "cloudtrail.amazonaws.com" => trail(event, out),
            _ => {}
        }
    }

    fn iam(&mut self, event: &CloudTrailEvent) {
        let role = event.param("roleName");
        match event.operation() {
            "AttachRolePolicy" => {
                let privileged =
                    event.param("policyArn").is_some_and(|p| PRIVILEGED_POLICIES.iter().any(|s| p.ends_with(s)));
                if let (Some(role), true) = (role, privileged) {
                    let account = event.account.clone().unwrap_or_default();
                    self.privileged_roles.insert(format!("arn:aws:iam::{account}:role/{role}"));
                }
            }
            "PutRolePolicy" => {
                let document = event.param("policyDocument").unwrap_or_default();
                let star = document.contains("\"Action\":\"*\"") || document.contains("\"Action\": \"*\"");
                if let (Some(role), true) = (role, star) {
                    let account = event.account.clone().unwrap_or_default();
                    self.privileged_roles.insert(format!("arn:aws:iam::{account}:role/{role}"));
                }
            }
            _ => {}
        }
    }

    fn lambda(&mut self, event: &CloudTrailEvent, learned: bool, out: &mut Vec<Finding>) {
        let Some((function, account)) = subject(event) else { return };
        let request = &event.request;
        let actor = event.actor().unwrap_or_else(|| "unknown".into());
        let finding = |detection: &'static str, detail: String, observed: Value| {
            event_finding(event, Some(function.clone()), detection, detail, observed)
        };
        match event.operation() {
            "AddPermission" | "CreateFunctionUrlConfig" | "UpdateFunctionUrlConfig" => {
                stateless_lambda(event, &function, account.as_deref(), out)
            }
            "CreateFunction" => {
                let role = event.param("role").map(str::to_string);
                if let Some(role) = role.as_deref().filter(|r| self.is_privileged(r)) {
                    out.push(finding(
                        "lambda.privileged_role",
                        format!("{function} was created with the privileged role {role}"),
                        json!({"role": role}),
                    ));
                }
                let layers = layers_of(layers_set_by(event).unwrap_or(&Value::Null));
                let foreign: Vec<&String> =
                    layers.iter().filter(|l| arn_account(l).is_some_and(|a| Some(a) != account.as_deref())).collect();
                if !foreign.is_empty() {
                    out.push(finding(
                        "lambda.layer_added",
                        format!("{function} was created with a layer of another account"),
                        json!({"layers": foreign}),
                    ));
                }
                let config = self.function(&function);
                config.role = role;
                config.layers = layers.iter().map(|l| layer_name(l)).collect();
                self.note_deployer(&function, &actor);
            }
            "UpdateFunctionCode" => {
                let known_here = self.functions.get(&function).is_some_and(|c| c.deployers.contains(&actor));
                let never_deployed_here = self.functions.get(&function).is_none_or(|c| c.deployers.is_empty());
                let known_deployer = self.deployers.contains(&actor);
                let expected = known_here || (never_deployed_here && known_deployer);
                if !expected && learned {
                    let before: Vec<String> = self
                        .functions
                        .get(&function)
                        .map(|c| c.deployers.iter().cloned().collect())
                        .unwrap_or_default();
                    let mut found = finding(
                        "lambda.code_by_new_principal",
                        format!("{function}'s code was replaced by {actor}, who never deployed it"),
                        json!({"principal": event.principal_arn, "source_ip": event.source_ip, "user_agent": event.user_agent, "codeSha256": event.response.get("codeSha256"), "publish": request.get("publish")}),
                    );
                    found.expected = json!({"deployers": before});
                    out.push(found);
                }
                self.note_deployer(&function, &actor);
            }
            "UpdateFunctionConfiguration" => {
                self.configuration(event, &function, account.as_deref(), learned, &finding, out)
            }
            "PutFunctionConcurrency"
                if request.get("reservedConcurrentExecutions").and_then(Value::as_i64) == Some(0) =>
            {
                out.push(finding(
                    "lambda.concurrency_zero",
                    format!("{function} can no longer run: reserved concurrency set to 0"),
                    json!({"reservedConcurrentExecutions": 0}),
                ));
            }
            _ => {}
        }
    }

    fn configuration(
        &mut self,
        event: &CloudTrailEvent,
        function: &str,
        account: Option<&str>,
        learned: bool,
        finding: &dyn Fn(&'static str, String, Value) -> Finding,
        out: &mut Vec<Finding>,
    ) {
        let request = &event.request;
        let known = self.functions.get(function).cloned().unwrap_or_default();
        if let Some(layers) = layers_set_by(event) {
            let layers = layers_of(layers);
            let added: Vec<&String> = layers.iter().filter(|l| !known.layers.contains(&layer_name(l))).collect();
            let foreign = added.iter().any(|l| arn_account(l).is_some_and(|a| Some(a) != account));
            // A layer of another account needs no history; a new layer of the account's own does.
            if !added.is_empty() && (learned || foreign) {
                let mut found = finding(
                    "lambda.layer_added",
                    format!(
                        "{function} now loads {} new layer(s){}",
                        added.len(),
                        if foreign { " from another account" } else { "" }
                    ),
                    json!({"added": added, "layers": layers}),
                );
                found.expected = json!({"layers": known.layers});
                if foreign {
                    found.severity = Some(crate::Severity::Critical);
                }
                out.push(found);
            }
            self.function(function).layers = layers.iter().map(|l| layer_name(l)).collect();
        }
        if let Some(role) = event.param("role") {
            let swapped = learned && known.role.as_deref().is_some_and(|r| r != role);
            if swapped || self.is_privileged(role) {
                let mut found = finding(
                    "lambda.role_swapped",
                    format!("{function} now runs as {role}"),
                    json!({"role": role, "privileged": self.is_privileged(role)}),
                );
                found.expected = json!({"role": known.role});
                out.push(found);
            }
            self.function(function).role = Some(role.to_string());
        }
        let variables = request.get("environment").and_then(|e| e.get("variables")).and_then(Value::as_object);
        if let Some(variables) = variables {
            let hijack: Vec<&String> = variables.keys().filter(|k| HIJACK_VARIABLES.contains(&k.as_str())).collect();
            if !hijack.is_empty() {
                out.push(finding(
                    "lambda.runtime_hijack",
                    format!(
                        "{function}'s environment now loads code before its handler ({})",
                        hijack.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    json!({"variables": hijack}),
                ));
            }
        }
    }

    /// A function's role session (its session name is the function's name) calling AWS from somewhere
    /// that is not the Lambda runtime.
    fn outside_lambda(&mut self, event: &CloudTrailEvent, out: &mut Vec<Finding>) {
        if event.principal_type.as_deref() != Some("AssumedRole") {
            return;
        }
        let Some(session) = event.session_name.as_deref() else { return };
        if !self.functions.contains_key(session) {
            return;
        }
        let agent = event.user_agent.as_deref().unwrap_or_default();
        let address = event.source_ip.as_deref().unwrap_or_default();
        // AWS services acting on the role's behalf show their own name as the address.
        let by_service = address.ends_with(".amazonaws.com") || agent == "AWS Internal";
        if is_lambda_runtime_agent(agent) || by_service {
            return;
        }
        out.push(Finding {
            detection: "credentials.outside_lambda",
            ts_us: event.ts_us,
            function: Some(session.to_string()),
            entity: format!("{} from {address}", event.principal_arn.as_deref().unwrap_or(session)),
            // Once per session and address: the first call is the finding, later ones are its evidence.
            key: format!("{}|{address}", event.access_key_id.as_deref().unwrap_or(session)),
            detail: format!("{session}'s execution-role credentials used from {address} ({})", short(agent)),
            observed: json!({"event": event.event_name, "source_ip": address, "user_agent": agent, "access_key_id": event.access_key_id}),
            expected: json!({"user_agent": "an AWS SDK inside Lambda (exec-env AWS_Lambda_*)"}),
            evidence: vec![event.key()],
            principal: event.principal_arn.clone(),
            window: false,
            ..Finding::default()
        });
    }
}

fn short(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A finding about one CloudTrail event: its actor is the entity, its event id the key and the evidence.
fn event_finding(
    event: &CloudTrailEvent,
    function: Option<String>,
    detection: &'static str,
    detail: String,
    observed: Value,
) -> Finding {
    Finding {
        detection,
        ts_us: event.ts_us,
        function,
        entity: event.actor().unwrap_or_else(|| "unknown".into()),
        key: event.key(),
        detail,
        observed,
        evidence: vec![event.key()],
        principal: event.principal_arn.clone(),
        ..Finding::default()
    }
}

/// Trail tampering.
/// The function a Lambda API event is about, and the account that owns it.
fn subject(event: &CloudTrailEvent) -> Option<(String, Option<String>)> {
    let function = event.param("functionName").map(function_name).map(str::to_string)?;
    let account = event
        .param("functionName")
        .and_then(arn_account)
        .map(str::to_string)
        .or_else(|| event.recipient_account.clone())
        .or_else(|| event.account.clone());
    Some((function, account))
}

/// The Lambda rules that need no history: a resource policy opening the function to everyone or
/// another account, a function URL without authentication.
fn stateless_lambda(event: &CloudTrailEvent, function: &str, account: Option<&str>, out: &mut Vec<Finding>) {
    let request = &event.request;
    let finding = |detection: &'static str, detail: String, observed: Value| {
        event_finding(event, Some(function.to_string()), detection, detail, observed)
    };
    match event.operation() {
        "AddPermission" => {
            let principal = event.param("principal").unwrap_or_default();
            let org_scoped = request.get("principalOrgID").is_some();
            let principal_account = if principal.chars().all(|c| c.is_ascii_digit()) && principal.len() == 12 {
                Some(principal)
            } else {
                arn_account(principal)
            };
            let external = principal_account.is_some_and(|p| Some(p) != account);
            let public = principal == "*" && !org_scoped;
            if public || external {
                let who = if public {
                    "everyone".to_string()
                } else {
                    format!("account {}", principal_account.unwrap_or("?"))
                };
                out.push(finding(
                        "lambda.public_permission",
                        format!("{function} may now be invoked by {who}"),
                        json!({"principal": principal, "action": event.param("action"), "statementId": event.param("statementId"), "functionUrlAuthType": event.param("functionUrlAuthType")}),
                    ));
            }
        }
        "CreateFunctionUrlConfig" | "UpdateFunctionUrlConfig" if event.param("authType") == Some("NONE") => {
            out.push(finding(
                "lambda.url_without_auth",
                format!("{function} has a function URL anyone can call"),
                json!({"authType": "NONE", "cors": request.get("cors")}),
            ));
        }
        _ => {}
    }
}

fn trail(event: &CloudTrailEvent, out: &mut Vec<Finding>) {
    let name = event.param("name").or_else(|| event.param("trailName")).unwrap_or("?");
    let finding = |detection: &'static str, detail: String, observed: Value| {
        event_finding(event, None, detection, detail, observed)
    };
    match event.operation() {
        "StopLogging" => {
            out.push(finding("trail.stopped", format!("trail {name} stopped logging"), json!({"trail": name})))
        }
        "DeleteTrail" => out.push(finding("trail.deleted", format!("trail {name} deleted"), json!({"trail": name}))),
        "PutEventSelectors" => {
            let mut dropped = Vec::new();
            for selector in event.request.get("eventSelectors").and_then(Value::as_array).into_iter().flatten() {
                if selector.get("includeManagementEvents").and_then(Value::as_bool) == Some(false) {
                    dropped.push("management events".to_string());
                }
                if let Some(kind) = selector.get("readWriteType").and_then(Value::as_str).filter(|k| *k != "All") {
                    dropped.push(format!("{} events", if kind == "ReadOnly" { "write" } else { "read" }));
                }
                if selector
                    .get("excludeManagementEventSources")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty())
                {
                    dropped.push("management events of some services".to_string());
                }
            }
            for selector in event.request.get("advancedEventSelectors").and_then(Value::as_array).into_iter().flatten()
            {
                for field in selector.get("fieldSelectors").and_then(Value::as_array).into_iter().flatten() {
                    let is = |key: &str, value: &str| {
                        field.get("field").and_then(Value::as_str) == Some(key)
                            && field
                                .get("equals")
                                .and_then(Value::as_array)
                                .is_some_and(|v| v.iter().any(|x| x == value))
                    };
                    if is("readOnly", "true") {
                        dropped.push("write events".to_string());
                    }
                    if field.get("field").and_then(Value::as_str) == Some("eventName")
                        && field.get("notEquals").or_else(|| field.get("notStartsWith")).is_some()
                    {
                        dropped.push("some event names".to_string());
                    }
                }
            }
            dropped.sort();
            dropped.dedup();
            if !dropped.is_empty() {
                out.push(finding(
                    "trail.selectors_reduced",
                    format!("trail {name} no longer records {}", dropped.join(", ")),
                    json!({"dropped": dropped, "eventSelectors": event.request.get("eventSelectors"), "advancedEventSelectors": event.request.get("advancedEventSelectors")}),
                ));
            }
        }
        "UpdateTrail" => {
            let mut weakened = Vec::new();
            for (key, meaning) in [
                ("isMultiRegionTrail", "other regions"),
                ("includeGlobalServiceEvents", "global services (IAM, STS)"),
                ("enableLogFileValidation", "log file validation"),
            ] {
                if event.request.get(key).and_then(Value::as_bool) == Some(false) {
                    weakened.push(meaning);
                }
            }
            if !weakened.is_empty() {
                out.push(finding(
                    "trail.weakened",
                    format!("trail {name} no longer covers {}", weakened.join(", ")),
                    json!({"request": event.request}),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accounts_and_layers_come_out_of_arns() {
        assert_eq!(function_name("arn:aws:lambda:us-east-1:1:function:f:7"), "f");
        assert_eq!(function_name("f"), "f");
        assert_eq!(arn_account("arn:aws:lambda:us-east-1:123456789012:layer:x:1"), Some("123456789012"));
        assert_eq!(arn_account("123"), None);
        assert_eq!(layer_name("arn:aws:lambda:r:1:layer:x:12"), "arn:aws:lambda:r:1:layer:x");
        assert!(is_lambda_runtime_agent("Boto3/1.34 md/Botocore#1.34 exec-env/AWS_Lambda_python3.12"));
        assert!(!is_lambda_runtime_agent("aws-cli/2.15.0 Python/3.11"));
    }

    #[test]
    fn a_layer_named_only_in_the_response_is_an_added_layer() {
        let event = |request: Value, response: Value| CloudTrailEvent {
            ts_us: 1,
            event_source: "lambda.amazonaws.com".into(),
            event_name: "UpdateFunctionConfiguration20150331v2".into(),
            principal_arn: Some("arn:aws:iam::111122223333:user/dev".into()),
            account: Some("111122223333".into()),
            request,
            response,
            ..CloudTrailEvent::default()
        };
        let layer = "arn:aws:lambda:us-east-1:999988887777:layer:collector:3";
        for (request, response) in [
            (
                json!({"functionName": "orders-api"}),
                json!({"functionName": "orders-api", "layers": [{"arn": layer, "codeSize": 1024}]}),
            ),
            (json!({"functionName": "orders-api", "layers": [layer]}), json!({})),
        ] {
            let mut plane = ControlPlane::default();
            let mut out = Vec::new();
            plane.observe(&event(request.clone(), response), LEARNING_US_DEFAULT, &mut out);
            let added: Vec<&Finding> = out.iter().filter(|f| f.detection == "lambda.layer_added").collect();
            assert_eq!(added.len(), 1, "{request}: {out:?}");
            assert_eq!(added[0].severity, Some(crate::Severity::Critical), "a layer of another account");
        }
    }

    #[test]
    fn first_seen_rules_wait_for_the_learning_period_and_the_others_do_not() {
        const DAY: i64 = 24 * 3_600 * 1_000_000;
        let event = |ts_us: i64, name: &str, actor: &str, request: Value| CloudTrailEvent {
            ts_us,
            event_source: "lambda.amazonaws.com".into(),
            event_name: name.into(),
            principal_arn: Some(format!("arn:aws:iam::111122223333:user/{actor}")),
            account: Some("111122223333".into()),
            recipient_account: Some("111122223333".into()),
            request,
            ..CloudTrailEvent::default()
        };
        let code = |ts_us: i64, actor: &str| {
            event(ts_us, "UpdateFunctionCode20150331v2", actor, json!({"functionName": "orders-api"}))
        };
        let own_layer = |ts_us: i64, n: u32| {
            event(
                ts_us,
                "UpdateFunctionConfiguration20150331v2",
                "ci",
                json!({"functionName": "orders-api", "layers": [format!("arn:aws:lambda:us-east-1:111122223333:layer:l{n}:1")]}),
            )
        };
        let public = |ts_us: i64| {
            event(
                ts_us,
                "AddPermission20150331v2",
                "dev",
                json!({"functionName": "orders-api", "principal": "*", "action": "lambda:InvokeFunction"}),
            )
        };
        let detections = |plane: &mut ControlPlane, event: CloudTrailEvent| {
            let mut out = Vec::new();
            plane.observe(&event, 7 * DAY, &mut out);
            out.iter().map(|f| f.detection).collect::<Vec<_>>()
        };
        let start = 1_700_000_000_000_000;
        let mut plane = ControlPlane::default();
        // Day one: the first deployments by each principal and a first layer are learned, not reported;
        // a public permission needs no history.
        assert!(detections(&mut plane, code(start, "ci")).is_empty());
        assert!(detections(&mut plane, code(start + DAY, "intruder")).is_empty());
        assert!(detections(&mut plane, own_layer(start + DAY, 1)).is_empty());
        assert_eq!(detections(&mut plane, public(start + 2 * DAY)), ["lambda.public_permission"]);
        assert_eq!(plane.watched()["111122223333"].span_us(), 2 * DAY);
        // A week in, the same kinds of change are new to what was learned and are reported.
        assert!(detections(&mut plane, code(start + 7 * DAY, "ci")).is_empty(), "a known deployer");
        assert_eq!(detections(&mut plane, code(start + 7 * DAY + 1, "stranger")), ["lambda.code_by_new_principal"]);
        assert_eq!(detections(&mut plane, own_layer(start + 8 * DAY, 2)), ["lambda.layer_added"]);
        // Another account is still learning.
        let mut other = code(start + 8 * DAY, "stranger2");
        other.recipient_account = Some("444455556666".into());
        other.account = Some("444455556666".into());
        assert!(detections(&mut plane, other).is_empty());
        // With no learning period, every first deployment by a principal is new at once.
        let mut fresh = ControlPlane::default();
        let mut out = Vec::new();
        fresh.observe(&code(start, "ci"), 0, &mut out);
        fresh.observe(&code(start + 1, "stranger"), 0, &mut out);
        fresh.observe(&code(start + 2, "ci"), 0, &mut out);
        let entities: Vec<&str> = out.iter().map(|f| f.entity.as_str()).collect();
        assert_eq!(entities, ["arn:aws:iam::111122223333:user/ci", "arn:aws:iam::111122223333:user/stranger"]);
    }
}
