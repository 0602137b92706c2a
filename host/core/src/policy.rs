//! A verified, compiled policy, ready to be instantiated.

use std::fmt;
use std::sync::Arc;

use wasmtime::component::Component;

use crate::bindings::{current, previous};
use crate::digest::Digest;
use crate::engine::Engine;
use crate::host::HostState;
use crate::verify::{PolicyError, PolicyInfo, check, check_interface};

/// A verified, compiled policy, ready to be instantiated. Cheap to share.
pub struct Policy {
    pub(crate) engine: Engine,
    pub(crate) info: PolicyInfo,
    pub(crate) pre: Pre,
}

/// A policy's exports, ready to instantiate, typed by the contract version
/// it was built against.
pub(crate) enum Pre {
    /// `switchyard:policy@0.2.0`.
    Current(current::RouterPre<HostState>),
    /// `switchyard:policy@0.1.0`.
    Previous(previous::RouterPre<HostState>),
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("info", &self.info).finish()
    }
}

impl Policy {
    /// Verifies and compiles a policy component. `what` names the source in
    /// errors (a path, or the store key).
    pub fn new(engine: &Engine, bytes: &[u8], what: &str) -> Result<Arc<Self>, PolicyError> {
        let info = check(bytes, what)?;
        let component =
            Component::new(engine.wasmtime(), bytes).map_err(|e| PolicyError::Invalid {
                digest: info.digest,
                message: format!("{e:#}"),
            })?;
        Self::from_component(engine, info, component)
    }

    /// Builds a policy from a component compiled earlier (e.g. deserialized
    /// from a precompiled cache) and the info of its original bytes.
    pub fn from_component(
        engine: &Engine,
        info: PolicyInfo,
        component: Component,
    ) -> Result<Arc<Self>, PolicyError> {
        check_interface(&info)?;
        let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
            digest: info.digest,
            detail: format!("{e:#}"),
            exports: info.exports.clone(),
        };
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        // The current contract's exports, else the previous one's; a
        // component with neither is told what the current one expects.
        let pre = match current::RouterPre::new(pre.clone()) {
            Ok(pre) => Pre::Current(pre),
            Err(e) => match previous::RouterPre::new(pre) {
                Ok(pre) => Pre::Previous(pre),
                Err(_) => return Err(wrong_world(e)),
            },
        };
        Ok(Arc::new(Policy {
            engine: engine.clone(),
            info,
            pre,
        }))
    }

    /// Digest, size, imports and exports.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The digest.
    pub fn digest(&self) -> Digest {
        self.info.digest
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        match &self.pre {
            Pre::Current(pre) => pre.instance_pre().component(),
            Pre::Previous(pre) => pre.instance_pre().component(),
        }
    }

    /// The contract version the policy was built against (`0.2.0` or
    /// `0.1.0`).
    pub fn contract_version(&self) -> &'static str {
        match &self.pre {
            Pre::Current(_) => crate::bindings::VERSIONS[0],
            Pre::Previous(_) => "0.1.0",
        }
    }

    /// The compiled machine code, for a precompiled cache.
    pub fn serialize(&self) -> Result<Vec<u8>, PolicyError> {
        self.component()
            .serialize()
            .map_err(|e| PolicyError::Invalid {
                digest: self.info.digest,
                message: format!("cannot serialize the compiled code: {e:#}"),
            })
    }

    /// Loads a policy precompiled by [`Policy::serialize`] from `path`, with
    /// the info of its original bytes. Only for files this host wrote: the
    /// machine code is trusted, not re-verified. wasmtime refuses files from
    /// another version or configuration, and that is an error here.
    pub fn from_precompiled_file(
        engine: &Engine,
        info: PolicyInfo,
        path: &std::path::Path,
    ) -> Result<Arc<Self>, PolicyError> {
        // SAFETY: the cache directory is the host's own; its files were
        // written by `serialize` on a host of this configuration.
        let component =
            unsafe { Component::deserialize_file(engine.wasmtime(), path) }.map_err(|e| {
                PolicyError::Invalid {
                    digest: info.digest,
                    message: format!("precompiled {}: {e:#}", path.display()),
                }
            })?;
        Self::from_component(engine, info, component)
    }

    /// Like [`Policy::from_precompiled_file`], from bytes already read (and
    /// checked by the caller, e.g. against a MAC), so the code checked is
    /// the code loaded.
    pub fn from_precompiled_bytes(
        engine: &Engine,
        info: PolicyInfo,
        bytes: &[u8],
    ) -> Result<Arc<Self>, PolicyError> {
        // SAFETY: as for `from_precompiled_file`: the caller vouches that
        // the bytes are what `serialize` wrote on a host of this
        // configuration.
        let component =
            unsafe { Component::deserialize(engine.wasmtime(), bytes) }.map_err(|e| {
                PolicyError::Invalid {
                    digest: info.digest,
                    message: format!("precompiled code: {e:#}"),
                }
            })?;
        Self::from_component(engine, info, component)
    }
}
