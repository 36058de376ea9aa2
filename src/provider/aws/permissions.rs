//! What respot may need IAM to allow: every AWS call it makes, as the IAM
//! action that authorizes it, grouped by the feature that makes the call;
//! the minimal policy `respot iam-policy` prints; and which action a
//! denied call was missing.
//!
//! Pure. [`CALLS`] is the one list: a unit test reads `sdk.rs` and fails
//! when a call is made there that the list does not hold, so the printed
//! policy cannot fall behind the code.

use serde_json::{Value, json};

use crate::config::Config;
use crate::provider::tag;

/// What makes a group of calls necessary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// launch, list, destroy, plan and the deployment lock.
    Fleet,
    /// `aws.image` is an alias, resolved through a public SSM parameter.
    SsmImages,
    /// `[[traffic.aws.listeners]]`: the ALB front door (`traffic::alb`).
    AlbDoor,
    /// `aws.allocation = "price-capacity-optimized"`: one instant EC2 Fleet
    /// per region over a launch template made for it.
    FleetAllocation,
    /// The bundle transport: the archive in S3 (`bundle.rs`).
    Bundles,
    /// `[[secrets]]` from SSM: respot reads their versions (`secrets.rs`);
    /// the instances fetch the values with their instance profile.
    SsmSecrets,
    /// `aws.instance_profile`: launching with it passes its role.
    InstanceProfile,
}

/// One API call respot makes and the IAM action it needs.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The API action, as `Ec2Error::action` names it.
    pub api: &'static str,
    /// The IAM action, e.g. `ec2:RunInstances`; `None` for a call IAM
    /// never denies (`sts:GetCallerIdentity`).
    pub iam: Option<&'static str>,
    pub feature: Feature,
    /// Whether the call acts on the deployment's own (tagged) resources,
    /// so the policy can limit it to them.
    pub own_resources: bool,
}

const fn call(api: &'static str, iam: &'static str, own_resources: bool) -> Call {
    Call {
        api,
        iam: Some(iam),
        feature: Feature::Fleet,
        own_resources,
    }
}

/// A call of `feature` (not the fleet's); `own_resources` is unused there.
const fn of(feature: Feature, api: &'static str, iam: &'static str) -> Call {
    Call {
        api,
        iam: Some(iam),
        feature,
        own_resources: false,
    }
}

