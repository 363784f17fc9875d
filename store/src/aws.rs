//! AWS requests that `object_store` does not make (the CloudWatch Logs API, S3 puts with Object Lock),
//! signed with SigV4 by `object_store`'s signer. Credentials come from the standard `AWS_*` variables,
//! web identity, the container or instance role (`object_store`'s chain), or a profile of
//! `~/.aws/credentials` (`AWS_PROFILE`); the region from `AWS_REGION`, `AWS_DEFAULT_REGION` or the
//! profile; a service's endpoint from `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::CredentialProvider;

/// A signed-request client for one region.
pub struct Aws {
    pub region: String,
    http: reqwest::Client,
    credentials: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
}

fn profile_value(path: &std::path::Path, profile: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_profile = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_profile = section == profile || section.strip_prefix("profile ").map(str::trim) == Some(profile);
        } else if in_profile {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Aws {
    /// The region and credentials of the environment (see the module doc).
    pub fn from_env() -> Result<Aws, String> {
        let home = env("HOME").map(std::path::PathBuf::from).unwrap_or_default();
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let credentials_file =
            env("AWS_SHARED_CREDENTIALS_FILE").map(Into::into).unwrap_or_else(|| home.join(".aws/credentials"));
        let config_file = env("AWS_CONFIG_FILE").map(Into::into).unwrap_or_else(|| home.join(".aws/config"));
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| profile_value(&config_file, &profile, "region"))
            .ok_or("no AWS region: set AWS_REGION or a profile's region")?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name("unused").with_region(&region);
        if env("AWS_ACCESS_KEY_ID").is_none() {
            let key = |name| profile_value(&credentials_file, &profile, name);
            if let (Some(id), Some(secret)) = (key("aws_access_key_id"), key("aws_secret_access_key")) {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = key("aws_session_token") {
                    builder = builder.with_token(token);
                }
            }
        }
        let s3 = builder.build().map_err(|e| format!("AWS credentials: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Aws { region, http, credentials: s3.credentials().clone() })
    }

    /// The endpoint of `service` (`logs`, `s3`): `AWS_ENDPOINT_URL_<SUFFIX>`, `AWS_ENDPOINT_URL`, or AWS's.
    pub fn endpoint(&self, service: &str, env_suffix: &str) -> String {
        env(&format!("AWS_ENDPOINT_URL_{env_suffix}"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://{service}.{}.amazonaws.com", self.region))
            .trim_end_matches('/')
            .to_string()
    }

    /// Sends one request to `service`, signed; the answer's status and text. `Err((retry, why))` when it
    /// could not be sent (credentials, network), `retry` when trying again may help.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        service: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, String), (bool, String)> {
        let credential = self.credentials.get_credential().await.map_err(|e| (true, format!("credentials: {e}")))?;
        let mut request = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let mut request = request
            .body(object_store::client::HttpRequestBody::from(body.clone()))
            .map_err(|e| (false, format!("request: {e}")))?;
        object_store::aws::AwsAuthorizer::new(&credential, service, &self.region).authorize(&mut request, None);
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| (false, format!("method: {e}")))?;
        let mut outgoing = self.http.request(method, url).body(body);
        for (name, value) in request.headers() {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
        let answer = outgoing.send().await.map_err(|e| (true, format!("request failed: {}", e.without_url())))?;
        let status = answer.status().as_u16();
        let text = answer.text().await.map_err(|e| (true, format!("reading the answer: {e}")))?;
        Ok((status, text))
    }
}

/// Puts a node's exported head as `<prefix>/<node>/<seq>.json` into the S3 bucket of `url`
/// (`s3://BUCKET/PREFIX`) under Object Lock in compliance mode until `retain_days` from now: a write-once
/// anchor that nobody, the bucket's owner included, can overwrite or delete before then (`verify
/// --expect-head` reads it back). The bucket must have Object Lock enabled. Returns the object's key.
pub async fn publish_locked(
    aws: &Aws,
    url: &str,
    export: &crate::verify::ExportedHead,
    retain_days: u32,
) -> Result<String, String> {
    use base64::Engine;
    use sha2::Digest;
    let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url}: an anchor bucket is s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url}: no bucket"));
    }
    let prefix = prefix.trim_matches('/');
    let key = format!(
        "{}{}/{:012}.json",
        if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        export.node,
        export.seq
    );
    let body = serde_json::to_vec(export).map_err(|e| e.to_string())?;
    let until = chrono::Utc::now() + chrono::Duration::days(i64::from(retain_days.max(1)));
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-amz-object-lock-mode", "COMPLIANCE".to_string()),
        ("x-amz-object-lock-retain-until-date", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        // S3 requires a checksum of an object put under Object Lock.
        ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
        ("x-amz-checksum-sha256", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))),
    ];
    let object_url = format!("{}/{bucket}/{key}", aws.endpoint("s3", "S3"));
    let (status, text) = aws.send("PUT", &object_url, "s3", &headers, body).await.map_err(|(_, why)| why)?;
    if !(200..300).contains(&status) {
        return Err(format!("s3://{bucket}/{key}: HTTP {status}: {}", crate::rows::bounded(&text, 300)));
    }
    Ok(format!("s3://{bucket}/{key}"))
}

#[cfg(test)]
mod tests {
    use super::profile_value;

    #[test]
    fn profiles_are_read_as_the_aws_cli_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "[default]\nregion = us-east-1\n\n[profile soc]\nregion=eu-west-1\n").unwrap();
        assert_eq!(profile_value(&path, "default", "region").as_deref(), Some("us-east-1"));
        assert_eq!(profile_value(&path, "soc", "region").as_deref(), Some("eu-west-1"));
        assert_eq!(profile_value(&path, "other", "region"), None);
    }
}
