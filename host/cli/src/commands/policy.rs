//! `switchyard policy build | inspect | test`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use switchyard_core::{CaseFile, Engine, Policy, inspect};

use super::shared::{block_on, load_policy, print_json, read_policy, with_hint};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Build a policy folder into a component; the language comes from the
    /// folder: Rust (Cargo.toml: cargo for wasm32-unknown-unknown, then
    /// wit-component), Python (policy.py: componentize-py --stub-wasi) or
    /// JavaScript (policy.js: jco componentize with WASI disabled).
    /// Python and JavaScript builds go to <folder>/target/<folder>.component.wasm.
    /// Prints the component's path as the last line of stdout.
    Build {
        /// The policy folder.
        #[arg(value_name = "POLICY_DIR")]
        crate_dir: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// JavaScript engine: quickjs (componentize-qjs; small, fast to
        /// build and call) or spidermonkey (componentize-js).
        #[arg(long, value_name = "ENGINE", default_value = "quickjs", value_parser = ["quickjs", "spidermonkey"])]
        js_backend: String,
    },
    /// Print a component's digest, size, imports and exports as JSON; exits
    /// non-zero (with the reason on stderr) when it is not a valid policy.
    Inspect {
        /// The component file.
        file: PathBuf,
    },
    /// Sign a policy for hosts started with --trust-key: an Ed25519
    /// signature of its digest, by a PKCS#8 PEM private key (`openssl
    /// genpkey -algorithm ed25519 -out signing.pem`; hosts get its public
    /// half, `openssl pkey -in signing.pem -pubout`). Prints the signature
    /// as JSON; with --store, stores it beside the policy's blob (which
    /// need not be published yet). `publish --sign-key` does both at once.
    Sign {
        /// The component file, or the digest of a published one
        /// (`sha256:<hex>`, as `status` shows it).
        #[arg(value_name = "POLICY")]
        policy: String,
        /// The private key.
        #[arg(long, value_name = "FILE", env = "SWITCHYARD_SIGN_KEY")]
        key: PathBuf,
        /// Store the signature in this config store (dir:<path> or
        /// ssm:<prefix>).
        #[arg(long, value_name = "STORE")]
        store: Option<String>,
    },
    /// Run fixture cases against a policy: prints each failure as a diff and
    /// a final "N passed, N failed" line; exits 1 on any failure.
    Test {
        /// The component file.
        file: PathBuf,
        /// The cases file (JSON; see the `cases` module docs or README).
        cases: PathBuf,
    },
}

pub(crate) fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Build {
            crate_dir,
            output,
            js_backend,
        } => {
            let js = match js_backend.as_str() {
                "spidermonkey" => crate::build::JsBackend::SpiderMonkey,
                _ => crate::build::JsBackend::QuickJs,
            };
            let built = crate::build::build(&crate_dir, output.as_deref(), js)?;
            eprintln!(
                "built {} ({} bytes, {})",
                built.path.display(),
                built.info.size,
                built.info.digest
            );
            println!("{}", built.path.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Inspect { file } => {
            let bytes = read_policy(&file)?;
            let what = file.display().to_string();
            let info = inspect(&bytes, &what).map_err(with_hint)?;
            let verdict = Engine::new()
                .map_err(anyhow::Error::from)
                .and_then(|engine| Policy::new(&engine, &bytes, &what).map_err(with_hint));
            let mut json = serde_json::to_value(&info)?;
            json["valid"] = verdict.is_ok().into();
            if let Err(e) = &verdict {
                json["error"] = format!("{e:#}").into();
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
            match verdict {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e),
            }
        }
        PolicyCommand::Sign { policy, key, store } => {
            let signer = switchyard_config::PolicySigner::from_pem_file(&key)?;
            let digest = match policy.parse::<switchyard_core::Digest>() {
                Ok(d) if policy.starts_with("sha256:") => d,
                _ => {
                    let path = PathBuf::from(&policy);
                    let bytes = read_policy(&path)?;
                    // Only what is a policy gets a signature.
                    inspect(&bytes, &policy).map_err(with_hint)?.digest
                }
            };
            let doc = signer.sign(&digest);
            if let Some(uri) = &store {
                block_on(async {
                    let store = switchyard_config::open(uri).await?;
                    if !store.has_blob(&digest).await? {
                        eprintln!(
                            "note: {digest} is not in {} yet; the signature waits for it",
                            store.uri()
                        );
                    }
                    store
                        .put_signature(&digest, signer.key_id(), &doc.to_json())
                        .await?;
                    Ok(())
                })?;
                eprintln!("signature by key {} stored for {digest}", signer.key_id());
            }
            print_json(&serde_json::json!({
                "policy": digest,
                "key": doc.key,
                "algorithm": doc.algorithm,
                "signature": doc.signature,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { file, cases } => {
            let policy = load_policy(&Engine::new()?, &file)?;
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("cannot read cases file {}", cases.display()))?;
            let file_cases =
                CaseFile::from_json(&text).with_context(|| format!("in {}", cases.display()))?;
            let results = file_cases.run(&policy)?;
            let mut out = std::io::stdout().lock();
            let failed = results.iter().filter(|r| !r.passed()).count();
            for r in &results {
                if r.passed() {
                    writeln!(out, "ok    {}", r.name)?;
                } else {
                    writeln!(out, "FAIL  {}", r.name)?;
                    for m in &r.mismatches {
                        writeln!(out, "      - {m}")?;
                    }
                    writeln!(
                        out,
                        "      decision: {}",
                        serde_json::to_string(&r.decision)?
                    )?;
                }
            }
            writeln!(out, "{} passed, {} failed", results.len() - failed, failed)?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
