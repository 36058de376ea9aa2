//! The statements of the features beyond the fleet that `respot
//! iam-policy` prints, and the instance profile's own policy: the
//! operator (the user or role respot runs as) and the instances are two
//! principals, so they get two policies.
//!
//! - Bundles (S3): the operator makes and tags respot's bucket (unless
//!   `aws.bundle_bucket` names one), puts, lists and deletes the
//!   deployment's objects, and signs the URL the instances fetch with, which
//!   acts with the signer's `s3:GetObject`.
//! - SSM secrets: the operator reads their versions (`DescribeParameters`,
//!   no value); the instance profile reads the values (`GetParameter`, with
//!   decryption) of exactly the configured parameters.
//! - `aws.instance_profile`: launching with it is `iam:PassRole` on its role.

use serde::Serialize;
use serde_json::{Value, json};

use super::permissions::{Feature, actions_of_feature};
use crate::config::Config;

/// The bucket names respot makes when `aws.bundle_bucket` is unset
/// (`bundle::default_bucket`: the account and region fill the `*`).
const RESPOT_BUCKETS: &str = "respot-bundles-*";

/// The instance profile's policy, for the role the instances boot with.
#[derive(Debug, Clone, Serialize)]
pub struct ProfilePolicy {
    /// `aws.instance_profile`, or `None` when it is not set (then the
    /// instances cannot fetch their secrets).
    pub name: Option<String>,
    pub policy: Value,
}

/// The operator's statements for `features` beyond the fleet, images and
/// the ALB door (which `permissions::policy` writes itself).
pub fn operator_statements(config: &Config, features: &[Feature]) -> Vec<Value> {
    let mut statements = Vec::new();
    if features.contains(&Feature::Bundles) {
        statements.extend(bundle_statements(config));
    }
    if features.contains(&Feature::SsmSecrets) {
        statements.push(json!({
            "Sid": "RespotSecretVersions",
            "Effect": "Allow",
            "Action": actions_of_feature(Feature::SsmSecrets),
            "Resource": "*"
        }));
    }
    if features.contains(&Feature::InstanceProfile) {
        statements.push(json!({
            "Sid": "RespotPassInstanceProfileRole",
            "Effect": "Allow",
            "Action": actions_of_feature(Feature::InstanceProfile),
            "Resource": "arn:aws:iam::*:role/*",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
        }));
    }
    statements
}

/// The bucket's statements (make, tag, list) and the objects' (under the
/// deployment's prefix only).
fn bundle_statements(config: &Config) -> Vec<Value> {
    let (bucket, respot_makes_it) = match &config.aws.bundle_bucket {
        Some(bucket) => (bucket.as_str(), false),
        None => (RESPOT_BUCKETS, true),
    };
    let actions = actions_of_feature(Feature::Bundles);
    let bucket_actions: Vec<&str> = actions
        .iter()
        .copied()
        .filter(|a| !a.contains("Object"))
        .filter(|a| respot_makes_it || !matches!(*a, "s3:CreateBucket" | "s3:PutBucketTagging"))
        .collect();
    let object_actions: Vec<&str> = actions.iter().copied().filter(|a| a.contains("Object")).collect();
    vec![
        json!({
            "Sid": "RespotBundleBucket",
            "Effect": "Allow",
            "Action": bucket_actions,
            "Resource": format!("arn:aws:s3:::{bucket}")
        }),
        json!({
            "Sid": "RespotBundleObjects",
            "Effect": "Allow",
            "Action": object_actions,
            "Resource": format!("arn:aws:s3:::{bucket}/{}/*", config.deployment.name)
        }),
    ]
}

/// The instance profile's policy when the instances fetch SSM secrets:
/// `ssm:GetParameter` on each configured parameter, and `kms:Decrypt`
/// through SSM (see [`notes`]).
pub fn instance_profile_policy(config: &Config, features: &[Feature]) -> Option<ProfilePolicy> {
    if !features.contains(&Feature::SsmSecrets) {
        return None;
    }
    let parameters: Vec<String> = config
        .secrets
        .iter()
        .filter_map(|s| s.ssm.as_deref())
        .map(|name| format!("arn:aws:ssm:*:*:parameter/{}", name.trim_start_matches('/')))
        .collect();
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RespotSecretsFromSsm",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": parameters
            },
            {
                "Sid": "RespotSecretsDecrypt",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:ViaService": "ssm.*.amazonaws.com"}}
            }
        ]
    });
    Some(ProfilePolicy {
        name: config.aws.instance_profile.clone(),
        policy,
    })
}