/// Every call respot makes.
pub const CALLS: &[Call] = &[
    Call {
        api: "GetCallerIdentity",
        iam: None,
        feature: Feature::Fleet,
        own_resources: false,
    },
    call("DescribeRegions", "ec2:DescribeRegions", false),
    call("DescribeInstances", "ec2:DescribeInstances", false),
    call("RunInstances", "ec2:RunInstances", false),
    call("TerminateInstances", "ec2:TerminateInstances", true),
    call("DescribeImages", "ec2:DescribeImages", false),
    call("DescribeSubnets", "ec2:DescribeSubnets", false),
    call("DescribeSpotPriceHistory", "ec2:DescribeSpotPriceHistory", false),
    call("CreateSecurityGroup", "ec2:CreateSecurityGroup", false),
    call("DescribeSecurityGroups", "ec2:DescribeSecurityGroups", false),
    call(
        "AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupIngress",
        true,
    ),
    call("DeleteSecurityGroup", "ec2:DeleteSecurityGroup", true),
    call(
        "DescribeSpotInstanceRequests",
        "ec2:DescribeSpotInstanceRequests",
        false,
    ),
    call(
        "CancelSpotInstanceRequests",
        "ec2:CancelSpotInstanceRequests",
        false,
    ),
    Call {
        api: "GetParameter",
        iam: Some("ssm:GetParameter"),
        feature: Feature::SsmImages,
        own_resources: false,
    },
    Call {
        api: "CreateLaunchTemplate",
        iam: Some("ec2:CreateLaunchTemplate"),
        feature: Feature::FleetAllocation,
        own_resources: false,
    },
    Call {
        api: "DeleteLaunchTemplate",
        iam: Some("ec2:DeleteLaunchTemplate"),
        feature: Feature::FleetAllocation,
        own_resources: true,
    },
    Call {
        api: "DescribeLaunchTemplates",
        iam: Some("ec2:DescribeLaunchTemplates"),
        feature: Feature::FleetAllocation,
        own_resources: false,
    },
    Call {
        api: "CreateFleet",
        iam: Some("ec2:CreateFleet"),
        feature: Feature::FleetAllocation,
        own_resources: false,
    },
    // The bundle bucket and its objects, by the names `bundle.rs` reports.
    of(Feature::Bundles, "HeadBucket", "s3:ListBucket"),
    of(Feature::Bundles, "CreateBucket", "s3:CreateBucket"),
    of(Feature::Bundles, "PutBucketTagging", "s3:PutBucketTagging"),
    of(Feature::Bundles, "ListObjectsV2", "s3:ListBucket"),
    of(Feature::Bundles, "PutObject", "s3:PutObject"),
    // PutObject with tags also needs this one.
    of(Feature::Bundles, "PutObject", "s3:PutObjectTagging"),
    // A presigned URL acts with the signer's rights.
    of(Feature::Bundles, "presign GetObject", "s3:GetObject"),
    of(Feature::Bundles, "DeleteObject", "s3:DeleteObject"),
    of(
        Feature::SsmSecrets,
        "DescribeParameters",
        "ssm:DescribeParameters",
    ),
    // RunInstances with `IamInstanceProfile` passes the profile's role.
    of(Feature::InstanceProfile, "RunInstances", "iam:PassRole"),
];

/// The IAM action of the API call `api` (`ec2:<api>` for one respot does
/// not list, which is EC2's naming).
pub fn iam_action(api: &str) -> String {
    match CALLS.iter().find(|c| c.api == api).and_then(|c| c.iam) {
        Some(iam) => iam.to_string(),
        None => format!("ec2:{api}"),
    }
}

