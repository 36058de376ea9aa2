//! Image aliases: the one table of names respot accepts for `aws.image`
//! (besides a literal `ami-...`), and how each resolves to its vendor's
//! current image for the instance types' architecture.
//!
//! An alias resolves through the public SSM parameter its vendor publishes
//! for exactly that image (AWS for Amazon Linux, Debian, Canonical), never
//! through a name pattern that could match another kernel flavour or a
//! look-alike. `config` validates `aws.image` against this table; only
//! `resolve` calls AWS: one `GetParameter` for an alias, one
//! `DescribeImages` by id when the root device is needed (to encrypt it),
//! none for a literal id launched as the image says.

use std::collections::BTreeMap;

use super::ec2::{Ec2Api, EncryptedRoot, Image};
use super::errors::api_error;
use super::{AwsProvider, RegionTarget, per_region};
use crate::provider::{ProviderError, Result};

/// An alias and the SSM parameter naming its vendor's current image.
pub struct ImageAlias {
    pub name: &'static str,
    /// The public parameter, with `{arch}` for the architecture as the
    /// vendor spells it.
    parameter: &'static str,
    /// The vendor's spelling of (x86_64, arm64).
    arch_names: (&'static str, &'static str),
}

/// Every alias, in the order respot lists them.
pub const IMAGE_ALIASES: &[ImageAlias] = &[
    ImageAlias {
        name: "ubuntu-24.04",
        parameter: "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id",
        arch_names: ("amd64", "arm64"),
    },
    ImageAlias {
        name: "ubuntu-22.04",
        parameter: "/aws/service/canonical/ubuntu/server/22.04/stable/current/{arch}/hvm/ebs-gp2/ami-id",
        arch_names: ("amd64", "arm64"),
    },
    ImageAlias {
        name: "debian-12",
        parameter: "/aws/service/debian/release/12/latest/{arch}",
        arch_names: ("amd64", "arm64"),
    },
    ImageAlias {
        name: "al2023",
        parameter: "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}",
        arch_names: ("x86_64", "arm64"),
    },
];

/// The alias names, quoted for a message: `` `ubuntu-24.04`, ... ``.
pub fn quoted_aliases() -> String {
    IMAGE_ALIASES
        .iter()
        .map(|a| format!("`{}`", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `image` is something respot can launch: an `ami-...` id or an alias.
pub fn is_valid_image(image: &str) -> bool {
    image.starts_with("ami-") || IMAGE_ALIASES.iter().any(|a| a.name == image)
}

/// Whether resolving `image` reads an SSM parameter (it is an alias).
pub fn uses_ssm(image: &str) -> bool {
    IMAGE_ALIASES.iter().any(|a| a.name == image)
}

/// Graviton families carry a `g` after the generation digit (t4g, c7gn, m6gd).
pub fn is_graviton(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    match family.find(|c: char| c.is_ascii_digit()) {
        Some(at) => {
            let suffix = family[at..].trim_start_matches(|c: char| c.is_ascii_digit());
            !family[..at].is_empty() && suffix.contains('g')
        }
        None => false,
    }
}

fn arch_of(instance_type: &str) -> &'static str {
    if is_graviton(instance_type) {
        "arm64"
    } else {
        "x86_64"
    }
}

/// The CPU architecture (`x86_64` or `arm64`) of the instance types, which
/// must agree: one image serves every pool.
pub fn architecture(instance_types: &[String]) -> Result<&'static str> {
    let Some(first) = instance_types.first() else {
        return Ok("x86_64");
    };
    let first_arch = arch_of(first);
    match instance_types.iter().find(|t| arch_of(t) != first_arch) {
        Some(other) => Err(ProviderError::MixedArchitectures {
            first: first.clone(),
            first_arch,
            other: other.clone(),
            other_arch: arch_of(other),
        }),
        None => Ok(first_arch),
    }
}

/// What a region launches: the AMI id and, when volumes are encrypted,
/// the root volume to encrypt.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchImage {
    pub id: String,
    pub encrypted_root: Option<EncryptedRoot>,
}

