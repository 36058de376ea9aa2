//! Bundles on S3: the blueprint's archive uploaded where its instances can
//! fetch it with a presigned GET URL, and removed when the deployment goes.
//!
//! The bucket is `aws.bundle_bucket`, or one respot makes per account and
//! home region (`respot-bundles-<account>-<region>`, tagged
//! `respot:purpose=bundles`). Objects are `<deployment>/<digest>.tar.gz`,
//! tagged `respot:deployment` and `respot:digest`; `destroy` deletes the
//! deployment's objects and nothing else. Every call goes through the
//! [`BundleStore`] seam, so the logic here runs against a fake in tests.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::AwsProvider;
use super::ec2::Ec2Api;
use super::errors::caller_error;
use crate::provider::{Provider, ProviderError, Result, tag};
use crate::template::{Bundle, BundleSource, Digest};

/// How long a presigned URL works: long enough for a slow spot request to
/// be fulfilled and boot. Every launch signs a fresh one.
pub const URL_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// An S3 failure: the action and AWS's code and message.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub action: &'static str,
    pub code: String,
    pub message: String,
}

impl S3Error {
    fn into_provider(self, region: &str) -> ProviderError {
        ProviderError::Api {
            region: region.to_string(),
            action: format!("S3 {}", self.action),
            code: self.code,
            message: self.message,
        }
    }
}

/// The S3 calls bundles need, one method per call.
#[allow(async_fn_in_trait)]
pub trait BundleStore {
    /// The store's region (where a bucket respot makes lives).
    fn region(&self) -> &str;
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, S3Error>;
    async fn create_bucket(&self, bucket: &str, tags: &[(String, String)]) -> Result<(), S3Error>;
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        sha256: &str,
        tags: &[(String, String)],
    ) -> Result<(), S3Error>;
    async fn presign_get(&self, bucket: &str, key: &str, lifetime: Duration) -> Result<String, S3Error>;
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error>;
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error>;
}

/// The bucket respot makes for `account` in `region` when
/// `aws.bundle_bucket` is unset.
pub fn default_bucket(account: &str, region: &str) -> String {
    format!("respot-bundles-{account}-{region}")
}

/// The account id of a caller ARN (`arn:aws:iam::123456789012:user/x`).
pub fn account_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The object key of `digest`'s bundle in `deployment`.
pub fn object_key(deployment: &str, digest: &Digest) -> String {
    format!("{deployment}/{}", Bundle::name(digest))
}

/// Uploads `bundle` (making the bucket when respot owns it and it is
/// missing) and returns a fresh presigned GET URL.
pub async fn stage<S: BundleStore>(
    store: &S,
    bucket: &str,
    respot_made: bool,
    deployment: &str,
    digest: &Digest,
    bundle: &Bundle,
) -> Result<String> {
    let region = store.region().to_string();
    let fail = |e: S3Error| e.into_provider(&region);
    if respot_made && !store.bucket_exists(bucket).await.map_err(fail)? {
        let tags = vec![("respot:purpose".to_string(), "bundles".to_string())];
        store.create_bucket(bucket, &tags).await.map_err(fail)?;
    }
    let key = object_key(deployment, digest);
    let tags = vec![
        (tag::DEPLOYMENT.to_string(), deployment.to_string()),
        (tag::DIGEST.to_string(), digest.to_string()),
    ];
    store
        .put(bucket, &key, &bundle.archive, &bundle.sha256, &tags)
        .await
        .map_err(fail)?;
    store.presign_get(bucket, &key, URL_LIFETIME).await.map_err(fail)
}

/// Deletes every bundle of `deployment`; returns the keys removed. A
/// missing bucket holds nothing.
pub async fn empty<S: BundleStore>(store: &S, bucket: &str, deployment: &str) -> Result<Vec<String>> {
    let region = store.region().to_string();
    let fail = |e: S3Error| e.into_provider(&region);
    if !store.bucket_exists(bucket).await.map_err(fail)? {
        return Ok(Vec::new());
    }
    let keys = store
        .list_keys(bucket, &format!("{deployment}/"))
        .await
        .map_err(fail)?;
    for key in &keys {
        store.delete(bucket, key).await.map_err(fail)?;
    }
    Ok(keys)
}

impl<E: Ec2Api> AwsProvider<E> {
    /// The bucket: `aws.bundle_bucket`, or respot's for this account in
    /// the home region (the caller's account, from STS).
    async fn bundle_bucket(&self, store: &SdkBundleStore) -> Result<(String, bool)> {
        if let Some(bucket) = &self.settings.bundle_bucket {
            return Ok((bucket.clone(), false));
        }
        let arn = self
            .home
            .caller_arn()
            .await
            .map_err(|err| caller_error(store.region(), &err, &self.credentials_hint))?;
        let account = account_of(&arn).ok_or_else(|| ProviderError::Api {
            region: store.region().to_string(),
            action: "STS GetCallerIdentity".to_string(),
            code: "UnexpectedArn".to_string(),
            message: format!("no account id in `{arn}`"),
        })?;
        Ok((default_bucket(account, store.region()), true))
    }

