//! What `launch` would create, per region, with the current spot price:
//! the provider half of `respot plan`.
//!
//! Only reads (one `DescribeSpotPriceHistory` per launching region); a
//! price it cannot get becomes a note, never an error.

use super::ec2::{Ec2Api, SpotPrice};
use super::{AwsProvider, RegionTarget, per_region};
use crate::provider::{Lifecycle, PlannedRegion, Result};

impl<E: Ec2Api> AwsProvider<E> {
    pub(super) async fn plan_regions(&self) -> Vec<PlannedRegion> {
        let launching: Vec<RegionTarget<E>> = self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        let results = per_region(launching, |target| async move {
            let priced = self.spot_price(&target).await;
            (target.count, priced)
        })
        .await;
        let first_type = self.settings.instance_types.first().cloned().unwrap_or_default();
        results
            .into_iter()
            .map(|(region, (count, priced))| {
                let (price_per_hour, price_note) = match priced {
                    Ok(Some(price)) => {
                        let note = self.settings.max_price.filter(|cap| price > *cap).map(|cap| {
                            format!("above max_price {cap}: expect the next pool or SpotMaxPriceTooLow")
                        });
                        (Some(price), note)
                    }
                    Ok(None) => (None, Some(format!("no spot price for {first_type} in {region}"))),
                    Err(err) => (None, Some(format!("spot price unavailable: {err}"))),
                };
                PlannedRegion {
                    region,
                    count,
                    instance_type: first_type.clone(),
                    lifecycle: Lifecycle::Spot,
                    price_per_hour,
                    price_note,
                }
            })
            .collect()
    }

    /// The lowest current Linux spot price of the first instance type over
    /// the region's (configured) zones.
    async fn spot_price(&self, target: &RegionTarget<E>) -> Result<Option<f64>> {
        let Some(itype) = self.settings.instance_types.first() else {
            return Ok(None);
        };
        let prices = target
            .ec2
            .describe_spot_prices(itype)
            .await
            .map_err(|err| self.api_error(&target.name, &err))?;
        Ok(lowest_linux_price(&prices, &target.zones))
    }
}

/// The lowest `Linux/UNIX` price in `zones` (any zone when empty).
fn lowest_linux_price(prices: &[SpotPrice], zones: &[String]) -> Option<f64> {
    prices
        .iter()
        .filter(|p| p.product.as_deref().is_some_and(|d| d.starts_with("Linux/UNIX")))
        .filter(|p| zones.is_empty() || p.zone.as_ref().is_some_and(|z| zones.contains(z)))
        .filter_map(|p| p.price.as_deref()?.parse::<f64>().ok())
        .fold(None, |low: Option<f64>, price| {
            Some(low.map_or(price, |l| l.min(price)))
        })
}
