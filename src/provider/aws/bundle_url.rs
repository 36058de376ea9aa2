//! The longest presigned bundle URL a launch can put in the user-data, so
//! that `render` counts what `create` sends: the URL travels in a stored
//! gzip member, padded to this length (like the keys, its packed size then
//! depends on the length alone), and `render` counts a placeholder of
//! exactly this length.
//!
//! The shape is the one `aws-sdk-s3` presigns (`SdkBundleStore::presign_get`):
//! virtual-hosted on AWS, path-style under `AWS_ENDPOINT_URL`; then
//! `x-id`, SigV4's query parameters with a 20-character access key id, and
//! room for a session token (temporary credentials: SSO, assumed roles,
//! instance roles).

use super::bundle::{default_bucket, object_key};
use crate::template::Digest;

/// Room for `X-Amz-Security-Token`'s value, URL-encoded. AWS does not fix
/// its size; the tokens of SSO and assumed-role sessions run to about
/// 1,000 characters.
pub const SESSION_TOKEN_ALLOWANCE: usize = 1280;

/// A URL of the maximal length for `deployment`'s bundle of `digest` in
/// `bucket` (respot's own, for any account, when `None`) in `region`,
/// reached through `endpoint` when one is set. Placeholders stand for
/// what only the signature knows.
pub fn longest_url(
    endpoint: Option<&str>,
    bucket: Option<&str>,
    region: &str,
    deployment: &str,
    digest: &Digest,
) -> String {
    let bucket = bucket.map_or_else(|| default_bucket("000000000000", region), str::to_string);
    let key = object_key(deployment, digest);
    let base = match endpoint {
        Some(endpoint) => format!("{}/{bucket}/{key}", endpoint.trim_end_matches('/')),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com/{key}"),
    };
    format!(
        "{base}?x-id=GetObject&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F20000101%2F{region}%2Fs3%2Faws4_request\
         &X-Amz-Date=20000101T000000Z&X-Amz-Expires=21600&X-Amz-SignedHeaders=host&X-Amz-Signature={}\
         &X-Amz-Security-Token={}",
        "A".repeat(20),
        "0".repeat(64),
        "T".repeat(SESSION_TOKEN_ALLOWANCE),
    )
}

/// The S3 endpoint `aws-config` would use, from the environment
/// (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`), for `render`, which
/// loads no AWS configuration.
pub fn endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_url_has_the_presigned_shape_with_room_for_a_token() {
        let digest = Digest::parse(&"a".repeat(64)).unwrap();
        let aws = longest_url(None, None, "eu-west-1", "web", &digest);
        assert!(
            aws.starts_with(&format!(
                "https://respot-bundles-000000000000-eu-west-1.s3.eu-west-1.amazonaws.com/web/{}.tar.gz?x-id=GetObject&",
                "a".repeat(64)
            )),
            "{aws}"
        );
        let local = longest_url(
            Some("http://127.0.0.1:5000/"),
            Some("b"),
            "us-east-1",
            "web",
            &digest,
        );
        assert!(local.starts_with("http://127.0.0.1:5000/b/web/"), "{local}");
        // A real presigned URL without a token (moto's) fits with the token's room to spare.
        let real = format!(
            "http://127.0.0.1:5000/b/web/{}.tar.gz?x-id=GetObject&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=testing%2F20261126%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261126T031617Z\
             &X-Amz-Expires=21600&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            "a".repeat(64),
            "5".repeat(64)
        );
        assert!(
            real.len() + SESSION_TOKEN_ALLOWANCE < local.len(),
            "{} {}",
            real.len(),
            local.len()
        );
    }
}