/// The IAM action a denial names. AWS's message says it ("... is not
/// authorized to perform: ec2:CreateTags on resource: ..."), and it may
/// differ from the call: a launch that tags at creation is refused for
/// `ec2:CreateTags` under `RunInstances`. Without one, the call's own.
pub fn denied_action(api: &str, message: &str) -> String {
    let named = message
        .split("perform: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|word| is_iam_action(word));
    match named {
        Some(action) => action.to_string(),
        None => iam_action(api),
    }
}

/// `service:Action`, letters and digits on both sides.
fn is_iam_action(word: &str) -> bool {
    match word.split_once(':') {
        Some((service, action)) => {
            !service.is_empty()
                && !action.is_empty()
                && service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && action.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// The features the configuration uses; `bundled`: whether its files
/// travel as a bundle (`transport = "bundle"`, or `"auto"` when the
/// blueprint does not fit, which only a render knows). Extend it when a
/// configuration field starts a new kind of call.
pub fn features_of(config: &Config, bundled: bool) -> Vec<Feature> {
    let mut features = vec![Feature::Fleet];
    if super::image::uses_ssm(&config.aws.image) {
        features.push(Feature::SsmImages);
    }
    if !alb_listeners(config).is_empty() {
        features.push(Feature::AlbDoor);
    }
    if config.aws.allocation == crate::config::Allocation::PriceCapacityOptimized {
        features.push(Feature::FleetAllocation);
    }
    if bundled {
        features.push(Feature::Bundles);
    }
    if config.secrets.iter().any(|s| s.ssm.is_some()) {
        features.push(Feature::SsmSecrets);
    }
    if config.aws.instance_profile.is_some() {
        features.push(Feature::InstanceProfile);
    }
    features
}

/// The IAM actions of `feature`'s calls, sorted, once each.
pub(super) fn actions_of_feature(feature: Feature) -> Vec<&'static str> {
    let mut list: Vec<&str> = CALLS
        .iter()
        .filter(|c| c.feature == feature)
        .filter_map(|c| c.iam)
        .collect();
    list.sort_unstable();
    list.dedup();
    list
}

fn alb_listeners(config: &Config) -> Vec<&str> {
    config
        .traffic
        .as_ref()
        .and_then(|t| t.aws.as_ref())
        .map(|a| a.listeners.iter().map(|l| l.listener_arn.as_str()).collect())
        .unwrap_or_default()
}

/// The ALB door's statements: reads anywhere, target groups created tagged
/// and then changed only while tagged for the deployment, and only the
/// configured listeners modified.
fn alb_statements(config: &Config) -> Vec<Value> {
    vec![
        json!({
            "Sid": "RespotAlbRead",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeTags",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetHealth"
            ],
            "Resource": "*"
        }),
        json!({
            "Sid": "RespotAlbCreateTagged",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:AddTags"],
            "Resource": "*",
            "Condition": {"StringEquals": {
                format!("aws:RequestTag/{}", tag::DEPLOYMENT): config.deployment.name
            }}
        }),
        json!({
            "Sid": "RespotAlbOwnTargetGroups",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:AddTags",
                "elasticloadbalancing:DeleteTargetGroup",
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:RegisterTargets"
            ],
            "Resource": "*",
            "Condition": {"StringEquals": {
                format!("aws:ResourceTag/{}", tag::DEPLOYMENT): config.deployment.name
            }}
        }),
        json!({
            "Sid": "RespotAlbListeners",
            "Effect": "Allow",
            "Action": "elasticloadbalancing:ModifyListener",
            "Resource": alb_listeners(config)
        }),
    ]
}

/// The minimal IAM policy for `config` on AWS: every action its features
/// call, write actions on existing resources limited to those tagged for
/// its deployment, tags allowed only at creation, and the Spot
/// service-linked role creatable (once per account).
pub fn policy(config: &Config, bundled: bool) -> Value {
    let features = features_of(config, bundled);
    let wanted = |c: &&Call| features.contains(&c.feature) && c.iam.is_some();
    let actions = |own: bool| -> Vec<&str> {
        let mut list: Vec<&str> = CALLS
            .iter()
            .filter(wanted)
            .filter(|c| c.own_resources == own)
            .filter(|c| matches!(c.feature, Feature::Fleet | Feature::FleetAllocation))
            .filter_map(|c| c.iam)
            .collect();
        list.sort_unstable();
        list.dedup();
        list
    };
    let mut statements = vec![
        json!({"Sid": "RespotFleet", "Effect": "Allow", "Action": actions(false), "Resource": "*"}),
        json!({
            "Sid": "RespotOwnResources",
            "Effect": "Allow",
            "Action": actions(true),
            "Resource": "*",
            "Condition": {"StringEquals": {
                format!("aws:ResourceTag/{}", tag::DEPLOYMENT): config.deployment.name
            }}
        }),
        json!({
            "Sid": "RespotTagAtCreation",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": tagging_actions(&features)}}
        }),
        json!({
            "Sid": "RespotSpotServiceLinkedRole",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": "arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
            "Condition": {"StringLike": {"iam:AWSServiceName": "spot.amazonaws.com"}}
        }),
    ];
    if features.contains(&Feature::FleetAllocation) {
        // EC2 Fleet launches through its own service-linked role, made on
        // the account's first fleet.
        statements.push(json!({
            "Sid": "RespotFleetServiceLinkedRole",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": "arn:aws:iam::*:role/aws-service-role/ec2fleet.amazonaws.com/AWSServiceRoleForEC2Fleet",
            "Condition": {"StringLike": {"iam:AWSServiceName": "ec2fleet.amazonaws.com"}}
        }));
    }
    if features.contains(&Feature::SsmImages) {
        statements.push(json!({
            "Sid": "RespotImagesBySsmParameter",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": "arn:aws:ssm:*::parameter/aws/service/*"
        }));
    }
    if features.contains(&Feature::AlbDoor) {
        statements.extend(alb_statements(config));
    }
    statements.extend(super::policies::operator_statements(config, &features));
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The calls that tag what they create (`ec2:CreateAction`).
fn tagging_actions(features: &[Feature]) -> Vec<&'static str> {
    let mut actions = vec!["RunInstances", "CreateSecurityGroup"];
    if features.contains(&Feature::FleetAllocation) {
        actions.extend(["CreateFleet", "CreateLaunchTemplate"]);
    }
    actions
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Every call `sdk.rs` makes: the action names it passes to
    /// `from_sdk` and its `const ACTION`s.
    fn calls_in_sdk() -> Vec<String> {
        let source = include_str!("sdk.rs");
        let mut found = Vec::new();
        for marker in ["from_sdk(\"", "const ACTION: &str = \""] {
            for piece in source.split(marker).skip(1) {
                if let Some((name, _)) = piece.split_once('"') {
                    found.push(name.to_string());
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn every_call_the_sdk_makes_is_in_the_list() {
        let calls = calls_in_sdk();
        assert!(calls.len() >= 10, "the scan found the calls: {calls:?}");
        for api in &calls {
            assert!(
                CALLS.iter().any(|c| c.api == api),
                "sdk.rs calls `{api}`, which permissions::CALLS does not list: add it, so that \
                 `respot iam-policy` grants it"
            );
        }
    }

    #[test]
    fn the_denied_action_is_read_from_the_message() {
        let cases = [
            (
                "tagging at launch",
                "RunInstances",
                "You are not authorized to perform this operation. User: arn:aws:iam::1:user/ci is not \
                 authorized to perform: ec2:CreateTags on resource: arn:aws:ec2:eu-west-1:1:instance/* \
                 because no identity-based policy allows the ec2:CreateTags action.",
                "ec2:CreateTags",
            ),
            (
                "no action named",
                "TerminateInstances",
                "You are not authorized to perform this operation.",
                "ec2:TerminateInstances",
            ),
            (
                "ssm",
                "GetParameter",
                "User: arn:aws:iam::1:user/ci is not authorized to perform: ssm:GetParameter on resource",
                "ssm:GetParameter",
            ),
            ("ssm without a message", "GetParameter", "", "ssm:GetParameter"),
            (
                "garbage after perform",
                "DescribeImages",
                "perform: <html>",
                "ec2:DescribeImages",
            ),
        ];
        for (name, api, message, want) in cases {
            assert_eq!(denied_action(api, message), want, "{name}");
        }
    }

    fn config(image: &str) -> Config {
        config_with(image, "")
    }

    fn config_with(image: &str, aws: &str) -> Config {
        let text = format!(
            "[deployment]\nname = \"web\"\nprovider = \"aws\"\n\n[aws]\nimage = \"{image}\"\n{aws}\n\
             [[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n"
        );
        Config::parse(&text, std::path::Path::new("respot.toml")).expect("a valid config")
    }

    pub(in crate::provider::aws) fn actions_of(policy: &Value) -> Vec<String> {
        let mut all = Vec::new();
        for statement in policy["Statement"].as_array().expect("statements") {
            match &statement["Action"] {
                Value::String(one) => all.push(one.clone()),
                Value::Array(many) => all.extend(many.iter().filter_map(|a| a.as_str().map(String::from))),
                other => panic!("an action list: {other}"),
            }
        }
        all
    }

    #[test]
    fn the_alb_door_gets_every_call_it_makes_and_only_its_listeners() {
        let text = "[deployment]\nname = \"web\"\nprovider = \"aws\"\n\n[aws]\nimage = \"al2023\"\n\n\
             [[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n\n[traffic]\nguest_port = 8080\n\n\
             [[traffic.aws.listeners]]\nregion = \"eu-west-1\"\nlistener_arn = \"arn:aws:elasticloadbalancing:\
             eu-west-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2\"\n";
        let config = Config::parse(text, std::path::Path::new("respot.toml")).expect("a valid config");
        let policy = policy(&config, false);
        let actions = actions_of(&policy);
        // Every ELB call the door's SDK seam makes, by the names it reports.
        let sdk = include_str!("../../traffic/alb/sdk.rs");
        let called: Vec<&str> = sdk
            .split("from_sdk(")
            .skip(1)
            .chain(sdk.split("const ACTION: &str = ").skip(1))
            .filter_map(|rest| rest.strip_prefix('"')?.split('"').next())
            .filter(|name| name.chars().next().is_some_and(char::is_uppercase))
            .collect();
        assert!(called.len() >= 12, "{called:?}");
        for api in called {
            let wanted = format!("elasticloadbalancing:{api}");
            assert!(actions.contains(&wanted), "{wanted} missing: {actions:?}");
        }
        let listeners = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "RespotAlbListeners")
            .expect("a listener statement");
        assert_eq!(
            listeners["Resource"],
            json!([config.traffic.as_ref().unwrap().aws.as_ref().unwrap().listeners[0].listener_arn])
        );
    }

    #[test]
    fn the_policy_holds_every_call_of_the_features_in_use() {
        let with_alias = policy(&config("al2023"), false);
        let actions = actions_of(&with_alias);
        let fleet_and_images = CALLS
            .iter()
            .filter(|c| matches!(c.feature, Feature::Fleet | Feature::SsmImages));
        for call in fleet_and_images.filter_map(|c| c.iam) {
            assert!(actions.iter().any(|a| a == call), "{call} missing: {actions:?}");
        }
        assert!(actions.contains(&"ec2:CreateTags".to_string()));
        assert!(actions.contains(&"iam:CreateServiceLinkedRole".to_string()));
        let own = &with_alias["Statement"][1];
        assert_eq!(
            own["Condition"]["StringEquals"]["aws:ResourceTag/respot:deployment"],
            "web"
        );
        assert!(
            own["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("ec2:TerminateInstances"))
        );

        for fleet_call in [
            "ec2:CreateFleet",
            "ec2:CreateLaunchTemplate",
            "ec2:DeleteLaunchTemplate",
        ] {
            assert!(
                !actions.iter().any(|a| a == fleet_call),
                "ordered needs no {fleet_call}"
            );
        }
        let fleet = policy(
            &config_with("al2023", "allocation = \"price-capacity-optimized\"\n"),
            false,
        );
        let fleet_actions = actions_of(&fleet);
        for fleet_call in ["ec2:CreateFleet", "ec2:CreateLaunchTemplate"] {
            assert!(
                fleet_actions.iter().any(|a| a == fleet_call),
                "{fleet_call}: {fleet_actions:?}"
            );
        }
        assert!(
            fleet["Statement"][1]["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("ec2:DeleteLaunchTemplate")),
            "templates are deleted only when tagged for the deployment"
        );
        assert_eq!(
            fleet["Statement"][2]["Condition"]["StringEquals"]["ec2:CreateAction"],
            json!([
                "RunInstances",
                "CreateSecurityGroup",
                "CreateFleet",
                "CreateLaunchTemplate"
            ])
        );
        assert!(fleet.to_string().contains("AWSServiceRoleForEC2Fleet"));

        let literal = actions_of(&policy(&config("ami-0123456789abcdef0"), false));
        assert!(!literal.iter().any(|a| a.starts_with("ssm:")), "{literal:?}");
        assert!(
            !literal
                .iter()
                .any(|a| a.starts_with("s3:") || a.starts_with("elasticloadbalancing:"))
        );
    }
}
