//! The launch settings of `[aws]` (issue 11 item 7): per-region instance
//! types, the root volume, extra tags and the instance profile, checked
//! after serde. Every refusal names the key and its place in the file.

use serde::{Deserialize, Serialize};

use super::located::{Located, Seg};
use super::{Config, ConfigError};

/// How `create` spreads a region's count over its pools (instance type ×
/// zone), `aws.allocation`. serde refuses any other value with
/// file:line:key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// One `RunInstances` per pool, in configured order (types, then
    /// zones), each taking what it holds and carrying the rest on.
    #[default]
    Ordered,
    /// One `CreateFleet` (type `instant`) per region over every pool, with
    /// AWS's price-capacity-optimized spot allocation strategy.
    PriceCapacityOptimized,
}

impl Allocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Ordered => "ordered",
            Allocation::PriceCapacityOptimized => "price-capacity-optimized",
        }
    }
}

/// EBS volume types a root volume can have.
const VOLUME_TYPES: &[&str] = &["gp3", "gp2", "io2", "io1", "st1", "sc1", "standard"];

/// Tag keys respot writes itself or AWS reserves.
const RESERVED_PREFIXES: &[&str] = &["respot:", "aws:"];

/// EC2 allows 50 tags per resource; respot writes 8 of its own.
const MAX_USER_TAGS: usize = 40;

impl Config {
    pub(super) fn validate_aws_launch(&self, at: &Located) -> Result<(), ConfigError> {
        let aws = &self.aws;
        for (i, region) in aws.regions.iter().enumerate() {
            let Some(types) = &region.instance_types else {
                continue;
            };
            let here = [
                Seg::Key("aws"),
                Seg::Key("regions"),
                Seg::Index(i),
                Seg::Key("instance_types"),
            ];
            if types.is_empty() {
                return Err(at.invalid(
                    &here,
                    "expected at least one instance type, or no key to use `aws.instance_types`".to_string(),
                ));
            }
            for (t, itype) in types.iter().enumerate() {
                if !super::validate::valid_instance_type(itype) {
                    let mut path = here.to_vec();
                    path.push(Seg::Index(t));
                    return Err(at.invalid(
                        &path,
                        format!("expected an instance type such as `t3.small`, got `{itype}`"),
                    ));
                }
            }
        }
        if let Some(size) = aws.root_volume_gb
            && !(1..=16_384).contains(&size)
        {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("root_volume_gb")],
                format!("expected a size in GiB from 1 to 16384, got {size}"),
            ));
        }
        if let Some(kind) = &aws.volume_type
            && !VOLUME_TYPES.contains(&kind.as_str())
        {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("volume_type")],
                format!("expected one of {}, got `{kind}`", VOLUME_TYPES.join(", ")),
            ));
        }
        self.validate_tags(at)?;
        if let Some(profile) = &aws.instance_profile
            && !valid_instance_profile(profile)
        {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("instance_profile")],
                format!(
                    "expected an instance profile name ([A-Za-z0-9+=,.@_-], up to 128 characters) or an \
                     `arn:aws:iam::ACCOUNT:instance-profile/NAME`, got `{profile}`"
                ),
            ));
        }
        Ok(())
    }

    fn validate_tags(&self, at: &Located) -> Result<(), ConfigError> {
        let tags = &self.aws.tags;
        if tags.len() > MAX_USER_TAGS {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("tags")],
                format!(
                    "at most {MAX_USER_TAGS} tags (EC2 allows 50 per resource, respot writes 8), got {}",
                    tags.len()
                ),
            ));
        }
        for (key, value) in tags {
            let here = [Seg::Key("aws"), Seg::Key("tags"), Seg::Key(key)];
            if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| key.starts_with(*p)) {
                return Err(at.invalid(
                    &here,
                    format!(
                        "tag `{key}` is reserved: respot writes the `respot:` tags that say what an \
                         instance is, and AWS owns `aws:`; a tag may not start with `{prefix}`"
                    ),
                ));
            }
            if key == crate::provider::tag::NAME {
                return Err(at.invalid(
                    &here,
                    "respot names every instance `respot-<deployment>-g<generation>`; \
                     use another key"
                        .to_string(),
                ));
            }
            if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
                return Err(at.invalid(
                    &here,
                    "expected a key of 1 to 128 characters and a value of at most 256".to_string(),
                ));
            }
        }
        Ok(())
    }
}

