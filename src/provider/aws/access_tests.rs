//! Shared setup for the unit tests of access concerns (the deployment
//! lock, images by SSM parameter, permissions and opt-in regions) on the
//! scripted fake.

use std::time::Duration;

use super::fake::FakeEc2;
use super::{AwsProvider, Settings, Waits};
use crate::config::{Fallback, RegionSection};

/// A provider over `fake` with `regions` (name, count) and `image`.
pub fn provider_with_image(fake: &FakeEc2, regions: &[(&str, u32)], image: &str) -> AwsProvider<FakeEc2> {
    let settings = Settings {
        image: image.to_string(),
        instance_types: vec!["t3.small".to_string()],
        max_price: None,
        fallback: Fallback::None,
        open_ports: Vec::new(),
        allow_cidr: Some("198.51.100.0/24".to_string()),
        encrypt_volumes: true,
        regions: regions
            .iter()
            .map(|(name, count)| RegionSection {
                name: name.to_string(),
                count: *count,
                zones: Vec::new(),
            })
            .collect(),
    };
    let names: Vec<String> = regions.iter().map(|(name, _)| name.to_string()).collect();
    let mut provider = AwsProvider::with_api(fake.clone(), &names, settings, "HINT".to_string());
    provider.waits = Waits {
        running: Duration::from_secs(5),
        terminated: Duration::from_secs(5),
        group_delete: Duration::from_secs(5),
        pause: Duration::ZERO,
    };
    provider
}

/// The same with `al2023`.
pub fn provider_with(fake: &FakeEc2, regions: &[(&str, u32)]) -> AwsProvider<FakeEc2> {
    provider_with_image(fake, regions, "al2023")
}

mod regions {
    use super::super::connect::check_regions;
    use super::super::fake::FakeEc2;
    use crate::exit::ExitStatus;
    use crate::provider::ProviderError;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_opt_in_region_not_enabled_is_named_as_such_not_as_bad_credentials() {
        let fake = FakeEc2::new("eu-west-1");
        fake.disable_region("af-south-1");
        let err = block_on(check_regions(&fake, &names(&["eu-west-1", "af-south-1"]), "HINT")).unwrap_err();
        assert!(
            matches!(&err, ProviderError::RegionNotEnabled { region, .. } if region == "af-south-1"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not enabled for this account")
                && text.contains("not-opted-in")
                && text.contains("aws account enable-region --region-name af-south-1")
                && !text.contains("credentials"),
            "{text}"
        );
        assert_eq!(err.exit_status(), ExitStatus::Provider);
        assert_eq!(fake.calls_of("DescribeRegions").len(), 1);
    }

    #[test]
    fn an_enabled_opt_in_region_passes_and_default_regions_cost_nothing() {
        let fake = FakeEc2::new("eu-west-1");
        fake.disable_region("me-south-1");
        block_on(check_regions(&fake, &names(&["eu-west-1", "us-east-1"]), "HINT")).unwrap();
        assert!(fake.calls().is_empty());
        // af-south-1 is opt-in and, here, enabled: one DescribeRegions says so.
        let enabled = FakeEc2::new("eu-west-1");
        block_on(check_regions(&enabled, &names(&["af-south-1"]), "HINT")).unwrap();
        assert_eq!(enabled.calls_of("DescribeRegions").len(), 1);
    }
}
