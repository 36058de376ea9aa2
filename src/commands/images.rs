//! The AMI each region launches, as `plan` and `create` show it: what
//! `aws.image` resolved to (an alias through its vendor's SSM parameter),
//! the same id the launch then uses.

use super::Context;
use crate::error::Result;
use crate::provider::AnyProvider;

/// Prints `region: image <aws.image> is <ami-id>` per launching region on
/// stderr. The local provider boots one local image: nothing to print.
pub(super) async fn show_resolved_images(context: &Context<'_>, provider: &AnyProvider) -> Result<()> {
    let AnyProvider::Aws(aws) = provider else {
        return Ok(());
    };
    let image = &context.config()?.aws.image;
    for (region, id) in aws.resolve_images().await? {
        if id == *image {
            context.printer.info(&format!("{region}: image {id}"));
        } else {
            context.printer.info(&format!("{region}: image {image} is {id}"));
        }
    }
    Ok(())
}
