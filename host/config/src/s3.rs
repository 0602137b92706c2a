//! Policy blobs in S3, for `ssm` stores whose policies are too large for
//! parameters: a Python or JavaScript policy carries its interpreter and is
//! megabytes, while an SSM parameter holds 4 KB.
//!
//! ```text
//! s3://<bucket>/<prefix>/sha256-<hex>     the component, as built
//! ```
//!
//! The route config stays in SSM and names the digest; the blob's SSM
//! manifest (`{"size":..,"chunks":0,"encoding":"raw","location":"s3://.."}`)
//! says where the bytes are, so a reader needs no bucket setting of its own.
//! Bytes are verified against the digest on every read, as for chunks.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use switchyard_core::Digest;

use crate::aws::sdk_message;
use crate::blob::{self, MAX_BLOB_BYTES};
use crate::store::{Result, StoreError};

/// Where blobs are written: a bucket and a key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobBucket {
    /// The bucket.
    pub bucket: String,
    /// Key prefix without a trailing `/` (may be empty).
    pub prefix: String,
}

impl BlobBucket {
    /// Parses `s3://<bucket>[/<prefix>]`.
    pub fn parse(location: &str) -> Result<Self> {
        let bad = || {
            StoreError::BadUri(format!(
                "{location} (a blob bucket is s3://<bucket>[/<prefix>])"
            ))
        };
        let rest = location.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
        if !bucket_ok || prefix.split('/').any(|s| s == "..") {
            return Err(bad());
        }
        Ok(BlobBucket {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// The key of a blob.
    pub(crate) fn key(&self, digest: &Digest) -> String {
        if self.prefix.is_empty() {
            format!("sha256-{}", digest.hex())
        } else {
            format!("{}/sha256-{}", self.prefix, digest.hex())
        }
    }

    /// The `s3://` URL of a blob.
    pub(crate) fn url(&self, digest: &Digest) -> String {
        format!("s3://{}/{}", self.bucket, self.key(digest))
    }
}

impl std::fmt::Display for BlobBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// An S3 client from the standard AWS configuration. Path-style addressing
/// when a custom endpoint is set (`AWS_ENDPOINT_URL[_S3]`, e.g. a local
/// emulator), virtual-hosted style against AWS.
pub fn client(config: &aws_config::SdkConfig) -> Client {
    let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom_endpoint)
        .build();
    Client::from_conf(s3)
}

fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    url: &str,
    e: SdkError<E>,
) -> StoreError {
    let (code, message) = sdk_message(&e);
    match code.as_str() {
        "NoSuchKey" | "NotFound" => StoreError::NotFound(format!("policy blob {url}")),
        c if c.contains("Throttl") || c == "SlowDown" => StoreError::Throttled {
            store: url.to_owned(),
            message,
        },
        _ => StoreError::Unavailable {
            store: url.to_owned(),
            message,
        },
    }
}

/// Uploads a blob (idempotent: the key is its digest).
pub(crate) async fn put(
    client: &Client,
    bucket: &BlobBucket,
    digest: &Digest,
    bytes: &[u8],
) -> Result<()> {
    let url = bucket.url(digest);
    client
        .put_object()
        .bucket(&bucket.bucket)
        .key(bucket.key(digest))
        .content_type("application/wasm")
        .body(ByteStream::from(bytes.to_vec()))
        .send()
        .await
        .map_err(|e| err(&url, e))?;
    Ok(())
}

/// Downloads the blob at `url` (`s3://bucket/key`) and verifies it.
pub(crate) async fn get(client: &Client, url: &str, digest: &Digest) -> Result<Vec<u8>> {
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("manifest of policy blob {digest}"),
            why: format!("location {url:?} is not s3://<bucket>/<key>"),
        })?;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| err(url, e))?;
    if let Some(len) = out.content_length().filter(|&l| l > MAX_BLOB_BYTES as i64) {
        return Err(StoreError::TooLarge {
            what: format!("policy blob {url}, in bytes,"),
            len: len as usize,
            limit: MAX_BLOB_BYTES,
        });
    }
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| StoreError::Unavailable {
            store: url.to_owned(),
            message: format!("reading the object: {e}"),
        })?
        // One copy of the whole body (`to_vec` copies it byte by byte).
        .into_bytes()
        .to_vec();
    blob::verify(digest, bytes)
}