/// What the policies cannot say themselves: where to narrow them.
pub fn notes(config: &Config, features: &[Feature]) -> Vec<String> {
    let mut notes = Vec::new();
    if features.contains(&Feature::InstanceProfile) {
        notes.push(
            "iam:PassRole: narrow its Resource to the role of `aws.instance_profile` \
             (arn:aws:iam::ACCOUNT:role/ROLE)"
                .to_string(),
        );
    }
    if features.contains(&Feature::SsmSecrets) {
        notes.push(
            "kms:Decrypt (instance profile): needed only for parameters encrypted with a customer \
             managed KMS key (the default aws/ssm key allows it through SSM); narrow its Resource to \
             that key's ARN"
                .to_string(),
        );
        if config.aws.instance_profile.is_none() {
            notes.push(
                "`[[secrets]]` come from SSM but `aws.instance_profile` is not set: the instances \
                 have no credentials to fetch them"
                    .to_string(),
            );
        }
    }
    if features.contains(&Feature::Bundles) && config.aws.bundle_bucket.is_none() {
        notes.push(format!(
            "bundles: respot's bucket is `{RESPOT_BUCKETS}` (account and home region); narrow it \
             once known, or set `aws.bundle_bucket`"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::super::permissions::tests::actions_of;
    use super::super::permissions::{CALLS, iam_action, policy};
    use super::*;

    /// The API names a source reports its calls by: every `s3_error("…"`
    /// and, in each `S3Error { … }` or `ProviderError::Api { … }` that
    /// follows `struct_marker`, its `action: "…"`.
    fn reported_calls(source: &str, struct_marker: &str) -> Vec<String> {
        let mut found = Vec::new();
        for piece in source.split("s3_error(\"").skip(1) {
            found.extend(piece.split_once('"').map(|(name, _)| name.to_string()));
        }
        for piece in source.split(struct_marker).skip(1) {
            let head = &piece[..piece.len().min(160)];
            if let Some(rest) = head.split("action: \"").nth(1) {
                found.extend(rest.split_once('"').map(|(name, _)| name.to_string()));
            }
        }
        found.sort();
        found.dedup();
        found
    }

    fn config(extra_aws: &str, rest: &str) -> Config {
        let text = format!(
            "[deployment]\nname = \"web\"\nprovider = \"aws\"\n\n[aws]\nimage = \"al2023\"\n{extra_aws}\n\
             [[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n{rest}"
        );
        Config::parse(&text, std::path::Path::new("respot.toml")).expect("a valid config")
    }

    fn everything() -> Config {
        config(
            "instance_profile = \"app\"\nallocation = \"price-capacity-optimized\"\n",
            "\n[[secrets]]\npath = \"/etc/app/token\"\nssm = \"/app/token\"\n\n\
             [[secrets]]\npath = \"/etc/app/db\"\nssm = \"/app/db\"\n",
        )
    }

    #[test]
    fn every_s3_and_ssm_call_the_code_makes_is_granted_to_the_operator() {
        let mut calls = reported_calls(include_str!("bundle.rs"), "S3Error {");
        calls.extend(reported_calls(include_str!("secrets.rs"), "ProviderError::"));
        for api in [
            "HeadBucket",
            "CreateBucket",
            "PutObject",
            "presign GetObject",
            "DescribeParameters",
        ] {
            assert!(calls.iter().any(|c| c == api), "the scan finds {api}: {calls:?}");
        }
        let operator = actions_of(&policy(&everything(), true));
        for api in &calls {
            assert!(
                CALLS.iter().any(|c| c.api == api),
                "`{api}` is called but permissions::CALLS does not list it: add it, so that \
                 `respot iam-policy` grants it"
            );
            let action = iam_action(api);
            assert!(
                operator.contains(&action),
                "{action} ({api}) missing: {operator:?}"
            );
        }
        for call in CALLS.iter().filter_map(|c| c.iam) {
            assert!(operator.iter().any(|a| a == call), "{call} missing: {operator:?}");
        }
        assert!(operator.contains(&"s3:PutObjectTagging".to_string()));
        assert!(operator.contains(&"iam:PassRole".to_string()));
    }

    #[test]
    fn the_instance_profile_reads_exactly_the_configured_parameters() {
        let config = everything();
        let features = super::super::permissions::features_of(&config, false);
        let profile = instance_profile_policy(&config, &features).expect("secrets from SSM");
        assert_eq!(profile.name.as_deref(), Some("app"));
        let statements = profile.policy["Statement"].as_array().unwrap();
        assert_eq!(statements[0]["Action"], "ssm:GetParameter");
        assert_eq!(
            statements[0]["Resource"],
            json!([
                "arn:aws:ssm:*:*:parameter/app/token",
                "arn:aws:ssm:*:*:parameter/app/db"
            ])
        );
        assert_eq!(statements[1]["Action"], "kms:Decrypt");
        assert!(
            notes(&config, &features)
                .iter()
                .any(|n| n.contains("kms:Decrypt"))
        );
        // The operator reads versions, never values.
        let operator = actions_of(&policy(&config, false));
        assert!(operator.contains(&"ssm:DescribeParameters".to_string()));
        assert!(!operator.iter().any(|a| a == "kms:Decrypt"), "{operator:?}");
        assert!(
            !operator.iter().any(|a| a.starts_with("s3:")),
            "not bundled: {operator:?}"
        );

        let plain = config_without_secrets();
        let features = super::super::permissions::features_of(&plain, false);
        assert!(instance_profile_policy(&plain, &features).is_none());
        let operator = actions_of(&policy(&plain, false));
        assert!(
            !operator
                .iter()
                .any(|a| a.starts_with("ssm:Describe") || a == "iam:PassRole")
        );
    }

    fn config_without_secrets() -> Config {
        config("", "")
    }

    #[test]
    fn bundles_limit_objects_to_the_deployment_and_a_named_bucket_is_not_made() {
        let config = config("bundle_bucket = \"team-bundles\"\n", "");
        let policy = policy(&config, true);
        let statement = |sid: &str| {
            policy["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == sid)
                .cloned()
                .unwrap_or_else(|| panic!("{sid} in {policy}"))
        };
        let bucket = statement("RespotBundleBucket");
        assert_eq!(bucket["Resource"], "arn:aws:s3:::team-bundles");
        assert_eq!(bucket["Action"], json!(["s3:ListBucket"]));
        let objects = statement("RespotBundleObjects");
        assert_eq!(objects["Resource"], "arn:aws:s3:::team-bundles/web/*");
        assert_eq!(
            objects["Action"],
            json!([
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:PutObject",
                "s3:PutObjectTagging"
            ])
        );
    }
}