/// The image of `image` in `ec2`'s region: a literal `ami-...` as is, an
/// alias as its vendor's current image for the instance types'
/// architecture. With `encrypt`, its root device comes along; an image
/// without one is refused rather than launched unencrypted.
pub async fn resolve(
    ec2: &impl Ec2Api,
    image: &str,
    instance_types: &[String],
    encrypt: bool,
    hint: &str,
) -> Result<LaunchImage> {
    let region = ec2.region();
    let id = if image.starts_with("ami-") {
        image.to_string()
    } else {
        alias_image_id(ec2, image, instance_types, hint).await?
    };
    if !encrypt {
        return Ok(LaunchImage {
            id,
            encrypted_root: None,
        });
    }
    let described: Image = ec2
        .describe_image(&id)
        .await
        .map_err(|err| api_error(region, &err, hint))?;
    match described.root_device {
        Some(device) => Ok(LaunchImage {
            id: described.id,
            encrypted_root: Some(EncryptedRoot {
                device,
                size_gib: described.root_volume_size,
            }),
        }),
        None => Err(ProviderError::NoRootDevice {
            region: region.to_string(),
            image: described.id,
        }),
    }
}

/// The SSM parameter of `alias` for `arch` (`x86_64` or `arm64`).
fn parameter_of(alias: &ImageAlias, arch: &str) -> String {
    let vendor_arch = if arch == "arm64" {
        alias.arch_names.1
    } else {
        alias.arch_names.0
    };
    alias.parameter.replace("{arch}", vendor_arch)
}

/// The AMI id the vendor's parameter names for the alias `image`.
async fn alias_image_id(
    ec2: &impl Ec2Api,
    image: &str,
    instance_types: &[String],
    hint: &str,
) -> Result<String> {
    let arch = architecture(instance_types)?;
    let Some(alias) = IMAGE_ALIASES.iter().find(|a| a.name == image) else {
        return Err(ProviderError::UnknownImage {
            alias: image.to_string(),
            known: quoted_aliases(),
        });
    };
    let parameter = parameter_of(alias, arch);
    let value = ec2
        .ssm_parameter(&parameter)
        .await
        .map_err(|err| api_error(ec2.region(), &err, hint))?;
    match value {
        Some(id) if id.starts_with("ami-") => Ok(id),
        _ => Err(ProviderError::NoImage {
            region: ec2.region().to_string(),
            alias: image.to_string(),
            parameter,
        }),
    }
}

impl<E: Ec2Api> AwsProvider<E> {
    /// The image `launch` uses in `target`'s region, resolved once per
    /// region and run: `plan` and `create` show what launches, and the
    /// launch uses exactly that.
    pub(super) async fn launch_image(&self, target: &RegionTarget<E>) -> Result<LaunchImage> {
        let cached = self.images_resolved().get(&target.name).cloned();
        if let Some(image) = cached {
            return Ok(image);
        }
        let image = resolve(
            &target.ec2,
            &self.settings.image,
            &target.instance_types,
            // A root volume of another size or type is described like an
            // encrypted one: from the image's own block device mapping.
            self.settings.encrypt_volumes
                || self.settings.launch.root_volume_gb.is_some()
                || self.settings.launch.volume_type.is_some(),
            &self.credentials_hint,
        )
        .await?;
        self.images_resolved().insert(target.name.clone(), image.clone());
        Ok(image)
    }