/// The fleet's snapshot as an S3 object (see [`crate::snapshot`]): read
/// with `If-None-Match` (an unchanged one is a `304` without a body),
/// written with `If-Match` / `If-None-Match: *` so concurrent writers
/// cannot overwrite each other's snapshot unseen.
#[derive(Debug, Clone)]
pub struct SnapshotObjectS3 {
    client: Client,
    bucket: String,
    key: String,
}

impl SnapshotObjectS3 {
    /// The object at `s3://<bucket>/<key>`.
    pub fn new(client: Client, url: &str) -> Result<Self> {
        let bad = || {
            StoreError::BadUri(format!(
                "snapshot={url} (a snapshot is an S3 object: snapshot=s3://<bucket>/<key>)"
            ))
        };
        let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, key) = rest.split_once('/').ok_or_else(bad)?;
        BlobBucket::parse(&format!("s3://{bucket}")).map_err(|_| bad())?;
        if key.is_empty() || key.ends_with('/') || key.split('/').any(|s| s == "..") {
            return Err(bad());
        }
        Ok(SnapshotObjectS3 {
            client,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// The HTTP status of an SDK error's response, if it got one.
fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

#[async_trait::async_trait]
impl crate::snapshot::SnapshotObject for SnapshotObjectS3 {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    async fn get(&self, if_none_match: Option<&str>) -> Result<crate::snapshot::Fetched> {
        use crate::snapshot::{Fetched, MAX_SNAPSHOT_BYTES};
        let url = self.url();
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_if_none_match(if_none_match.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if status(&e) == Some(304) => return Ok(Fetched::Unchanged),
            Err(e) if status(&e) == Some(404) => return Ok(Fetched::Missing),
            Err(e) => return Err(err(&url, e)),
        };
        if let Some(len) = out
            .content_length()
            .filter(|&l| l > MAX_SNAPSHOT_BYTES as i64)
        {
            return Err(StoreError::TooLarge {
                what: format!("snapshot {url}, in bytes,"),
                len: len as usize,
                limit: MAX_SNAPSHOT_BYTES,
            });
        }
        let etag = out.e_tag().map(str::to_owned);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable {
                store: url.clone(),
                message: format!("reading the object: {e}"),
            })?
            // One copy of the whole body (`to_vec` copies it byte by byte).
            .into_bytes()
            .to_vec();
        Ok(Fetched::Body { bytes, etag })
    }

    async fn put(&self, bytes: Vec<u8>, expected: crate::snapshot::Expected) -> Result<bool> {
        use crate::snapshot::Expected;
        let url = self.url();
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("text/plain; charset=utf-8")
            // Readers revalidate every poll; a CDN in front must too.
            .cache_control("no-cache")
            .body(ByteStream::from(bytes));
        put = match expected {
            Expected::Absent => put.if_none_match("*"),
            Expected::Etag(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            // 412: the condition failed; 409: a concurrent conditional
            // write is in progress (S3's ConditionalRequestConflict).
            Err(e) if matches!(status(&e), Some(412 | 409)) => Ok(false),
            Err(e) => Err(err(&url, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_urls() {
        let b = BlobBucket::parse("s3://my-bucket/policies/prod/").unwrap();
        assert_eq!(b.bucket, "my-bucket");
        assert_eq!(b.prefix, "policies/prod");
        let d = Digest::of(b"x");
        assert_eq!(
            b.url(&d),
            format!("s3://my-bucket/policies/prod/sha256-{}", d.hex())
        );
        assert_eq!(
            BlobBucket::parse("s3://bkt").unwrap().key(&d),
            format!("sha256-{}", d.hex())
        );
        for bad in [
            "bkt/x",
            "s3://",
            "s3://UPPER",
            "s3://a",
            "s3://bkt/../x",
            "http://bkt",
        ] {
            assert!(BlobBucket::parse(bad).is_err(), "{bad}");
        }
    }
}
