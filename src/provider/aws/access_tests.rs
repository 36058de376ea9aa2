//! Shared setup for the unit tests of access concerns (the deployment
//! lock, images by SSM parameter, permissions and opt-in regions) on the
//! scripted fake.

use super::AwsProvider;
use super::fake::FakeEc2;
use crate::config::Fallback;

/// A provider over `fake` with `regions` (name, count) and `image`.
pub fn provider_with_image(fake: &FakeEc2, regions: &[(&str, u32)], image: &str) -> AwsProvider<FakeEc2> {
    let mut settings = super::tests::settings(regions, Fallback::None);
    settings.image = image.to_string();
    settings.instance_types = vec!["t3.small".to_string()];
    settings.max_price = None;
    super::tests::over_fake(fake, regions, settings)
}

/// The same with `al2023`.
pub fn provider_with(fake: &FakeEc2, regions: &[(&str, u32)]) -> AwsProvider<FakeEc2> {
    provider_with_image(fake, regions, "al2023")
}

mod regions {
    use super::super::fake::{FakeEc2, Rule};
    use super::provider_with;
    use crate::exit::ExitStatus;
    use crate::provider::{Provider, ProviderError};

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    /// The error of each failed region of a multi-region failure.
    fn failures(err: &ProviderError) -> Vec<&ProviderError> {
        match err {
            ProviderError::Regions { failures, .. } => failures.iter().map(|f| &f.error).collect(),
            other => vec![other],
        }
    }

    #[test]
    fn an_opt_in_region_not_enabled_is_named_as_such_not_as_bad_credentials() {
        let fake = FakeEc2::new("eu-west-1");
        fake.disable_region("af-south-1");
        // What AWS answers in a region the account has not enabled.
        fake.script(Rule::fail("DescribeInstances", "AuthFailure").in_region("af-south-1"));
        let provider = provider_with(&fake, &[("eu-west-1", 1), ("af-south-1", 1)]);
        let err = block_on(provider.list("web")).unwrap_err();
        let got = failures(&err);
        assert!(
            matches!(got[..], [ProviderError::RegionNotEnabled { region, .. }] if region == "af-south-1"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("af-south-1: the region is not enabled for this account")
                && text.contains("not-opted-in")
                && text.contains("aws account enable-region --region-name af-south-1"),
            "{text}"
        );
        assert_eq!(err.exit_status(), ExitStatus::Provider);
        assert_eq!(
            fake.calls_of("DescribeRegions").len(),
            1,
            "asked once, of eu-west-1"
        );
    }

    #[test]
    fn a_rejection_in_an_enabled_region_stays_a_credentials_error() {
        let fake = FakeEc2::new("eu-west-1");
        fake.script(Rule::fail("DescribeInstances", "AuthFailure").in_region("af-south-1"));
        let provider = provider_with(&fake, &[("af-south-1", 1)]);
        let err = block_on(provider.list("web")).unwrap_err();
        assert!(
            matches!(failures(&err)[..], [ProviderError::CredentialsRejected { .. }]),
            "{err:?}"
        );
        // A region every account has is never looked up.
        let fake = FakeEc2::new("eu-west-1");
        fake.script(Rule::fail("DescribeInstances", "AuthFailure"));
        let provider = provider_with(&fake, &[("eu-west-1", 1)]);
        let err = block_on(provider.list("web")).unwrap_err();
        assert!(
            matches!(failures(&err)[..], [ProviderError::CredentialsRejected { .. }]),
            "{err:?}"
        );
        assert!(fake.calls_of("DescribeRegions").is_empty());
    }
}

mod denied {
    use super::super::fake::{FakeEc2, Rule};
    use super::provider_with;
    use crate::exit::ExitStatus;
    use crate::provider::{LaunchRequest, Provider, ProviderError};
    use crate::template::{Digest, UserData};

    fn request() -> LaunchRequest {
        LaunchRequest {
            deployment: "web".to_string(),
            digest: Digest::parse(&"ab".repeat(32)).expect("64 hex chars"),
            version: "test".to_string(),
            generation: 1,
            user_data: UserData {
                document: "#cloud-config\n".to_string(),
                packed: b"#cloud-config\n".to_vec(),
                gzipped: false,
            },
            signer: None,
            upto: None,
            bundle: None,
        }
    }

    /// The one failure of a one-region launch.
    fn launch_error(fake: &FakeEc2) -> ProviderError {
        let provider = provider_with(fake, &[("eu-west-1", 1)]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        match runtime.block_on(provider.launch(&request())) {
            Err(ProviderError::Regions { mut failures, .. }) if failures.len() == 1 => {
                failures.remove(0).error
            }
            other => panic!("want one region's failure, got {other:?}"),
        }
    }

    #[test]
    fn each_denial_code_of_a_launch_goes_down_its_path() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "RunInstances",
                "UnauthorizedOperation",
                "may not perform `ec2:RunInstances`",
            ),
            (
                "CreateSecurityGroup",
                "UnauthorizedOperation",
                "may not perform `ec2:CreateSecurityGroup`",
            ),
            (
                "GetParameter",
                "AccessDeniedException",
                "may not perform `ssm:GetParameter`",
            ),
            (
                "RunInstances",
                "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com",
            ),
            (
                "RunInstances",
                "ServiceLinkedRoleCreationNotPermitted",
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com",
            ),
            (
                "RunInstances",
                "OptInRequired",
                "the region is not enabled for this account",
            ),
        ];
        for (action, code, want) in cases {
            let fake = FakeEc2::new("eu-west-1");
            fake.script(Rule::fail(action, code));
            let err = launch_error(&fake);
            let text = err.to_string();
            assert!(text.contains(want), "{action} {code}: {text}");
            assert_eq!(err.exit_status(), ExitStatus::Provider, "{action} {code}");
            if matches!(err, ProviderError::NotAuthorized { .. }) {
                assert!(text.contains("respot iam-policy"), "{action} {code}: {text}");
            }
            assert!(fake.live().is_empty(), "{action} {code}: nothing launched");
        }
    }
}
