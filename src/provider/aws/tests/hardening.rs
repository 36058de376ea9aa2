//! Launch hardening against the scripted fake: what every `RunInstances`
//! asks of the instance metadata service and the root volume, and which
//! existing security groups a launch reuses.

use super::{CIDR, DEPLOYMENT, provider, region_failures, request};
use crate::config::Fallback;
use crate::exit::ExitStatus;
use crate::provider::aws::AwsProvider;
use crate::provider::aws::ec2::{Image, IngressRule, LaunchSpec, MetadataOptions, RootVolume};
use crate::provider::aws::fake::FakeEc2;
use crate::provider::{Provider, ProviderError, tag};

/// One region, one instance, from `image`.
fn one_region(fake: &FakeEc2, image: &str, encrypt_volumes: bool) -> AwsProvider<FakeEc2> {
    let mut aws = provider(fake, &[("eu-west-1", 1)], Fallback::None);
    aws.settings.image = image.to_string();
    aws.settings.encrypt_volumes = encrypt_volumes;
    aws
}

fn specs(fake: &FakeEc2) -> Vec<LaunchSpec> {
    fake.launch_specs().into_iter().map(|(_, spec)| spec).collect()
}

fn al2023(id: &str, created: &str, root_device: Option<&str>, size: Option<i32>) -> Image {
    Image {
        id: id.to_string(),
        name: "al2023-ami-2023.7-kernel-6.12-x86_64".to_string(),
        creation_date: created.to_string(),
        architecture: Some("x86_64".to_string()),
        root_device: root_device.map(str::to_string),
        root_volume_size: size,
    }
}

/// `respot-fleet` in eu-west-1, tagged for the deployment as if an earlier
/// run had left it, admitting `rules`; returns its id.
fn leftover_group(fake: &FakeEc2, rules: Vec<IngressRule>) -> String {
    fake.seed_group(
        "eu-west-1",
        "respot-fleet",
        &[(tag::DEPLOYMENT, DEPLOYMENT)],
        rules,
    )
}

fn rule(protocol: &str, port: i32, sources: &[&str]) -> IngressRule {
    IngressRule {
        protocol: protocol.to_string(),
        from_port: Some(port),
        to_port: Some(port),
        sources: sources.iter().map(|s| s.to_string()).collect(),
    }
}

/// The parameter AWS publishes for al2023 on x86_64.
const AL2023_X86: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
#[tokio::test]
async fn every_launch_asks_for_imdsv2_only_with_one_hop() {
    let fake = FakeEc2::new("eu-west-1");
    // The first pool is empty: the retry in the next pool must ask too.
    fake.script(super::Rule::fail("RunInstances", "InsufficientInstanceCapacity").times(1));
    let aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 1)], Fallback::None);
    aws.launch(&request(1)).await.expect("launch");
    let specs = specs(&fake);
    assert_eq!(specs.len(), 3, "{specs:?}");
    for spec in &specs {
        assert_eq!(
            spec.machine.metadata,
            MetadataOptions {
                tokens_required: true,
                hop_limit: 1
            },
            "{} in {}",
            spec.instance_type,
            spec.zone
        );
    }
}

#[tokio::test]
async fn the_root_volume_is_encrypted_on_the_images_root_device() {
    let fake = FakeEc2::new("eu-west-1");
    fake.add_image(
        "amazon",
        al2023(
            "ami-sda1",
            "2025-06-01T00:00:00.000Z",
            Some("/dev/sda1"),
            Some(30),
        ),
    );
    fake.add_parameter("eu-west-1", AL2023_X86, "ami-sda1");
    let aws = one_region(&fake, "al2023", true);
    aws.launch(&request(1)).await.expect("launch");
    let specs = specs(&fake);
    assert_eq!(specs.len(), 1, "{specs:?}");
    assert_eq!(specs[0].machine.image, "ami-sda1");
    assert_eq!(
        specs[0].machine.root,
        Some(RootVolume {
            device: "/dev/sda1".to_string(),
            size_gib: Some(30),
            encrypted: true,
            volume_type: None,
        })
    );
    assert_eq!(
        fake.calls_of("DescribeImages").len(),
        1,
        "one lookup of the id the SSM parameter named, for its root device"
    );
}

#[tokio::test]
async fn encrypt_volumes_false_leaves_the_root_volume_to_the_image() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = one_region(&fake, "al2023", false);
    aws.launch(&request(1)).await.expect("launch");
    let specs = specs(&fake);
    assert_eq!(specs.len(), 1, "{specs:?}");
    assert_eq!(specs[0].machine.root, None);
    assert!(
        specs[0].machine.metadata.tokens_required,
        "IMDSv2 does not depend on it"
    );
}