fn valid_instance_profile(profile: &str) -> bool {
    let name = match profile.strip_prefix("arn:") {
        Some(rest) => match rest.split_once(":instance-profile/") {
            Some((head, name)) if head.contains(":iam::") => name.rsplit('/').next().unwrap_or_default(),
            _ => return false,
        },
        None => profile,
    };
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(aws: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("templates")).expect("templates");
        std::fs::create_dir_all(dir.path().join("instance")).expect("instance");
        std::fs::write(dir.path().join("templates/cloud-init.yaml"), "#cloud-config\n").expect("template");
        let text = format!(
            "[deployment]\nname = \"fleet\"\nprovider = \"aws\"\n\n[aws]\n{aws}\n\n\
             [[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n"
        );
        let path = dir.path().join("respot.toml");
        std::fs::write(&path, &text).expect("respot.toml");
        Config::load(&path).map_err(|e| {
            let text = e.to_string();
            text.split_once("respot.toml")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(text)
        })
    }

    #[test]
    fn launch_settings_load_and_bad_ones_name_their_key() {
        let ok = load(
            "root_volume_gb = 30\nvolume_type = \"gp3\"\ninstance_profile = \"app\"\npublic_ip = false\n\
             tags = { team = \"edge\", \"cost-center\" = \"42\" }",
        )
        .expect("valid launch settings");
        assert_eq!(ok.aws.root_volume_gb, Some(30));
        assert_eq!(ok.aws.volume_type.as_deref(), Some("gp3"));
        assert!(!ok.aws.public_ip);
        assert_eq!(ok.aws.tags.get("team").map(String::as_str), Some("edge"));
        let cases = [
            (
                "respot tag",
                "tags = { \"respot:digest\" = \"x\" }",
                ":6:28: aws.tags.respot:digest: tag `respot:digest` is reserved",
            ),
            (
                "aws tag",
                "[aws.tags]\n\"aws:x\" = \"y\"",
                ":7:11: aws.tags.aws:x: tag `aws:x` is reserved",
            ),
            (
                "Name",
                "tags = { Name = \"x\" }",
                "aws.tags.Name: respot names every instance",
            ),
            (
                "size",
                "root_volume_gb = 0",
                ":6:18: aws.root_volume_gb: expected a size",
            ),
            (
                "type",
                "volume_type = \"ssd\"",
                "aws.volume_type: expected one of gp3",
            ),
            (
                "profile",
                "instance_profile = \"a b\"",
                "aws.instance_profile: expected an instance profile",
            ),
        ];
        for (name, aws, want) in cases {
            let err = load(aws).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
        }
        assert!(load("instance_profile = \"arn:aws:iam::123456789012:instance-profile/path/app\"").is_ok());
    }

    #[test]
    fn allocation_loads_and_a_bad_one_names_its_key() {
        assert_eq!(load("").expect("default").aws.allocation, Allocation::Ordered);
        let pco = load("allocation = \"price-capacity-optimized\"").expect("pco");
        assert_eq!(pco.aws.allocation, Allocation::PriceCapacityOptimized);
        assert_eq!(pco.aws.allocation.as_str(), "price-capacity-optimized");
        let err = load("allocation = \"lowest-price\"").expect_err("unknown strategy");
        assert!(
            err.contains(":6:14: aws.allocation: unknown variant `lowest-price`, expected `ordered` or `price-capacity-optimized`"),
            "{err}"
        );
    }

    #[test]
    fn per_region_instance_types_are_checked() {
        let dir_err = load("").map(|c| c.aws.regions[0].instance_types.clone());
        assert_eq!(dir_err.ok(), Some(None));
        let types = "instance_types = [\"t3.small\"]";
        let base = load(types).expect("types");
        assert_eq!(base.aws.instance_types, ["t3.small"]);
        let region_types =
            "[[aws.regions]]\nname = \"us-east-1\"\ncount = 1\ninstance_types = [\"m5.large\", \"bad\"]";
        let err = load(region_types).expect_err("bad region type");
        assert!(
            err.contains("aws.regions[0].instance_types[1]: expected an instance type"),
            "{err}"
        );
    }
}
