//! Policy signatures: who built or approved a policy, checked before a host
//! runs it.
//!
//! A signature is Ed25519 over a policy's digest (with a fixed context
//! string, so a signature made for anything else never verifies). It is
//! kept in the store beside the blob, one small JSON document per signing
//! key (see [`SignatureDoc`]). Keys are PEM files as OpenSSL writes them:
//!
//! ```text
//! openssl genpkey -algorithm ed25519 -out signing.pem      # PKCS#8, kept by the pipeline
//! openssl pkey -in signing.pem -pubout -out trusted.pem    # SPKI, given to every host
//! ```
//!
//! A host started with trust keys ([`TrustKeys`]) loads a policy only when
//! one of its signatures verifies under one of them; without trust keys
//! signatures are not required (and `status` says a policy is unsigned).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use switchyard_core::Digest;

/// Prefixed to the digest before signing: a signature over these bytes
/// means "this policy may route", and nothing else.
const CONTEXT: &str = "switchyard policy signature v1\n";

/// Most signers a refusal names (the others are counted). Every stored
/// signature is read: one by a trusted key counts wherever it is.
pub const MAX_SIGNATURES: usize = 10;

/// The bytes signed for `digest`.
fn message(digest: &Digest) -> Vec<u8> {
    format!("{CONTEXT}{digest}").into_bytes()
}

/// A public key's id: the first 16 hex digits of the SHA-256 of its SPKI
/// DER encoding (what `openssl pkey -pubout -outform DER | sha256sum`
/// prints, cut).
fn key_id(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("an Ed25519 public key encodes");
    let hash = sha2::Sha256::digest(der.as_bytes());
    hex::encode(&hash[..8])
}

/// One signature as the store keeps it (JSON):
/// `{"algorithm":"ed25519","key":"<key id>","signature":"<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDoc {
    /// `ed25519`.
    pub algorithm: String,
    /// The signing key's id (see [`PolicySigner::key_id`]).
    pub key: String,
    /// The 64-byte signature, base64.
    pub signature: String,
}

impl SignatureDoc {
    /// The document as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a signature serializes")
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct KeyError {
    /// The file (or where the key came from).
    pub path: String,
    /// What is wrong with it.
    pub why: String,
}

/// A private key that signs policies.
pub struct PolicySigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for PolicySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySigner")
            .field("key", &self.id)
            .finish()
    }
}

impl PolicySigner {
    /// The Ed25519 private key in a PKCS#8 PEM file (`openssl genpkey
    /// -algorithm ed25519`).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_key(path)?;
        Self::from_pem(&text).map_err(|why| KeyError {
            path: path.display().to_string(),
            why,
        })
    }

    /// The Ed25519 private key in PKCS#8 PEM text.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let key = SigningKey::from_pkcs8_pem(text).map_err(|e| {
            format!(
                "not an Ed25519 private key in PKCS#8 PEM ({e}); make one with `openssl genpkey -algorithm ed25519 -out signing.pem`"
            )
        })?;
        let id = key_id(&key.verifying_key());
        Ok(PolicySigner { key, id })
    }

    /// The id of the key (and of its public half, as hosts name it).
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Signs `digest`.
    pub fn sign(&self, digest: &Digest) -> SignatureDoc {
        let signature = self.key.sign(&message(digest));
        SignatureDoc {
            algorithm: "ed25519".into(),
            key: self.id.clone(),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }
}

/// Why a policy's signatures do not let it load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature at all.
    #[error(
        "policy {digest} is not signed, and this host runs only policies signed by a key it trusts ({trusted}): sign it (`switchyard policy sign --key <private.pem> --store <store> <policy.wasm>`, or publish with --sign-key) and publish again"
    )]
    Unsigned {
        /// The policy.
        digest: Digest,
        /// The ids of the keys this host trusts.
        trusted: String,
    },
    /// Signed, but by no key this host trusts.
    #[error(
        "policy {digest} is signed only by keys this host does not trust ({signers}); it trusts {trusted}"
    )]
    UntrustedSigner {
        /// The policy.
        digest: Digest,
        /// The ids of the keys that signed it.
        signers: String,
        /// The ids of the keys this host trusts.
        trusted: String,
    },
    /// A signature by a trusted key that does not verify: tampered, or
    /// made for another policy.
    #[error(
        "policy {digest}: its signature by trusted key {key} does not verify ({why}); the signature was tampered with or made for another policy"
    )]
    BadSignature {
        /// The policy.
        digest: Digest,
        /// The key id the signature claims.
        key: String,
        /// What failed.
        why: String,
    },
}

