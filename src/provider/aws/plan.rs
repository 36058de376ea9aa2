//! What `launch` would create, per region, with the current spot price:
//! the provider half of `respot plan`.
//!
//! Only reads: one `DescribeSpotPriceHistory` per launching region, for
//! every instance type of the region and every page. A price it cannot get
//! becomes a note, never an error.

use super::ec2::{Ec2Api, SpotPrice};
use super::{AwsProvider, RegionTarget, per_region};
use crate::provider::{Lifecycle, PlannedRegion, Result};

impl<E: Ec2Api> AwsProvider<E> {
    pub(super) async fn plan_regions(&self) -> Vec<PlannedRegion> {
        let launching: Vec<RegionTarget<E>> = self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        let results = per_region(launching, |target| async move {
            let priced = self.spot_prices(&target).await;
            (target, priced)
        })
        .await;
        results
            .into_iter()
            .map(|(region, (target, priced))| {
                let first = target.instance_types.first().cloned().unwrap_or_default();
                let (instance_type, price_per_hour, price_note) = match priced {
                    Ok(prices) => self.priced(&region, &target.instance_types, &target.zones, &prices),
                    Err(err) => (first, None, Some(format!("spot price unavailable: {err}"))),
                };
                PlannedRegion {
                    region,
                    count: target.count,
                    instance_type,
                    lifecycle: Lifecycle::Spot,
                    price_per_hour,
                    price_note,
                }
            })
            .collect()
    }

    /// The first type, in the order launch tries them, with a Linux price
    /// in the region's zones: (type, its lowest price, a note).
    fn priced(
        &self,
        region: &str,
        types: &[String],
        zones: &[String],
        prices: &[SpotPrice],
    ) -> (String, Option<f64>, Option<String>) {
        let first = types.first().cloned().unwrap_or_default();
        let Some((itype, price)) = types
            .iter()
            .find_map(|t| lowest_linux_price(prices, t, zones).map(|p| (t.clone(), p)))
        else {
            return (
                first.clone(),
                None,
                Some(format!("no spot price for {} in {region}", types.join(", "))),
            );
        };
        let mut notes = Vec::new();
        if itype != first {
            notes.push(format!("no spot price for {first}; priced {itype}"));
        }
        if let Some(cap) = self.settings.max_price.filter(|cap| price > *cap) {
            notes.push(format!(
                "above max_price {cap}: expect the next pool or SpotMaxPriceTooLow"
            ));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        (itype, Some(price), note)
    }

    /// Current spot prices of every instance type of the region.
    async fn spot_prices(&self, target: &RegionTarget<E>) -> Result<Vec<SpotPrice>> {
        if target.instance_types.is_empty() {
            return Ok(Vec::new());
        }
        target
            .ec2
            .describe_spot_prices(&target.instance_types)
            .await
            .map_err(|err| self.api_error(&target.name, &err))
    }
}

/// The lowest `Linux/UNIX` price of `itype` in `zones` (any zone when empty).
fn lowest_linux_price(prices: &[SpotPrice], itype: &str, zones: &[String]) -> Option<f64> {
    prices
        .iter()
        .filter(|p| p.instance_type.as_deref().is_none_or(|t| t == itype))
        .filter(|p| p.product.as_deref().is_some_and(|d| d.starts_with("Linux/UNIX")))
        .filter(|p| zones.is_empty() || p.zone.as_ref().is_some_and(|z| zones.contains(z)))
        .filter_map(|p| p.price.as_deref()?.parse::<f64>().ok())
        .fold(None, |low: Option<f64>, price| {
            Some(low.map_or(price, |l| l.min(price)))
        })
}
