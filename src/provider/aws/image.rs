//! Image aliases: the one table of names respot accepts for `aws.image`
//! (besides a literal `ami-...`), and how each resolves to the newest
//! official AMI of the instance types' architecture.
//!
//! `config` validates `aws.image` against this table; only `resolve` calls
//! AWS: one `DescribeImages`, by name for an alias, by id for a literal id
//! whose root device is needed (to encrypt it), none otherwise.

use super::ec2::{Ec2Api, EncryptedRoot, Image};
use super::errors::api_error;
use crate::provider::{ProviderError, Result};

/// An alias and where its official images come from.
pub struct ImageAlias {
    pub name: &'static str,
    /// The AMI owner (an account id, or `amazon`).
    owner: &'static str,
    /// The AMI name, with `{arch}` for the architecture as the vendor
    /// spells it.
    pattern: &'static str,
    /// The vendor's spelling of (x86_64, arm64).
    arch_names: (&'static str, &'static str),
}

const CANONICAL: &str = "099720109477";

/// Every alias, in the order respot lists them.
pub const IMAGE_ALIASES: &[ImageAlias] = &[
    ImageAlias {
        name: "ubuntu-24.04",
        owner: CANONICAL,
        pattern: "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-{arch}-server-*",
        arch_names: ("amd64", "arm64"),
    },
    ImageAlias {
        name: "ubuntu-22.04",
        owner: CANONICAL,
        pattern: "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-{arch}-server-*",
        arch_names: ("amd64", "arm64"),
    },
    ImageAlias {
        name: "al2023",
        owner: "amazon",
        pattern: "al2023-ami-2023*-kernel-*-{arch}",
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
/// alias as the newest official image for the instance types'
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
    let described = if image.starts_with("ami-") {
        if !encrypt {
            return Ok(LaunchImage {
                id: image.to_string(),
                encrypted_root: None,
            });
        }
        ec2.describe_image(image)
            .await
            .map_err(|err| api_error(region, &err, hint))?
    } else {
        newest_of_alias(ec2, image, instance_types, hint).await?
    };
    let encrypted_root = match (encrypt, &described.root_device) {
        (false, _) => None,
        (true, Some(device)) => Some(EncryptedRoot {
            device: device.clone(),
            size_gib: described.root_volume_size,
        }),
        (true, None) => {
            return Err(ProviderError::NoRootDevice {
                region: region.to_string(),
                image: described.id,
            });
        }
    };
    Ok(LaunchImage {
        id: described.id,
        encrypted_root,
    })
}

/// The newest official image of the alias `image`.
async fn newest_of_alias(
    ec2: &impl Ec2Api,
    image: &str,
    instance_types: &[String],
    hint: &str,
) -> Result<Image> {
    let arch = architecture(instance_types)?;
    let Some(alias) = IMAGE_ALIASES.iter().find(|a| a.name == image) else {
        return Err(ProviderError::UnknownImage {
            alias: image.to_string(),
            known: quoted_aliases(),
        });
    };
    let vendor_arch = if arch == "arm64" {
        alias.arch_names.1
    } else {
        alias.arch_names.0
    };
    let pattern = alias.pattern.replace("{arch}", vendor_arch);
    let images = ec2
        .describe_images(alias.owner, &pattern)
        .await
        .map_err(|err| api_error(ec2.region(), &err, hint))?;
    newest(&images, arch)
        .cloned()
        .ok_or_else(|| ProviderError::NoImage {
            region: ec2.region().to_string(),
            alias: image.to_string(),
            owner: alias.owner.to_string(),
            pattern,
        })
}

/// Newest first; images published together tie on CreationDate, and then
/// the later name (e.g. the newer kernel) wins.
fn newest<'a>(images: &'a [Image], arch: &str) -> Option<&'a Image> {
    images
        .iter()
        .filter(|i| i.architecture.as_deref().is_none_or(|a| a == arch))
        .max_by(|a, b| (&a.creation_date, &a.name, &a.id).cmp(&(&b.creation_date, &b.name, &b.id)))
}

#[cfg(test)]
mod tests {
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
            ("unknown alias", "debian-12", false),
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

    #[test]
    fn the_newest_image_of_the_architecture_wins() {
        let image = |id: &str, date: &str, name: &str, arch: &str| Image {
            id: id.to_string(),
            name: name.to_string(),
            creation_date: date.to_string(),
            architecture: Some(arch.to_string()),
            root_device: Some("/dev/xvda".to_string()),
            root_volume_size: Some(8),
        };
        let images = [
            image("ami-old", "2024-01-01", "al2023-kernel-6.1", "x86_64"),
            image("ami-arm", "2025-06-01", "al2023-kernel-6.12", "arm64"),
            image("ami-tie-a", "2025-05-01", "al2023-kernel-6.1", "x86_64"),
            image("ami-tie-b", "2025-05-01", "al2023-kernel-6.12", "x86_64"),
        ];
        let id = |arch: &str, images: &[Image]| newest(images, arch).map(|i| i.id.clone());
        assert_eq!(id("x86_64", &images).as_deref(), Some("ami-tie-b"));
        assert_eq!(id("arm64", &images).as_deref(), Some("ami-arm"));
        assert_eq!(id("x86_64", &images[..0]), None);
    }
}
