//! Opening a store by URI: the one place the scheme is matched. A new
//! backend is one file implementing `ConfigStore` plus one arm here.

use std::sync::Arc;

use crate::store::{ConfigStore, Result, StoreError};

/// Opens a store from its URI: `dir:<path>`, `ssm:<prefix>` or
/// `cloudmap:<namespace>?blobs=ssm:<prefix>`. An `ssm:` or `cloudmap:` URI
/// may add `snapshot=s3://<bucket>/<key>` (and `snapshot-audit=<duration>`
/// or `off`) to its options: hosts then read the fleet snapshot there and
/// writers keep it current (see [`crate::snapshot`]).
pub async fn open(uri: &str) -> Result<Arc<dyn ConfigStore>> {
    #[cfg(feature = "aws")]
    if let Some(store) = open_snapshotted(uri).await? {
        return Ok(store);
    }
    open_plain(uri).await
}

/// The store `uri` names, when it names a snapshot (see [`open`]).
#[cfg(feature = "aws")]
pub async fn open_snapshotted(uri: &str) -> Result<Option<Arc<crate::snapshot::Snapshotted>>> {
    let Some((base, url, options)) = split_snapshot(uri)? else {
        return Ok(None);
    };
    let inner = open_plain(&base).await?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let object = crate::s3::SnapshotObjectS3::new(crate::s3::client(&config), &url)?;
    Ok(Some(Arc::new(crate::snapshot::Snapshotted::new(
        inner,
        Arc::new(object),
        options,
    ))))
}

/// `uri` without its snapshot options, the snapshot's URL and its options;
/// `None` when it names no snapshot.
#[cfg(feature = "aws")]
fn split_snapshot(uri: &str) -> Result<Option<(String, String, crate::snapshot::SnapshotOptions)>> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok(None);
    };
    let mut kept = Vec::new();
    let mut url = None;
    let mut options = crate::snapshot::SnapshotOptions::default();
    let mut audit_set = false;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value: String = form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match key {
            "snapshot" => url = Some(value),
            "snapshot-audit" => {
                audit_set = true;
                options.audit = match value.as_str() {
                    "off" => None,
                    d => Some(crate::parse_duration(d).map_err(|e| {
                        StoreError::BadUri(format!("{uri} (snapshot-audit: {e}; or off)"))
                    })?),
                }
            }
            _ => kept.push(pair),
        }
    }
    let Some(url) = url else {
        if audit_set {
            return Err(StoreError::BadUri(format!(
                "{uri} (snapshot-audit needs snapshot=s3://<bucket>/<key>)"
            )));
        }
        return Ok(None);
    };
    let base = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    if base.starts_with("dir:") {
        return Err(StoreError::BadUri(format!(
            "{uri} (a dir: store has no snapshot: its hosts read the folder)"
        )));
    }
    Ok(Some((base, url, options)))
}

/// Opens a store of record.
async fn open_plain(uri: &str) -> Result<Arc<dyn ConfigStore>> {
    match uri.split_once(':') {
        Some(("dir", path)) if !path.is_empty() => Ok(Arc::new(crate::dir::DirStore::new(path)?)),
        #[cfg(feature = "aws")]
        Some(("ssm", prefix)) if !prefix.is_empty() => {
            Ok(Arc::new(crate::ssm::SsmStore::from_env(prefix).await?))
        }
        #[cfg(feature = "aws")]
        Some(("cloudmap", spec)) if !spec.is_empty() => Ok(Arc::new(
            crate::cloudmap::CloudMapStore::from_env(spec).await?,
        )),
        #[cfg(not(feature = "aws"))]
        Some(("ssm" | "cloudmap", _)) => Err(StoreError::Unsupported(format!(
            "{uri}: this build has no AWS backends; build switchyard-config with the `aws` feature"
        ))),
        _ => Err(StoreError::BadUri(uri.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_uris_say_what_to_use() {
        for bad in ["", "dir:", "s3:/x", "/tmp/x"] {
            let err = open(bad).await.unwrap_err();
            assert!(err.to_string().contains("use dir:<path>"), "{err}");
        }
    }

    #[cfg(feature = "aws")]
    #[test]
    fn snapshot_options_are_taken_out_of_the_store_uri() {
        let (base, url, options) =
            split_snapshot("ssm:/s?blobs=s3://b/p&snapshot=s3://b/fleet.snap&snapshot-audit=2m")
                .unwrap()
                .unwrap();
        assert_eq!(base, "ssm:/s?blobs=s3://b/p");
        assert_eq!(url, "s3://b/fleet.snap");
        assert_eq!(options.audit, Some(std::time::Duration::from_secs(120)));
        let (base, _, options) = split_snapshot("ssm:/s?snapshot=s3://b/k&snapshot-audit=off")
            .unwrap()
            .unwrap();
        assert_eq!((base.as_str(), options.audit), ("ssm:/s", None));
        assert!(split_snapshot("ssm:/s?blobs=s3://b").unwrap().is_none());
        assert!(split_snapshot("ssm:/s").unwrap().is_none());
        for bad in [
            "ssm:/s?snapshot-audit=2m",
            "ssm:/s?snapshot=s3://b/k&snapshot-audit=soon",
            "dir:/x?snapshot=s3://b/k",
        ] {
            assert!(split_snapshot(bad).is_err(), "{bad}");
        }
    }
}
