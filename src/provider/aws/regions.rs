//! AWS region names: the one validator every part of respot uses, and the
//! regions known when this was written.
//!
//! Pure: it judges names and never calls AWS. Telling a new region from a
//! typo takes a `DescribeRegions` call, which `connect` makes only for names
//! outside [`KNOWN_REGIONS`].

/// Regions known when this was written. A configured region outside this
/// list costs one `DescribeRegions` to tell a new region from a typo; one
/// inside it costs nothing.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
];

/// Regions enabled in every account: those that existed before March 2019.
/// Every later region is opt-in: when one rejects the credentials, `optin`
/// asks `DescribeRegions` whether the account has enabled it.
pub const ENABLED_EVERYWHERE: &[&str] = &[
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// Whether every account may use `name` without enabling it first.
pub fn is_enabled_everywhere(name: &str) -> bool {
    ENABLED_EVERYWHERE.contains(&name)
}

/// Whether `name` has the shape of an AWS region: three or more `-`
/// separated parts of `[a-z0-9]`, none empty, the last one a number
/// (`eu-west-1`, `us-gov-west-1`). Shape only: AWS adds regions, so whether
/// it exists is the endpoint's call.
pub fn valid_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether respot knew `name` as a region when it was built.
pub fn is_known(name: &str) -> bool {
    KNOWN_REGIONS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        let cases = [
            ("plain", "eu-west-1", true),
            ("four parts", "us-gov-west-1", true),
            ("two-digit number", "ap-southeast-12", true),
            ("no number", "eu-west", false),
            ("two parts", "eu-1", false),
            ("upper case", "EU-west-1", false),
            ("empty part", "eu--1", false),
            ("leading dash", "-eu-west-1", false),
            ("trailing dash", "eu-west-1-", false),
            ("unknown but well formed", "xx-nowhere-1", true),
            ("underscore", "eu_west-1-1", false),
            ("a zone, not a region", "eu-west-1a", false),
            ("empty", "", false),
        ];
        for (name, input, want) in cases {
            assert_eq!(valid_region(input), want, "{name}: {input:?}");
        }
    }

    #[test]
    fn regions_enabled_everywhere_are_known() {
        for region in ENABLED_EVERYWHERE {
            assert!(is_known(region), "{region}");
        }
        assert!(!is_enabled_everywhere("af-south-1"));
    }

    #[test]
    fn every_known_region_is_valid() {
        for region in KNOWN_REGIONS {
            assert!(valid_region(region), "{region}");
        }
    }
}