/// The public keys a host trusts to sign policies.
#[derive(Clone, Default)]
pub struct TrustKeys(Arc<Vec<(String, VerifyingKey)>>);

impl std::fmt::Debug for TrustKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TrustKeys").field(&self.ids()).finish()
    }
}

impl TrustKeys {
    /// The Ed25519 public keys in these SPKI PEM files (`openssl pkey
    /// -pubout`), one key per file.
    pub fn from_pem_files(paths: &[impl AsRef<Path>]) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let text = read_key(path)?;
            keys.push(Self::parse(&text).map_err(|why| KeyError {
                path: path.display().to_string(),
                why,
            })?);
        }
        Ok(TrustKeys(Arc::new(keys)))
    }

    /// The keys in the files `SWITCHYARD_TRUST_KEYS` names (separated by
    /// commas); none when it is unset or empty.
    pub fn from_env() -> Result<Self, KeyError> {
        let paths: Vec<String> = std::env::var("SWITCHYARD_TRUST_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Self::from_pem_files(&paths)
    }

    /// One Ed25519 public key in SPKI PEM text.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        Ok(TrustKeys(Arc::new(vec![Self::parse(text)?])))
    }

    fn parse(text: &str) -> Result<(String, VerifyingKey), String> {
        let key = VerifyingKey::from_public_key_pem(text).map_err(|e| {
            format!(
                "not an Ed25519 public key in SPKI PEM ({e}); make one from the signing key with `openssl pkey -in signing.pem -pubout -out trusted.pem`"
            )
        })?;
        Ok((key_id(&key), key))
    }

    /// Whether no key is trusted (then signatures are not required).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted keys' ids.
    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The key id whose signature among `docs` (stored signature
    /// documents, all of them) verifies for `digest`, or why none does. A
    /// document that does not parse counts as no signature; only those by
    /// a trusted key are checked, so no number of others hides one.
    pub fn verify(&self, digest: &Digest, docs: &[String]) -> Result<String, SignatureError> {
        let docs: Vec<SignatureDoc> = docs
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let trusted = || self.ids().join(", ");
        let mut bad = None;
        for doc in &docs {
            let Some((id, key)) = self.0.iter().find(|(id, _)| *id == doc.key) else {
                continue;
            };
            match check(key, digest, doc) {
                Ok(()) => return Ok(id.clone()),
                Err(why) => {
                    bad.get_or_insert(SignatureError::BadSignature {
                        digest: *digest,
                        key: id.clone(),
                        why,
                    });
                }
            }
        }
        Err(match bad {
            Some(e) => e,
            None if docs.is_empty() => SignatureError::Unsigned {
                digest: *digest,
                trusted: trusted(),
            },
            None => SignatureError::UntrustedSigner {
                digest: *digest,
                signers: {
                    let mut named = docs
                        .iter()
                        .take(MAX_SIGNATURES)
                        .map(|d| d.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    if docs.len() > MAX_SIGNATURES {
                        named.push_str(&format!(" and {} more", docs.len() - MAX_SIGNATURES));
                    }
                    named
                },
                trusted: trusted(),
            },
        })
    }
}

/// Whether `doc` is a valid signature of `digest` under `key`.
fn check(key: &VerifyingKey, digest: &Digest, doc: &SignatureDoc) -> Result<(), String> {
    if doc.algorithm != "ed25519" {
        return Err(format!("unknown algorithm {:?}", doc.algorithm));
    }
    let bytes = STANDARD
        .decode(&doc.signature)
        .map_err(|e| format!("not base64: {e}"))?;
    let signature = ed25519_dalek::Signature::from_slice(&bytes)
        .map_err(|_| format!("{} bytes, not 64", bytes.len()))?;
    key.verify(&message(digest), &signature)
        .map_err(|_| "wrong signature".to_owned())
}

fn read_key(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError {
        path: path.display().to_string(),
        why: format!("cannot read the key file: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAPo8nqfds0ScgJbol/1F7CofCxbHV/iRRQ2Uc3BCyf/
-----END PRIVATE KEY-----
";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAN1CwPSYljaCjL94luha7c7az2nYvok7gcuJB78oDZGY=
-----END PUBLIC KEY-----
";
    const OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOomxEcRQkcVcxCvWgYr4WDxjOlwpIXCmO58qrZOiRV/
-----END PRIVATE KEY-----
";

    #[test]
    fn signed_verifies_and_anything_else_is_told_apart() {
        let signer = PolicySigner::from_pem(PRIVATE).unwrap();
        let trust = TrustKeys::from_pem(PUBLIC).unwrap();
        assert_eq!(trust.ids(), vec![signer.key_id().to_owned()]);
        let digest = Digest::of(b"policy");
        let doc = signer.sign(&digest).to_json();
        assert_eq!(
            trust.verify(&digest, std::slice::from_ref(&doc)),
            Ok(signer.key_id().to_owned())
        );

        // Unsigned.
        assert!(matches!(
            trust.verify(&digest, &[]),
            Err(SignatureError::Unsigned { .. })
        ));
        // Signed by another key only.
        let other = PolicySigner::from_pem(OTHER_PRIVATE).unwrap();
        assert!(matches!(
            trust.verify(&digest, &[other.sign(&digest).to_json()]),
            Err(SignatureError::UntrustedSigner { .. })
        ));
        // The signature of another policy, presented for this one.
        let moved = signer.sign(&Digest::of(b"other policy")).to_json();
        assert!(matches!(
            trust.verify(&digest, &[moved]),
            Err(SignatureError::BadSignature { .. })
        ));
        // One bit of the signature flipped.
        let mut tampered = signer.sign(&digest);
        let mut raw = STANDARD.decode(&tampered.signature).unwrap();
        raw[10] ^= 1;
        tampered.signature = STANDARD.encode(raw);
        assert!(matches!(
            trust.verify(&digest, &[tampered.to_json()]),
            Err(SignatureError::BadSignature { .. })
        ));
        // A good signature beside a bad one still verifies.
        assert!(trust.verify(&digest, &[tampered.to_json(), doc]).is_ok());
    }

    #[test]
    fn a_trusted_signature_after_many_others_verifies() {
        let signer = PolicySigner::from_pem(PRIVATE).unwrap();
        let other = PolicySigner::from_pem(OTHER_PRIVATE).unwrap();
        let trust = TrustKeys::from_pem(PUBLIC).unwrap();
        let digest = Digest::of(b"policy");
        let mut docs: Vec<String> = (0..3 * MAX_SIGNATURES)
            .map(|i| match i % 2 {
                0 => other.sign(&digest).to_json(),
                _ => "not a signature".to_owned(),
            })
            .collect();
        docs.push(signer.sign(&digest).to_json());
        assert_eq!(trust.verify(&digest, &docs), Ok(signer.key_id().to_owned()));
        docs.pop();
        let e = trust.verify(&digest, &docs).unwrap_err().to_string();
        // 15 signatures by another key: 10 named, 5 counted.
        assert!(e.contains(" and 5 more"), "{e}");
    }

    #[test]
    fn keys_of_the_wrong_kind_say_how_to_make_the_right_one() {
        let e = PolicySigner::from_pem(PUBLIC).unwrap_err();
        assert!(e.contains("openssl genpkey -algorithm ed25519"), "{e}");
        let e = TrustKeys::from_pem(PRIVATE).unwrap_err();
        assert!(e.contains("openssl pkey"), "{e}");
    }
}
