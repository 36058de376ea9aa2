//! What `respot.toml` means, checked after serde has checked its shape:
//! ranges, names, regions, images and referenced files. Every refusal names
//! the key and its place in the file.

use std::net::Ipv4Addr;

use super::located::{Located, Seg};
use super::{Config, ConfigError, ProviderKind};
use crate::provider::aws::{image, regions};

impl Config {
    pub(super) fn validate(&self, at: &Located) -> Result<(), ConfigError> {
        let name = &self.deployment.name;
        if !valid_deployment_name(name) {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("name")],
                format!(
                    "expected 1 to 40 characters of [a-z0-9-], not starting or ending with `-`, got `{name}`"
                ),
            ));
        }
        let template = self.template_path();
        if !template.is_file() {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("template")],
                format!("template file `{}` does not exist", template.display()),
            ));
        }
        let instance_dir = self.instance_dir();
        if !instance_dir.is_dir() {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("instance_dir")],
                format!("directory `{}` does not exist", instance_dir.display()),
            ));
        }
        self.validate_ssh(at)?;
        self.validate_aws(at)?;
        self.validate_local(at)?;
        self.validate_verify(at)?;
        self.validate_traffic(at)?;
        self.validate_blueprint_inputs(at)
    }

    fn validate_ssh(&self, at: &Located) -> Result<(), ConfigError> {
        let user = &self.ssh.user;
        if !valid_unix_user(user) || user == "root" {
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("user")],
                format!(
                    "expected a login name of [a-z_][a-z0-9_-]* up to 32 characters, not root, got `{user}`"
                ),
            ));
        }
        if let Some(path) = self.authorized_key_path()
            && !path.is_file()
        {
            let private = path.with_extension("");
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("authorized_key")],
                format!(
                    "public key `{}` does not exist; create it with `ssh-keygen -t ed25519 -f {}`, \
                         or remove the key to log in only through respot's read-only inspector",
                    path.display(),
                    private.display()
                ),
            ));
        }
        if let Some(cidr) = &self.ssh.allow_cidr
            && !valid_ipv4_cidr(cidr)
        {
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("allow_cidr")],
                format!("expected an IPv4 CIDR such as `203.0.113.0/24`, got `{cidr}`"),
            ));
        }
        Ok(())
    }

    fn validate_aws(&self, at: &Located) -> Result<(), ConfigError> {
        let aws = &self.aws;
        let image = &aws.image;
        if !image::is_valid_image(image) {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("image")],
                format!(
                    "expected a literal `ami-...` id or one of {}, got `{image}`",
                    image::quoted_aliases()
                ),
            ));
        }
        if self.deployment.provider == ProviderKind::Aws && aws.regions.is_empty() {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("regions")],
                "`deployment.provider` is \"aws\" but no region is listed; add at least one \
                 `[[aws.regions]]` with `name` and `count`"
                    .to_string(),
            ));
        }
        if aws.instance_types.is_empty() {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("instance_types")],
                "expected at least one instance type, e.g. [\"t3.small\"]".to_string(),
            ));
        }
        for (i, itype) in aws.instance_types.iter().enumerate() {
            if !valid_instance_type(itype) {
                return Err(at.invalid(
                    &[Seg::Key("aws"), Seg::Key("instance_types"), Seg::Index(i)],
                    format!("expected an instance type such as `t3.small`, got `{itype}`"),
                ));
            }
        }
        if let Some(price) = aws.max_price
            && !(price.is_finite() && price > 0.0)
        {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("max_price")],
                format!("expected a price in USD per hour > 0, got {price}"),
            ));
        }
        self.validate_aws_regions(at)?;
        for (i, port) in aws.open_ports.iter().enumerate() {
            if *port == 0 {
                return Err(at.invalid(
                    &[Seg::Key("aws"), Seg::Key("open_ports"), Seg::Index(i)],
                    "expected a TCP port from 1 to 65535, got 0".to_string(),
                ));
            }
        }
        self.validate_aws_launch(at)
    }

    /// Each `[[aws.regions]]` entry: a real region name, listed once, a
    /// count, zones inside it.
    fn validate_aws_regions(&self, at: &Located) -> Result<(), ConfigError> {
        let aws = &self.aws;
        for (i, region) in aws.regions.iter().enumerate() {
            let here =
                |key: &'static str| [Seg::Key("aws"), Seg::Key("regions"), Seg::Index(i), Seg::Key(key)];
            if !regions::valid_region(&region.name) {
                return Err(at.invalid(
                    &here("name"),
                    format!(
                        "expected a region name such as `eu-west-1`, got `{}`",
                        region.name
                    ),
                ));
            }
            if aws.regions[..i].iter().any(|r| r.name == region.name) {
                return Err(at.invalid(
                    &here("name"),
                    format!("region `{}` is listed twice; merge the entries", region.name),
                ));
            }
            if region.count == 0 {
                return Err(at.invalid(&here("count"), "expected an integer >= 1, got 0".to_string()));
            }
            for (z, zone) in region.zones.iter().enumerate() {
                if !zone.starts_with(&region.name) {
                    return Err(at.invalid(
                        &[
                            Seg::Key("aws"),
                            Seg::Key("regions"),
                            Seg::Index(i),
                            Seg::Key("zones"),
                            Seg::Index(z),
                        ],
                        format!("zone `{zone}` is not in region `{}`", region.name),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_local(&self, at: &Located) -> Result<(), ConfigError> {
        let local = &self.local;
        let checks: [(&'static str, u32, u32, u32); 3] = [
            ("count", local.count, 1, 16),
            ("memory_mib", local.memory_mib, 256, 65536),
            ("cpus", local.cpus, 1, 64),
        ];
        for (key, value, min, max) in checks {
            if value < min || value > max {
                return Err(at.invalid(
                    &[Seg::Key("local"), Seg::Key(key)],
                    format!("expected an integer from {min} to {max}, got {value}"),
                ));
            }
        }
        for (i, port) in local.forward_ports.iter().enumerate() {
            if *port == 0 || *port == 22 {
                return Err(at.invalid(
                    &[Seg::Key("local"), Seg::Key("forward_ports"), Seg::Index(i)],
                    format!("expected a guest TCP port other than 22 (SSH is always forwarded), got {port}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_verify(&self, at: &Located) -> Result<(), ConfigError> {
        if self.verify.timeout_secs == 0 {
            return Err(at.invalid(
                &[Seg::Key("verify"), Seg::Key("timeout_secs")],
                "expected an integer >= 1, got 0".to_string(),
            ));
        }
        if self.verify.concurrency == 0 {
            return Err(at.invalid(
                &[Seg::Key("verify"), Seg::Key("concurrency")],
                "expected an integer >= 1 (instances verified at once), got 0".to_string(),
            ));
        }
        for (i, probe) in self.verify.http.iter().enumerate() {
            let here =
                |key: &'static str| [Seg::Key("verify"), Seg::Key("http"), Seg::Index(i), Seg::Key(key)];
            if probe.port == 0 {
                return Err(at.invalid(
                    &here("port"),
                    "expected a TCP port from 1 to 65535, got 0".to_string(),
                ));
            }
            if !valid_probe_path(&probe.path) {
                return Err(at.invalid(
                    &here("path"),
                    format!(
                        "expected an absolute URL path of [A-Za-z0-9/._~-] such as `/health`, got `{}`",
                        probe.path
                    ),
                ));
            }
            if !(100..=599).contains(&probe.expect_status) {
                return Err(at.invalid(
                    &here("expect_status"),
                    format!(
                        "expected an HTTP status from 100 to 599, got {}",
                        probe.expect_status
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub fn valid_deployment_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub(super) fn valid_unix_user(user: &str) -> bool {
    let mut bytes = user.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_lowercase() || first == b'_' => {}
        _ => return false,
    }
    user.len() <= 32 && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_ipv4_cidr(cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return false;
    };
    addr.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

pub(super) fn valid_instance_type(itype: &str) -> bool {
    let Some((family, size)) = itype.split_once('.') else {
        return false;
    };
    !family.is_empty()
        && !size.is_empty()
        && itype
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn valid_probe_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 200
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'~' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cidrs() {
        let cases: &[(&str, bool)] = &[
            ("hello", true),
            ("a", true),
            ("-a", false),
            ("A", false),
            ("a_b", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_deployment_name(name), *want, "deployment name {name:?}");
        }
        let cidrs: &[(&str, bool)] = &[
            ("10.0.0.0/8", true),
            ("0.0.0.0/0", true),
            ("1.2.3.4/33", false),
            ("1.2.3/8", false),
            ("x", false),
        ];
        for (cidr, want) in cidrs {
            assert_eq!(valid_ipv4_cidr(cidr), *want, "cidr {cidr:?}");
        }
    }

    #[test]
    fn volumes_are_encrypted_unless_turned_off() {
        let cases: &[(&str, &str, Option<bool>)] = &[
            ("default", "", Some(true)),
            ("off", "encrypt_volumes = false\n", Some(false)),
            ("on", "encrypt_volumes = true\n", Some(true)),
            ("misspelt", "encrypt_volume = false\n", None),
            ("not a bool", "encrypt_volumes = \"no\"\n", None),
        ];
        for (name, line, want) in cases {
            let text = format!("[deployment]\nname = \"fleet\"\n\n[aws]\n{line}");
            let got = Config::parse(&text, std::path::Path::new("respot.toml"))
                .ok()
                .map(|c| c.aws.encrypt_volumes);
            assert_eq!(got, *want, "{name}");
        }
    }
}
