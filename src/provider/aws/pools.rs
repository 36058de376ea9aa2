//! Launch pools: the places a region's batch can launch (market ×
//! instance type × zone) in the order to try them, and what one
//! `RunInstances` answer means for the next step.
//!
//! Pure: the order and the verdicts are functions of their input; the
//! calls are made by `launch`.

use super::ec2::{Ec2Result, Market, Subnet};
use super::errors::{api_error, is_pool_answer, on_demand_may_help, quota_error};
use crate::config::Fallback;
use crate::provider::ProviderError;

/// One place a batch can launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool<'a> {
    pub market: Market,
    pub instance_type: &'a str,
    pub zone: &'a str,
    pub subnet: &'a str,
}

/// Every pool in the order to try: spot first (then on-demand, with
/// `aws.fallback = "on-demand"`), instance types in configured order, and
/// for each type every zone.
pub fn pools<'a>(
    fallback: Fallback,
    instance_types: &'a [String],
    subnets: &'a [Subnet],
) -> impl Iterator<Item = Pool<'a>> + 'a {
    let markets: &[Market] = match fallback {
        Fallback::None => &[Market::Spot],
        Fallback::OnDemand => &[Market::Spot, Market::OnDemand],
    };
    markets.iter().flat_map(move |market| {
        instance_types.iter().flat_map(move |itype| {
            subnets.iter().map(move |subnet| Pool {
                market: *market,
                instance_type: itype,
                zone: &subnet.zone,
                subnet: &subnet.id,
            })
        })
    })
}

/// What one pool's `RunInstances` means.
#[derive(Debug)]
pub enum PoolOutcome {
    /// These instances launched: all that were asked for, or as many as
    /// the pool held (MinCount = 1); the rest goes to the next pool.
    Launched(Vec<String>),
    /// The pool cannot launch (the code: capacity, price, addresses, a
    /// type the zone does not offer): try the next one.
    NoCapacity(String),
    /// A spot-only quota stopped spot (the code): move on to the on-demand
    /// pools.
    FallBack(String),
    /// Stop the region's launch: a quota of the region (named with its
    /// Service Quotas code) or an error no other pool can change.
    Fatal(ProviderError),
}

/// The launch settings that decide what an error means.
#[derive(Debug, Clone, Copy)]
pub struct Verdicts<'a> {
    pub region: &'a str,
    pub fallback: Fallback,
    pub max_price: Option<f64>,
    pub credentials_hint: &'a str,
}

impl Verdicts<'_> {
    pub fn outcome(&self, pool: &Pool, answer: Ec2Result<Vec<String>>) -> PoolOutcome {
        let err = match answer {
            Ok(ids) => return PoolOutcome::Launched(ids),
            Err(err) => err,
        };
        let code = err.code().unwrap_or_default().to_string();
        if is_pool_answer(&err) {
            return PoolOutcome::NoCapacity(code);
        }
        let fallback = self.fallback == Fallback::OnDemand;
        match quota_error(self.region, &err, pool.market, self.max_price, fallback) {
            Some(_) if pool.market == Market::Spot && fallback && on_demand_may_help(&err) => {
                PoolOutcome::FallBack(code)
            }
            Some(quota) => PoolOutcome::Fatal(quota),
            None => PoolOutcome::Fatal(api_error(self.region, &err, self.credentials_hint)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::ec2::Ec2Error;

    fn subnets() -> Vec<Subnet> {
        ["eu-west-1a", "eu-west-1b"]
            .iter()
            .map(|zone| Subnet {
                zone: zone.to_string(),
                id: format!("subnet-{zone}"),
            })
            .collect()
    }

    #[test]
    fn pools_go_type_by_type_then_on_demand() {
        let types = vec!["t3.small".to_string(), "t3a.small".to_string()];
        let subnets = subnets();
        let order: Vec<(Market, &str, &str)> = pools(Fallback::OnDemand, &types, &subnets)
            .map(|p| (p.market, p.instance_type, p.zone))
            .collect();
        assert_eq!(
            order,
            [
                (Market::Spot, "t3.small", "eu-west-1a"),
                (Market::Spot, "t3.small", "eu-west-1b"),
                (Market::Spot, "t3a.small", "eu-west-1a"),
                (Market::Spot, "t3a.small", "eu-west-1b"),
                (Market::OnDemand, "t3.small", "eu-west-1a"),
                (Market::OnDemand, "t3.small", "eu-west-1b"),
                (Market::OnDemand, "t3a.small", "eu-west-1a"),
                (Market::OnDemand, "t3a.small", "eu-west-1b"),
            ]
        );
        assert_eq!(pools(Fallback::None, &types, &subnets).count(), 4);
    }

    #[test]
    fn answers_become_outcomes() {
        let subnets = subnets();
        let spot = Pool {
            market: Market::Spot,
            instance_type: "t3.small",
            zone: &subnets[0].zone,
            subnet: &subnets[0].id,
        };
        let on_demand = Pool {
            market: Market::OnDemand,
            ..spot.clone()
        };
        let verdicts = |fallback| Verdicts {
            region: "eu-west-1",
            fallback,
            max_price: None,
            credentials_hint: "HINT",
        };
        let fail = |code: &str| Err(Ec2Error::service("RunInstances", code, "from EC2"));
        let cases: Vec<(&str, PoolOutcome, &str)> = vec![
            (
                "launched",
                verdicts(Fallback::None).outcome(&spot, Ok(vec!["i-1".to_string()])),
                "Launched",
            ),
            (
                "capacity",
                verdicts(Fallback::None).outcome(&spot, fail("InsufficientInstanceCapacity")),
                "NoCapacity",
            ),
            (
                "spot quota, fallback",
                verdicts(Fallback::OnDemand).outcome(&spot, fail("MaxSpotInstanceCountExceeded")),
                "FallBack",
            ),
            (
                "spot quota, no fallback",
                verdicts(Fallback::None).outcome(&spot, fail("MaxSpotInstanceCountExceeded")),
                "Fatal",
            ),
            (
                "vCPU limit binds on demand too",
                verdicts(Fallback::OnDemand).outcome(&spot, fail("VcpuLimitExceeded")),
                "Fatal",
            ),
            (
                "on-demand quota",
                verdicts(Fallback::OnDemand).outcome(&on_demand, fail("InstanceLimitExceeded")),
                "Fatal",
            ),
            (
                "throttle",
                verdicts(Fallback::OnDemand).outcome(&spot, fail("RequestLimitExceeded")),
                "Fatal",
            ),
        ];
        for (name, outcome, want) in cases {
            let got = format!("{outcome:?}");
            assert!(got.starts_with(want), "{name}: {got}");
        }
    }
}
