//! `switchyard publish`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use switchyard_config::{ConfigStore, StoreError};
use switchyard_core::{CaseFile, Digest, Engine, Policy};

use super::shared::{
    ExpectArg, StoreArg, block_on, live_version, load_config, print_json, read_policy, with_hint,
    write_route,
};

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// The function.
    #[arg(long)]
    pub(crate) function: String,
    /// The policy component.
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// The route config JSON file (its "policy" field is set for you).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Fixture cases the policy must pass: checked now, and by every host
    /// before the version goes live.
    #[arg(long)]
    pub(crate) cases: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) expect: ExpectArg,
    /// The oldest `switchyard` release the hosts reading this store run
    /// (default: the store's setting, `switchyard fleet
    /// --min-host-version`; on a store with no route yet, this CLI's
    /// release, recorded as that setting; else 0.1.0). A config that needs
    /// a newer one (a newer route-config schema: `step-functions` dispatch
    /// or an `auth` block need 0.2.0; a guard, fallback, shadow or secret
    /// reference 0.3.0) is refused, since those hosts would keep their old
    /// version.
    #[arg(long, env = "SWITCHYARD_MIN_HOST_VERSION", value_name = "VERSION")]
    pub(crate) min_host_version: Option<String>,
    /// Sign the policy with this Ed25519 private key (PKCS#8 PEM, as
    /// `openssl genpkey -algorithm ed25519` writes it) and store the
    /// signature beside it, for hosts started with --trust-key.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_SIGN_KEY")]
    pub(crate) sign_key: Option<PathBuf>,
    /// Publish even when the config needs hosts newer than --min-host-version.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(args: PublishArgs) -> Result<()> {
    let engine = Engine::new()?;
    let bytes = read_policy(&args.policy)?;
    let policy = Policy::new(&engine, &bytes, &args.policy.display().to_string())
        .map_err(with_hint)
        .context("refusing to publish")?;
    let signer = args
        .sign_key
        .as_deref()
        .map(switchyard_config::PolicySigner::from_pem_file)
        .transpose()
        .context("--sign-key")?;
    let mut config = load_config(&args.config)?;
    switchyard_dispatch::check(&config).with_context(|| format!("in {}", args.config.display()))?;
    // The schema the config needs, declared, so older hosts keep what they
    // have instead of failing field by field.
    config.schema = config.schema.max(config.needed_schema());
    super::shared::warn_literal_secrets(&config);
    let cases = match &args.cases {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read cases file {}", path.display()))?;
            let mut file =
                CaseFile::from_json(&text).with_context(|| format!("in {}", path.display()))?;
            file.config.get_or_insert_with(|| config.clone());
            file.function.get_or_insert_with(|| args.function.clone());
            let results = file.run(&policy)?;
            let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
            if !failed.is_empty() {
                for r in &failed {
                    eprintln!("FAIL  {}: {}", r.name, r.mismatches.join("; "));
                }
                bail!(
                    "refusing to publish: {} of {} fixture cases failed (run `switchyard policy test` for details)",
                    failed.len(),
                    results.len()
                );
            }
            eprintln!("fixture cases: {} passed", results.len());
            Some(serde_json::to_vec(&file)?)
        }
    };
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        super::shared::fleet_reads(
            &*store,
            &config,
            args.min_host_version.as_deref(),
            args.force,
        )
        .await?;
        let digest = policy.digest();
        put_or_repair(&*store, &bytes, "policy", &|done, total| {
            eprintln!("uploading policy {}: chunk {done}/{total}", digest.short())
        })
        .await?;
        // Signed before the route names it: a host that trusts the key
        // never sees this version without its signature.
        let signed_by = match &signer {
            Some(signer) => {
                let doc = signer.sign(&digest);
                store
                    .put_signature(&digest, signer.key_id(), &doc.to_json())
                    .await?;
                eprintln!(
                    "policy {} signed by key {}",
                    digest.short(),
                    signer.key_id()
                );
                Some(signer.key_id().to_owned())
            }
            None => None,
        };
        if let Some(cases) = &cases {
            config.cases = Some(put_or_repair(&*store, cases, "fixture cases", &|_, _| {}).await?);
        }
        config.policy = Some(digest);
        let read = live_version(&*store, &args.function).await?;
        let version = write_route(
            &*store,
            &args.function,
            &config,
            read,
            &args.expect,
            "publish",
        )
        .await?;
        let mut out =
            serde_json::json!({"function": args.function, "version": version, "policy": digest});
        if let Some(key) = signed_by {
            out["signed-by"] = key.into();
        }
        print_json(&out)
    })?;
    Ok(())
}

/// Stores `bytes` as a blob. One already stored is read back first: when it
/// is corrupt (or a piece is missing) it is stored again and said so, as
/// `put_blob` would leave it as it is and every host would keep refusing it.
async fn put_or_repair(
    store: &dyn ConfigStore,
    bytes: &[u8],
    what: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Digest> {
    let digest = Digest::of(bytes);
    if !store.has_blob(&digest).await? {
        return Ok(store.put_blob(bytes, progress).await?);
    }
    match store.get_blob(&digest).await {
        Ok(_) => eprintln!("{what} {digest} already in {}", store.uri()),
        Err(
            e @ (StoreError::DigestMismatch { .. }
            | StoreError::Corrupt { .. }
            | StoreError::NotFound(_)),
        ) => {
            store.replace_blob(bytes, progress).await?;
            store.get_blob(&digest).await.with_context(|| {
                format!("{what} {digest} was stored again, and still does not read back")
            })?;
            eprintln!(
                "{what} {digest} in {} was unreadable ({e}); repaired: stored it again",
                store.uri()
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(digest)
}