    fn bundle_store(&self) -> Result<&SdkBundleStore> {
        self.bundles.as_ref().ok_or_else(|| ProviderError::Api {
            region: self.home.region().to_string(),
            action: "S3".to_string(),
            code: "NoClient".to_string(),
            message: "this provider was built without an S3 client".to_string(),
        })
    }

    /// Uploads the bundle and signs a fresh URL (every create, deploy and
    /// heal does, so the URL never outlives its use by much).
    pub(super) async fn stage_in_s3(
        &self,
        deployment: &str,
        digest: &Digest,
        bundle: &Bundle,
    ) -> Result<BundleSource> {
        let store = self.bundle_store()?;
        let (bucket, respot_made) = self.bundle_bucket(store).await?;
        let url = stage(store, &bucket, respot_made, deployment, digest, bundle).await?;
        // What `render` counted: the longest URL for this bucket's name.
        let named = self.settings.bundle_bucket.as_deref();
        let longest = super::bundle_url::longest_url(
            store.endpoint.as_deref(),
            named,
            store.region(),
            deployment,
            digest,
        );
        Ok(BundleSource::Url {
            url,
            reserve: longest.len(),
        })
    }

    /// After a destroy: when no instance of `deployment` is live any more,
    /// its bundles go too. Returns what was removed, for the report.
    pub(super) async fn empty_bundles(&self, deployment: &str) -> Result<Vec<String>> {
        let Some(store) = &self.bundles else {
            return Ok(Vec::new());
        };
        let live = self.list(deployment).await?;
        if live.iter().any(|i| i.state.is_live()) {
            return Ok(Vec::new());
        }
        let (bucket, _) = self.bundle_bucket(store).await?;
        let removed = empty(store, &bucket, deployment).await?;
        Ok(removed
            .into_iter()
            .map(|key| format!("bundle s3://{bucket}/{key}"))
            .collect())
    }
}

/// The store over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkBundleStore {
    client: aws_sdk_s3::Client,
    region: String,
    /// `AWS_ENDPOINT_URL`, when set: it shapes the presigned URL.
    endpoint: Option<String>,
}

impl SdkBundleStore {
    /// A client in `region`; path-style addressing when an endpoint is set
    /// (`AWS_ENDPOINT_URL`), where bucket host names do not resolve.
    pub fn new(sdk: &aws_config::SdkConfig, region: &str) -> SdkBundleStore {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .force_path_style(sdk.endpoint_url().is_some())
            // The instance checks the sha256 itself; plain bodies keep
            // every S3-compatible endpoint happy.
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .build();
        SdkBundleStore {
            client: aws_sdk_s3::Client::from_conf(config),
            region: region.to_string(),
            endpoint: sdk.endpoint_url().map(str::to_string),
        }
    }
}

fn s3_error<E: ProvideErrorMetadata + std::fmt::Debug>(action: &'static str, err: &E) -> S3Error {
    S3Error {
        action,
        code: err.code().unwrap_or("unknown").to_string(),
        message: err.message().map_or_else(|| format!("{err:?}"), str::to_string),
    }
}