#[tokio::test]
async fn a_literal_image_id_is_described_only_to_encrypt_its_root() {
    let cases = [
        (true, vec!["ami-al2023x86".to_string()], Some("/dev/xvda")),
        (false, vec![], None),
    ];
    for (encrypt, want_lookups, want_device) in cases {
        let fake = FakeEc2::new("eu-west-1");
        let aws = one_region(&fake, "ami-al2023x86", encrypt);
        aws.launch(&request(1)).await.expect("launch");
        let lookups: Vec<String> = fake
            .calls_of("DescribeImages")
            .into_iter()
            .map(|(_, detail)| detail)
            .collect();
        assert_eq!(lookups, want_lookups, "encrypt_volumes = {encrypt}");
        let specs = specs(&fake);
        assert_eq!(specs.len(), 1, "{specs:?}");
        assert_eq!(specs[0].machine.image, "ami-al2023x86");
        assert_eq!(
            specs[0].machine.root.as_ref().map(|r| r.device.as_str()),
            want_device,
            "encrypt_volumes = {encrypt}"
        );
    }
}

#[tokio::test]
async fn an_image_without_a_root_device_is_refused_not_launched_unencrypted() {
    let cases = [("alias", "al2023"), ("literal id", "ami-noroot")];
    for (name, image) in cases {
        let fake = FakeEc2::new("eu-west-1");
        fake.add_image(
            "amazon",
            al2023("ami-noroot", "2025-06-01T00:00:00.000Z", None, None),
        );
        fake.add_parameter("eu-west-1", AL2023_X86, "ami-noroot");
        let aws = one_region(&fake, image, true);
        let err = aws.launch(&request(1)).await.expect_err(name);
        let failures = region_failures(&err);
        assert!(
            matches!(
                failures[..],
                [("eu-west-1", ProviderError::NoRootDevice { image, .. })] if image == "ami-noroot"
            ),
            "{name}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("image `ami-noroot` has no root device name"),
            "{name}: {text}"
        );
        assert!(text.contains("aws.encrypt_volumes = false"), "{name}: {text}");
        assert_eq!(fake.calls_of("RunInstances"), [], "{name}: nothing launched");
        assert_eq!(err.exit_status(), ExitStatus::Failure, "{name}");
    }
}

#[tokio::test]
async fn a_group_with_rules_respot_did_not_write_is_reported_with_them() {
    let fake = FakeEc2::new("eu-west-1");
    let group = leftover_group(
        &fake,
        vec![
            rule("tcp", 22, &[CIDR, "0.0.0.0/0"]),
            rule("tcp", 443, &[CIDR]),
            IngressRule {
                protocol: "-1".to_string(),
                from_port: None,
                to_port: None,
                sources: vec!["sg-0other".to_string()],
            },
        ],
    );
    let aws = one_region(&fake, "al2023", true);
    let err = aws.launch(&request(1)).await.expect_err("unexpected rules");
    let failures = region_failures(&err);
    let [(region, ProviderError::UnexpectedIngress { group: id, rules, .. })] = failures[..] else {
        panic!("not one UnexpectedIngress: {err:?}");
    };
    assert_eq!(region, "eu-west-1");
    assert_eq!(*id, group);
    assert_eq!(
        *rules,
        [
            "tcp 22 from 0.0.0.0/0",
            "tcp 443 from 198.51.100.0/24",
            "all traffic from sg-0other"
        ]
    );
    let text = err.to_string();
    for want in [
        group.as_str(),
        "eu-west-1",
        "tcp 22 from 0.0.0.0/0",
        "TCP 22 from 198.51.100.0/24 (ssh.allow_cidr)",
        "revoke-security-group-ingress",
        "respot destroy",
    ] {
        assert!(text.contains(want), "lacks {want:?}: {text}");
    }
    assert_eq!(err.exit_status(), ExitStatus::Failure);
    assert_eq!(fake.calls_of("RunInstances"), [], "nothing launched");
    assert_eq!(
        fake.calls_of("AuthorizeSecurityGroupIngress"),
        [],
        "nothing added"
    );
}

#[tokio::test]
async fn a_group_with_only_respots_rules_is_reused_and_completed() {
    let fake = FakeEc2::new("eu-west-1");
    let group = leftover_group(&fake, vec![rule("tcp", 22, &[CIDR])]);
    let mut aws = one_region(&fake, "al2023", true);
    aws.settings.open_ports = vec![8080];
    aws.launch(&request(1)).await.expect("launch");
    let specs = specs(&fake);
    assert_eq!(specs.len(), 1, "{specs:?}");
    assert_eq!(specs[0].machine.group_id, group, "the existing group is reused");
    assert_eq!(fake.group_names("eu-west-1"), ["respot-fleet"]);
    assert_eq!(
        fake.calls_of("AuthorizeSecurityGroupIngress"),
        [("eu-west-1".to_string(), format!("{group} [8080] {CIDR}"))],
        "only the missing port is added"
    );
}
