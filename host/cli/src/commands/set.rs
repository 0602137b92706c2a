//! `switchyard set`.

use anyhow::{Context, Result, bail};
use clap::Args;
use switchyard_core::valid_qualifier;

use super::shared::{ExpectArg, StoreArg, block_on, latest, print_json, write_route};

// `switchyard set <function> [--flag k=v]... [--version role=q]... [--context q:k=v]...`.
#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The function.
    function: String,
    /// Set a flag the policy reads, e.g. --flag canary-percent=25. Repeat for more.
    #[arg(long = "flag", value_name = "NAME=VALUE")]
    flags: Vec<String>,
    /// Point a role at a qualifier, e.g. --version candidate=9. Repeat for more.
    #[arg(long = "version", value_name = "ROLE=QUALIFIER")]
    versions: Vec<String>,
    /// Set a value handed to one qualifier, e.g. --context 9:QUEUE_URL=https://...
    /// A secret is set as a reference the hosts resolve, never as its
    /// value: --context '9:DB_PASSWORD={"$ssm":"/orders/db-password"}' (or
    /// {"$secretsmanager":"<arn>"}). Repeat for more.
    #[arg(long = "context", value_name = "QUALIFIER:KEY=VALUE")]
    context: Vec<String>,
    /// Remove a flag. Repeat for more.
    #[arg(long = "unset-flag", value_name = "NAME")]
    unset_flags: Vec<String>,
    /// Remove a role (not `stable`). Repeat for more.
    #[arg(long = "unset-version", value_name = "ROLE")]
    unset_versions: Vec<String>,
    /// Remove a context value. Repeat for more.
    #[arg(long = "unset-context", value_name = "QUALIFIER:KEY")]
    unset_context: Vec<String>,
    #[command(flatten)]
    expect: ExpectArg,
}

/// `k=v` split at the first `=`; the key must not be empty.
fn pair<'a>(arg: &'a str, what: &str, example: &str) -> Result<(&'a str, &'a str)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("{what} {arg:?} is not of the form {example}"),
    }
}

/// `q:k` split at the first `:`; neither may be empty.
fn scoped<'a>(arg: &'a str, what: &str, example: &str) -> Result<(&'a str, &'a str)> {
    match arg.split_once(':') {
        Some((q, k)) if !q.is_empty() && !k.is_empty() => Ok((q, k)),
        _ => bail!("{what} {arg:?} is not of the form {example}"),
    }
}

pub(crate) fn run(args: SetArgs) -> Result<()> {
    if args.flags.is_empty()
        && args.versions.is_empty()
        && args.context.is_empty()
        && args.unset_flags.is_empty()
        && args.unset_versions.is_empty()
        && args.unset_context.is_empty()
    {
        bail!(
            "nothing to set: give --flag NAME=VALUE, --version ROLE=QUALIFIER or --context QUALIFIER:KEY=VALUE (or an --unset-*); see `switchyard set --help`"
        );
    }
    let function = args.function.clone();
    block_on(async {
        let store = switchyard_config::open(&args.store.store).await?;
        let current = latest(&*store, &function).await?;
        let mut config = current.config.clone();
        let mut changed = Vec::new();
        for arg in &args.flags {
            let (k, v) = pair(arg, "--flag", "NAME=VALUE")?;
            if config.flags.insert(k.to_owned(), v.to_owned()).as_deref() != Some(v) {
                changed.push(format!("flags.{k}"));
            }
        }
        for k in &args.unset_flags {
            if config.flags.remove(k).is_some() {
                changed.push(format!("flags.{k}"));
            }
        }
        for arg in &args.versions {
            let (role, q) = pair(arg, "--version", "ROLE=QUALIFIER")?;
            if !valid_qualifier(q) {
                bail!(
                    "--version {arg:?}: {q:?} is not a qualifier (1-{} characters of A-Z a-z 0-9 $ _ -)",
                    switchyard_core::MAX_QUALIFIER_LEN
                );
            }
            if config
                .versions
                .insert(role.to_owned(), q.to_owned())
                .as_deref()
                != Some(q)
            {
                changed.push(format!("versions.{role}"));
            }
        }
        for role in &args.unset_versions {
            if role == "stable" {
                bail!(
                    "--unset-version stable: every route needs a stable version (requests go there when a policy fails); point it elsewhere with --version stable=<qualifier>"
                );
            }
            if config.versions.remove(role).is_some() {
                changed.push(format!("versions.{role}"));
            }
        }
        for arg in &args.context {
            let (q, kv) = scoped(arg, "--context", "QUALIFIER:KEY=VALUE")?;
            let (k, v) = pair(kv, "--context", "QUALIFIER:KEY=VALUE")
                .with_context(|| format!("--context {arg:?}"))?;
            let v =
                super::shared::context_value(v).with_context(|| format!("--context {arg:?}"))?;
            let values = config.context.entry(q.to_owned()).or_default();
            if values.insert(k.to_owned(), v.clone()).as_ref() != Some(&v) {
                changed.push(format!("context.{q}.{k}"));
            }
        }
        for arg in &args.unset_context {
            let (q, k) = scoped(arg, "--unset-context", "QUALIFIER:KEY")?;
            if let Some(values) = config.context.get_mut(q) {
                if values.remove(k).is_some() {
                    changed.push(format!("context.{q}.{k}"));
                }
                if values.is_empty() {
                    config.context.remove(q);
                }
            }
        }
        config
            .validate()
            .with_context(|| format!("the new route config of {function} would be invalid"))?;
        super::shared::warn_literal_secrets(&config);
        config.schema = config.schema.max(config.needed_schema());
        super::shared::fleet_reads(&*store, &config, None, false).await?;
        let version = if changed.is_empty() {
            eprintln!(
                "{function}: version {} already has these settings; nothing written",
                current.version
            );
            current.version
        } else {
            let version = write_route(
                &*store,
                &function,
                &config,
                current.version,
                &args.expect,
                "set",
            )
            .await?;
            eprintln!(
                "{function}: version {version} changes {} (was version {})",
                changed.join(", "),
                current.version
            );
            version
        };
        // Context values may be credentials: their keys are shown, not them.
        let context: serde_json::Map<String, serde_json::Value> = config
            .context
            .iter()
            .map(|(q, values)| (q.clone(), values.keys().cloned().collect()))
            .collect();
        print_json(&serde_json::json!({
            "function": function,
            "version": version,
            "changed": changed,
            "mode": config.mode,
            "versions": config.versions,
            "flags": config.flags,
            "context-keys": context,
        }))
    })
}