fn tag_query(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl BundleStore for SdkBundleStore {
    fn region(&self) -> &str {
        &self.region
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, S3Error> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                let service = err.as_service_error();
                if service.is_some_and(|e| e.is_not_found())
                    || err.raw_response().is_some_and(|r| r.status().as_u16() == 404)
                {
                    Ok(false)
                } else {
                    Err(s3_error("HeadBucket", &err))
                }
            }
        }
    }

    async fn create_bucket(&self, bucket: &str, tags: &[(String, String)]) -> Result<(), S3Error> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, Tag, Tagging};
        let mut call = self.client.create_bucket().bucket(bucket);
        if self.region != "us-east-1" {
            call = call.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        call.send().await.map_err(|e| s3_error("CreateBucket", &e))?;
        let tag_set: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let tagging = Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| S3Error {
                action: "PutBucketTagging",
                code: "build".to_string(),
                message: e.to_string(),
            })?;
        self.client
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| s3_error("PutBucketTagging", &e))?;
        Ok(())
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        sha256: &str,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.to_vec().into())
            .content_type("application/gzip")
            .metadata("sha256", sha256)
            .tagging(tag_query(tags))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &e))?;
        Ok(())
    }

    async fn presign_get(&self, bucket: &str, key: &str, lifetime: Duration) -> Result<String, S3Error> {
        let presigning =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(lifetime).map_err(|e| S3Error {
                action: "presign GetObject",
                code: "config".to_string(),
                message: e.to_string(),
            })?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| s3_error("presign GetObject", &e))?;
        Ok(request.uri().to_string())
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Objects by key: (body, sha256).
    type Objects = BTreeMap<String, (Vec<u8>, String)>;

    /// A bucket: its tags and objects.
    type FakeBucket = (Vec<(String, String)>, Objects);

    /// Buckets in memory, and a count of signatures.
    #[derive(Default)]
    struct FakeStore {
        buckets: Mutex<BTreeMap<String, FakeBucket>>,
        signed: Mutex<u32>,
    }

    impl BundleStore for FakeStore {
        fn region(&self) -> &str {
            "eu-west-1"
        }
        async fn bucket_exists(&self, bucket: &str) -> Result<bool, S3Error> {
            Ok(self.buckets.lock().unwrap().contains_key(bucket))
        }
        async fn create_bucket(&self, bucket: &str, tags: &[(String, String)]) -> Result<(), S3Error> {
            self.buckets
                .lock()
                .unwrap()
                .insert(bucket.to_string(), (tags.to_vec(), BTreeMap::new()));
            Ok(())
        }
        async fn put(
            &self,
            bucket: &str,
            key: &str,
            body: &[u8],
            sha256: &str,
            _tags: &[(String, String)],
        ) -> Result<(), S3Error> {
            let mut buckets = self.buckets.lock().unwrap();
            let Some((_, objects)) = buckets.get_mut(bucket) else {
                return Err(S3Error {
                    action: "PutObject",
                    code: "NoSuchBucket".to_string(),
                    message: bucket.to_string(),
                });
            };
            objects.insert(key.to_string(), (body.to_vec(), sha256.to_string()));
            Ok(())
        }
        async fn presign_get(&self, bucket: &str, key: &str, _: Duration) -> Result<String, S3Error> {
            let mut signed = self.signed.lock().unwrap();
            *signed += 1;
            Ok(format!("https://{bucket}.example/{key}?signature={signed}"))
        }
        async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
            let buckets = self.buckets.lock().unwrap();
            Ok(buckets[bucket]
                .1
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
        async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
            self.buckets
                .lock()
                .unwrap()
                .get_mut(bucket)
                .unwrap()
                .1
                .remove(key);
            Ok(())
        }
    }

    fn bundle(byte: u8) -> Bundle {
        Bundle {
            archive: vec![byte; 10],
            sha256: format!("{byte:064x}"),
            files: 1,
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn staging_makes_the_bucket_once_uploads_and_signs_every_time() {
        let store = FakeStore::default();
        let digest = Digest::parse(&"d".repeat(64)).unwrap();
        let bucket = default_bucket("123456789012", "eu-west-1");
        let first = block_on(stage(&store, &bucket, true, "web", &digest, &bundle(1))).unwrap();
        let again = block_on(stage(&store, &bucket, true, "web", &digest, &bundle(1))).unwrap();
        assert_ne!(first, again, "every launch signs a fresh URL");
        let key = format!("web/{}.tar.gz", "d".repeat(64));
        assert!(first.contains(&key), "{first}");
        let buckets = store.buckets.lock().unwrap();
        let (tags, objects) = &buckets["respot-bundles-123456789012-eu-west-1"];
        assert_eq!(tags, &vec![("respot:purpose".to_string(), "bundles".to_string())]);
        assert_eq!(objects[&key], (vec![1; 10], format!("{:064x}", 1)));
    }

    #[test]
    fn a_named_bucket_is_never_created() {
        let store = FakeStore::default();
        let digest = Digest::parse(&"d".repeat(64)).unwrap();
        let err = block_on(stage(&store, "theirs", false, "web", &digest, &bundle(1))).unwrap_err();
        assert!(
            err.to_string().contains("S3 PutObject failed: NoSuchBucket"),
            "{err}"
        );
        assert!(store.buckets.lock().unwrap().is_empty());
    }

    #[test]
    fn emptying_removes_only_the_deployments_objects() {
        let store = FakeStore::default();
        let bucket = "b";
        block_on(store.create_bucket(bucket, &[])).unwrap();
        for deployment in ["web", "web2", "api"] {
            let digest = Digest::parse(&"e".repeat(64)).unwrap();
            block_on(stage(&store, bucket, false, deployment, &digest, &bundle(2))).unwrap();
        }
        let removed = block_on(empty(&store, bucket, "web")).unwrap();
        assert_eq!(removed, vec![format!("web/{}.tar.gz", "e".repeat(64))]);
        let left: Vec<String> = store.buckets.lock().unwrap()[bucket].1.keys().cloned().collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|k| !k.starts_with("web/")));
        assert!(block_on(empty(&store, "missing", "web")).unwrap().is_empty());
    }

    #[test]
    fn account_and_names() {
        assert_eq!(
            account_of("arn:aws:iam::123456789012:user/x"),
            Some("123456789012")
        );
        assert_eq!(account_of("nonsense"), None);
        assert_eq!(
            tag_query(&[("respot:deployment".into(), "a b".into())]),
            "respot%3Adeployment=a%20b"
        );
    }
}
