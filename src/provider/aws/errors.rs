//! What an EC2 error code means to respot: the one mapping from
//! [`Ec2Error`] to a typed [`ProviderError`], which codes are a pool's
//! capacity (try the next pool), and which are quotas (with the name of the
//! Service Quota to raise).
//!
//! Pure: it classifies errors and never makes a call or decides a retry.

use super::ec2::{Ec2Error, Ec2ErrorKind, Market};
use super::permissions::denied_action;
use crate::provider::ProviderError;

/// Errors of one pool (market × instance type × zone): its capacity, its
/// price, its subnet's free addresses, or a type the zone does not offer.
/// Try the next pool.
const POOL_ERRORS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientAddressCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnOutpost",
    "InsufficientFreeAddressesInSubnet",
    "InsufficientVolumeCapacity",
    "SpotMaxPriceTooLow",
    "Unsupported",
];

/// Errors that mean the credentials are missing, wrong or expired.
const AUTH_ERRORS: &[&str] = &[
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
];

/// IAM denied the call (EC2 says `UnauthorizedOperation`; STS, SSM and
/// others `AccessDenied`).
const DENIED_ERRORS: &[&str] = &[
    "UnauthorizedOperation",
    "Client.UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
];

/// Spot's service-linked role is missing and the caller may not create it.
const SPOT_ROLE_ERRORS: &[&str] = &[
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
    "ServiceLinkedRoleCreationNotPermitted",
];

/// The Service Quotas name and code (`L-...`) to raise.
const SPOT_QUOTA: &str = "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests (L-34B43A08)";
const ON_DEMAND_QUOTA: &str = "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances (L-1216C47A)";

/// Whether `code` says one pool cannot launch, so the next pool may.
pub fn is_pool_error(code: &str) -> bool {
    POOL_ERRORS.contains(&code)
}

/// Whether `err` is one pool's: a code of [`POOL_ERRORS`], or an
/// `InvalidParameterValue` about an instance type the zone does not offer.
pub fn is_pool_answer(err: &Ec2Error) -> bool {
    match err.code() {
        Some("InvalidParameterValue") => {
            let message = err.message().to_ascii_lowercase();
            message.contains("not supported") || message.contains("availability zone")
        }
        Some(code) => is_pool_error(code),
        None => false,
    }
}

/// The fix for credentials that are missing or rejected.
pub fn credentials_hint(profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!(
            "run `aws sso login --profile {p}` if it is an SSO profile, or check profile `{p}` in \
             ~/.aws/config and ~/.aws/credentials"
        ),
        None => "run `aws sso login --profile NAME` and pass `--profile NAME` (or set AWS_PROFILE), \
                 or run `aws configure`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            .to_string(),
    }
}

/// Turns a failed call into ours: credentials problems name the fix,
/// unreachable endpoints name the region, throttling says it outlasted the
/// retries, and every other code is kept raw with EC2's message.
pub fn api_error(region: &str, err: &Ec2Error, hint: &str) -> ProviderError {
    let region = region.to_string();
    let action = err.action.to_string();
    match &err.kind {
        Ec2ErrorKind::Service { code, message } if AUTH_ERRORS.contains(&code.as_str()) => {
            ProviderError::CredentialsRejected {
                region,
                action,
                reason: format!("{code}: {message}"),
                hint: hint.to_string(),
            }
        }
        Ec2ErrorKind::Service { code, .. } if code == "OptInRequired" => ProviderError::RegionNotEnabled {
            region,
            evidence: format!("{action}: {code}"),
        },
        Ec2ErrorKind::Service { code, .. } if SPOT_ROLE_ERRORS.contains(&code.as_str()) => {
            ProviderError::SpotRoleMissing {
                region,
                call: action,
                code: code.clone(),
            }
        }
        Ec2ErrorKind::Service { code, message } if DENIED_ERRORS.contains(&code.as_str()) => {
            ProviderError::NotAuthorized {
                region,
                denied: denied_action(&action, message),
                call: action,
                code: code.clone(),
            }
        }
        Ec2ErrorKind::Service { code, .. } if err.is_throttling() => ProviderError::Throttled {
            region,
            action,
            code: code.clone(),
        },
        Ec2ErrorKind::Service { code, message } => ProviderError::Api {
            region,
            action,
            code: code.clone(),
            message: message.clone(),
        },
        Ec2ErrorKind::Unreachable(detail) => ProviderError::Unreachable {
            region,
            action,
            detail: detail.clone(),
        },
        Ec2ErrorKind::Other(detail) => ProviderError::Request {
            region,
            action,
            detail: detail.clone(),
        },
    }
}

/// `GetCallerIdentity` failing means the credentials do not work, whatever
/// the code; only an unreachable endpoint is a different problem.
pub fn caller_error(region: &str, err: &Ec2Error, hint: &str) -> ProviderError {
    match &err.kind {
        Ec2ErrorKind::Unreachable(_) => api_error(region, err, hint),
        Ec2ErrorKind::Service { code, .. } => ProviderError::CredentialsRejected {
            region: region.to_string(),
            action: format!("STS {}", err.action),
            reason: code.clone(),
            hint: hint.to_string(),
        },
        Ec2ErrorKind::Other(detail) => ProviderError::CredentialsRejected {
            region: region.to_string(),
            action: format!("STS {}", err.action),
            reason: detail.clone(),
            hint: hint.to_string(),
        },
    }
}