    fn images_resolved(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LaunchImage>> {
        self.images
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The AMI id per launching region (`aws.image` and what it resolved
    /// to), all regions at once; one failure fails the whole answer.
    pub async fn resolve_images(&self) -> Result<Vec<(String, String)>> {
        let launching: Vec<RegionTarget<E>> = self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        let results = per_region(launching, |target| async move {
            self.launch_image(&target).await.map(|image| image.id)
        })
        .await;
        let names: Vec<String> = results.iter().map(|(name, _)| name.clone()).collect();
        let ids = super::gather("resolve the image", results)?;
        Ok(names.into_iter().zip(ids).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeEc2, Rule};
    use super::*;

    #[test]
    fn graviton_detection() {
        let cases = [
            ("t3.small", false),
            ("t4g.small", true),
            ("c7gn.large", true),
            ("m6gd.xlarge", true),
            ("g5.xlarge", false),
            ("g4dn.xlarge", false),
            ("m7i.large", false),
        ];
        for (itype, want) in cases {
            assert_eq!(is_graviton(itype), want, "{itype}");
        }
    }

    #[test]
    fn images_are_ids_or_aliases() {
        let cases = [
            ("literal id", "ami-0123456789abcdef0", true),
            ("alias", "al2023", true),
            ("ubuntu", "ubuntu-24.04", true),
            ("debian", "debian-12", true),
            ("unknown alias", "debian-11", false),
            ("empty", "", false),
        ];
        for (name, image, want) in cases {
            assert_eq!(is_valid_image(image), want, "{name}: {image}");
        }
    }

    #[test]
    fn one_architecture_per_fleet() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            architecture(&types(&["t3.small", "t3a.small"])).ok(),
            Some("x86_64")
        );
        assert_eq!(architecture(&types(&["t4g.small"])).ok(), Some("arm64"));
        assert!(matches!(
            architecture(&types(&["t3.small", "t4g.small"])),
            Err(ProviderError::MixedArchitectures { other, other_arch: "arm64", .. }) if other == "t4g.small"
        ));
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aliases_resolve_through_their_vendors_ssm_parameters() {
        let fake = FakeEc2::new("eu-west-1");
        let cases = [
            (
                "al2023",
                &["t3.small"][..],
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
            ),
            (
                "al2023",
                &["t4g.small"][..],
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
            ),
            (
                "debian-12",
                &["t3.small"][..],
                "/aws/service/debian/release/12/latest/amd64",
            ),
            (
                "debian-12",
                &["c7g.large"][..],
                "/aws/service/debian/release/12/latest/arm64",
            ),
            (
                "ubuntu-24.04",
                &["t3.small"][..],
                "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
            ),
            (
                "ubuntu-24.04",
                &["m7g.medium"][..],
                "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
            ),
            (
                "ubuntu-22.04",
                &["t3.small"][..],
                "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
            ),
        ];
        for (i, (alias, itypes, parameter)) in cases.iter().enumerate() {
            let id = format!("ami-{i:04}");
            fake.add_parameter("eu-west-1", parameter, &id);
            let got = block_on(resolve(&fake, alias, &types(itypes), false, "HINT"));
            assert_eq!(
                got.map(|image| image.id).ok().as_deref(),
                Some(id.as_str()),
                "{alias} {itypes:?}"
            );
            let asked = fake.calls_of("GetParameter");
            assert_eq!(asked.last().map(|(_, p)| p.as_str()), Some(*parameter), "{alias}");
        }
        // A literal id costs nothing when nothing is encrypted.
        let before = fake.calls().len();
        let literal = block_on(resolve(&fake, "ami-0abc", &types(&["t3.small"]), false, "HINT"));
        assert_eq!(literal.map(|i| i.id).ok().as_deref(), Some("ami-0abc"));
        assert_eq!(fake.calls().len(), before);
    }

    #[test]
    fn an_encrypted_launch_reads_the_root_device_of_the_resolved_image() {
        let fake = FakeEc2::new("eu-west-1");
        fake.add_parameter(
            "eu-west-1",
            "/aws/service/debian/release/12/latest/amd64",
            "ami-deb12",
        );
        fake.add_image(
            "136693071363",
            Image {
                id: "ami-deb12".to_string(),
                name: "debian-12-amd64-20250101".to_string(),
                creation_date: "2025-01-01T00:00:00.000Z".to_string(),
                architecture: Some("x86_64".to_string()),
                root_device: Some("/dev/xvda".to_string()),
                root_volume_size: Some(8),
            },
        );
        let image = block_on(resolve(&fake, "debian-12", &types(&["t3.small"]), true, "HINT")).unwrap();
        assert_eq!(image.id, "ami-deb12");
        assert_eq!(
            image.encrypted_root,
            Some(EncryptedRoot {
                device: "/dev/xvda".to_string(),
                size_gib: Some(8)
            })
        );
    }

    #[test]
    fn a_missing_parameter_names_the_region_and_the_parameter() {
        let fake = FakeEc2::new("ap-south-2");
        let err = block_on(resolve(
            &fake,
            "ubuntu-24.04",
            &types(&["t3.small"]),
            false,
            "HINT",
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("ap-south-2: ")
                && text.contains("/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64"),
            "{text}"
        );
        fake.script(Rule::fail("GetParameter", "AccessDeniedException"));
        let err = block_on(resolve(&fake, "al2023", &types(&["t3.small"]), false, "HINT")).unwrap_err();
        assert!(err.to_string().contains("`ssm:GetParameter`"), "{err}");
    }
}
