//! `switchyard status`.

use anyhow::{Result, bail};
use clap::Args;

use super::shared::{StoreArg, block_on, print_json, summary};

// `switchyard status [function]`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function (default: all).
    function: Option<String>,
    /// Verify each live policy's signature with these public keys (as
    /// hosts started with --trust-key do); without them `status` shows
    /// which keys claim to have signed it.
    #[arg(
        long = "trust-key",
        value_name = "FILE",
        env = "SWITCHYARD_TRUST_KEYS",
        value_delimiter = ','
    )]
    trust_keys: Vec<std::path::PathBuf>,
}

/// What `status` says of a policy's signatures: `unsigned`, the keys that
/// claim to have signed it, or (with trust keys) whether a host trusting
/// them would load it.
async fn signature(
    store: &dyn switchyard_config::ConfigStore,
    digest: &switchyard_core::Digest,
    trust: &switchyard_config::TrustKeys,
) -> String {
    let docs = match store.signatures(digest).await {
        Ok(d) => d,
        Err(e) => return format!("unknown: {e}"),
    };
    if trust.is_empty() {
        if docs.is_empty() {
            return "unsigned".into();
        }
        let keys: Vec<String> = docs
            .iter()
            .filter_map(|d| serde_json::from_str::<switchyard_config::SignatureDoc>(d).ok())
            .map(|d| d.key)
            .collect();
        return format!(
            "signed by key {} (not verified: pass --trust-key)",
            keys.join(", ")
        );
    }
    match trust.verify(digest, &docs) {
        Ok(key) => format!("verified: signed by trusted key {key}"),
        Err(e) => format!("refused: {e}"),
    }
}

pub(crate) fn run(args: StatusArgs) -> Result<()> {
    let StatusArgs {
        store,
        function,
        trust_keys,
    } = args;
    let trust = switchyard_config::TrustKeys::from_pem_files(&trust_keys)?;
    block_on(async {
        let store = switchyard_config::open(&store.store).await?;
        let functions = match function {
            Some(f) => vec![f],
            None => store.functions().await?,
        };
        let latest = store.latest(&functions).await?;
        let mut out = Vec::new();
        let mut unreadable = 0;
        for (f, r) in functions.iter().zip(latest) {
            match r {
                Ok(Some(r)) => {
                    let mut s = summary(&r);
                    if let Some(digest) = &r.config.policy {
                        s["signature"] = signature(&*store, digest, &trust).await.into();
                    }
                    out.push(s);
                }
                Ok(None) => bail!("{f} has no route config in {}", store.uri()),
                // One function's bad version does not hide the others.
                Err(e) => {
                    unreadable += 1;
                    out.push(serde_json::json!({"function": f, "error": e.to_string(), "kind": e.kind()}));
                }
            }
        }
        if unreadable > 0 {
            eprintln!(
                "warning: {unreadable} function(s) have an unreadable latest version (hosts keep serving the version before it); publish a good one or `switchyard rollback`"
            );
        }
        print_json(&serde_json::Value::Array(out))
    })
}