/// The typed error for a quota or price code of `RunInstances`, or `None`
/// when `err` is neither. `fallback` says whether on-demand could take over.
pub fn quota_error(
    region: &str,
    err: &Ec2Error,
    market: Market,
    max_price: Option<f64>,
    fallback: bool,
) -> Option<ProviderError> {
    let code = err.code()?;
    let quota = |quota: &'static str, suggest_fallback: bool| ProviderError::Quota {
        region: region.to_string(),
        code: code.to_string(),
        quota,
        market: market.lifecycle(),
        suggest_fallback,
        message: err.message().to_string(),
    };
    match (code, market) {
        ("MaxSpotInstanceCountExceeded", _) => Some(quota(SPOT_QUOTA, !fallback)),
        ("VcpuLimitExceeded" | "InstanceLimitExceeded", Market::Spot) => Some(quota(SPOT_QUOTA, false)),
        ("VcpuLimitExceeded" | "InstanceLimitExceeded", Market::OnDemand) => {
            Some(quota(ON_DEMAND_QUOTA, false))
        }
        ("SpotMaxPriceTooLow", _) => Some(ProviderError::PriceTooLow {
            region: region.to_string(),
            max_price,
            message: format!("{code}: {}", err.message()),
        }),
        _ => None,
    }
}

/// Whether on-demand may take over after `err` stopped spot: the spot
/// request quota is spot-only, while a vCPU limit binds both markets.
pub fn on_demand_may_help(err: &Ec2Error) -> bool {
    matches!(
        err.code(),
        Some("MaxSpotInstanceCountExceeded" | "InstanceLimitExceeded" | "SpotMaxPriceTooLow")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitStatus;
    use crate::provider::Lifecycle;

    fn service(code: &str) -> Ec2Error {
        Ec2Error::service("RunInstances", code, "from EC2")
    }

    #[test]
    fn codes_map_to_typed_errors_and_exit_statuses() {
        // Every one of these is a provider error (exit 3).
        let cases: &[(&str, Ec2Error, &str)] = &[
            ("auth", service("AuthFailure"), "AWS rejected the credentials"),
            ("opt-in", service("OptInRequired"), "not enabled for this account"),
            (
                "iam",
                service("UnauthorizedOperation"),
                "may not perform `ec2:RunInstances`; grant it to the caller: `respot iam-policy`",
            ),
            (
                "iam names the tagging action",
                Ec2Error::service(
                    "RunInstances",
                    "UnauthorizedOperation",
                    "User: arn:aws:iam::1:user/ci is not authorized to perform: ec2:CreateTags on resource: x",
                ),
                "RunInstances was denied (UnauthorizedOperation): the credentials may not perform `ec2:CreateTags`",
            ),
            (
                "ssm access denied",
                Ec2Error::service("GetParameter", "AccessDeniedException", "no"),
                "may not perform `ssm:GetParameter`",
            ),
            (
                "spot role",
                service("AuthFailure.ServiceLinkedRoleCreationNotPermitted"),
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com",
            ),
            (
                "spot role, short code",
                service("ServiceLinkedRoleCreationNotPermitted"),
                "EC2 Spot service-linked role",
            ),
            (
                "throttle",
                service("RequestLimitExceeded"),
                "throttled RunInstances",
            ),
            (
                "unmapped",
                service("InvalidAMIID.NotFound"),
                "InvalidAMIID.NotFound: from EC2",
            ),
            (
                "unreachable",
                Ec2Error {
                    action: "RunInstances",
                    kind: Ec2ErrorKind::Unreachable("connection refused".to_string()),
                },
                "cannot reach the EC2 endpoint",
            ),
        ];
        for (name, err, want) in cases {
            let got = api_error("eu-west-1", err, "HINT");
            let text = got.to_string();
            assert!(text.starts_with("eu-west-1: "), "{name}: {text}");
            assert!(text.contains(want), "{name}: {text}");
            assert_eq!(got.exit_status(), ExitStatus::Provider, "{name}");
        }
        assert!(matches!(
            api_error("eu-west-1", &service("RequestLimitExceeded"), "HINT"),
            ProviderError::Throttled { code, .. } if code == "RequestLimitExceeded"
        ));
    }

    #[test]
    fn quotas_name_the_service_quota() {
        let spot = quota_error(
            "eu-west-1",
            &service("MaxSpotInstanceCountExceeded"),
            Market::Spot,
            None,
            false,
        );
        let Some(ProviderError::Quota {
            quota,
            suggest_fallback,
            ..
        }) = &spot
        else {
            panic!("a quota error: {spot:?}");
        };
        assert_eq!(*quota, SPOT_QUOTA);
        assert!(suggest_fallback);
        let text = spot.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            text.contains("Service Quotas") && text.contains("eu-west-1"),
            "{text}"
        );

        let vcpu = quota_error(
            "eu-west-1",
            &service("VcpuLimitExceeded"),
            Market::OnDemand,
            None,
            true,
        );
        assert!(
            matches!(&vcpu, Some(ProviderError::Quota { quota, market: Lifecycle::OnDemand, .. }) if *quota == ON_DEMAND_QUOTA),
            "{vcpu:?}"
        );
        let price = quota_error(
            "eu-west-1",
            &service("SpotMaxPriceTooLow"),
            Market::Spot,
            Some(0.002),
            false,
        );
        let text = price.map(|p| p.to_string()).unwrap_or_default();
        assert!(text.contains("aws.max_price = 0.002"), "{text}");
        assert!(
            quota_error(
                "eu-west-1",
                &service("InvalidAMIID.NotFound"),
                Market::Spot,
                None,
                false
            )
            .is_none()
        );
    }
}
