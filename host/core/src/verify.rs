//! Static verification: a component's interface is read and checked
//! before any code is generated, so a policy that asks for capabilities is
//! refused by name.

use serde::Serialize;
use wasmparser::{Parser, Payload};

use crate::bindings::{ALLOWED_IMPORTS, REQUIRED_EXPORTS, WORLD};
use crate::digest::Digest;

/// Why bytes are not a usable policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not WebAssembly at all.
    #[error(
        "{what} is not a WebAssembly file (it does not start with \\0asm); a policy is a WebAssembly component"
    )]
    NotWasm {
        /// What was read (a path or a digest).
        what: String,
    },
    /// A core module, not a component.
    #[error(
        "{what} is a core WebAssembly module, not a component; a policy is a component (wit-component turns a module built with switchyard-guest into one)"
    )]
    CoreModule {
        /// What was read.
        what: String,
    },
    /// Malformed or rejected by the compiler.
    #[error("policy {digest} is not a valid component: {message}")]
    Invalid {
        /// The blob's digest.
        digest: Digest,
        /// The parser's or compiler's complaint.
        message: String,
    },
    /// Imports something beyond the `switchyard:policy` interfaces.
    #[error(
        "policy {digest} imports `{import}`; policies may import only {allowed} (no WASI: no files, network, environment or clock)",
        allowed = ALLOWED_IMPORTS.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImport {
        /// The blob's digest.
        digest: Digest,
        /// The offending import's name.
        import: String,
    },
    /// Does not implement the `router` world.
    #[error(
        "policy {digest} does not implement world `{WORLD}` (nor its previous version, 0.1.0): {detail}; it exports [{exports}]",
        exports = exports.join(", ")
    )]
    WrongWorld {
        /// The blob's digest.
        digest: Digest,
        /// What is wrong.
        detail: String,
        /// What it exports instead.
        exports: Vec<String>,
    },
}

/// What `policy inspect` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyInfo {
    /// `sha256:<hex>` of the component bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: usize,
    /// Top-level import names (instances and functions; type imports grant
    /// nothing and are left out).
    pub imports: Vec<String>,
    /// Top-level export names.
    pub exports: Vec<String>,
}

/// Reads a component's top-level imports and exports without compiling it,
/// so a forbidden policy is refused before any code generation.
pub fn inspect(bytes: &[u8], what: &str) -> Result<PolicyInfo, PolicyError> {
    let digest = Digest::of(bytes);
    if !bytes.starts_with(b"\0asm") {
        return Err(PolicyError::NotWasm { what: what.into() });
    }
    if Parser::is_core_wasm(bytes) {
        return Err(PolicyError::CoreModule { what: what.into() });
    }
    let invalid = |e: wasmparser::BinaryReaderError| PolicyError::Invalid {
        digest,
        message: e.to_string(),
    };
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have imports of their own; only the
    // outermost ones are the component's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    let i = i.map_err(invalid)?;
                    // Type imports (e.g. `route-config` from the world's
                    // `use`) grant nothing; only instances and functions do.
                    if !matches!(i.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(i.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(e.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(PolicyInfo {
        digest,
        size: bytes.len(),
        imports,
        exports,
    })
}

/// Reads a component's interface and checks it: only the allowed imports,
/// the world's exports. Does not compile it.
pub fn check(bytes: &[u8], what: &str) -> Result<PolicyInfo, PolicyError> {
    let info = inspect(bytes, what)?;
    check_interface(&info)?;
    Ok(info)
}

/// Checks a policy's interface: only allowed imports, the world's exports.
pub(crate) fn check_interface(info: &PolicyInfo) -> Result<(), PolicyError> {
    if let Some(bad) = info
        .imports
        .iter()
        .find(|i| !ALLOWED_IMPORTS.contains(&i.as_str()))
    {
        return Err(PolicyError::ForbiddenImport {
            digest: info.digest,
            import: bad.clone(),
        });
    }
    let missing: Vec<&str> = REQUIRED_EXPORTS
        .iter()
        .copied()
        .filter(|e| !info.exports.iter().any(|x| x == e))
        .collect();
    if !missing.is_empty() {
        return Err(PolicyError::WrongWorld {
            digest: info.digest,
            detail: format!("missing export(s) {}", missing.join(", ")),
            exports: info.exports.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_rejects_non_wasm_and_core_modules() {
        assert!(matches!(
            inspect(b"hello", "x"),
            Err(PolicyError::NotWasm { .. })
        ));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            inspect(core, "x"),
            Err(PolicyError::CoreModule { .. })
        ));
    }
}
