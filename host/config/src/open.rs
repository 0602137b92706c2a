//! Opening a store by URI: the one place the scheme is matched. A new
//! backend is one file implementing `ConfigStore` plus one arm here.

use std::sync::Arc;

use crate::store::{ConfigStore, Result, StoreError};

/// Opens a store from its URI: `dir:<path>`, `ssm:<prefix>` or
/// `cloudmap:<namespace>?blobs=ssm:<prefix>`.
pub async fn open(uri: &str) -> Result<Arc<dyn ConfigStore>> {
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
}
