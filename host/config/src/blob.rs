//! Encoding policy blobs for a store with small values: zlib-compressed,
//! base64, split into chunks that fit SSM's standard tier (4,096 characters).

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use switchyard_core::Digest;

use crate::store::{Result, StoreError};

/// Characters per chunk: SSM's standard-tier limit.
pub const CHUNK_CHARS: usize = 4096;

/// Largest policy accepted by any store (uncompressed). A Python policy,
/// interpreter included, is about 18 MB.
pub const MAX_BLOB_BYTES: usize = 64 << 20;

/// Largest policy kept inline as SSM parameter chunks (uncompressed); larger
/// ones need a blob bucket (`ssm:<prefix>?blobs=s3://<bucket>/<prefix>`).
pub const MAX_INLINE_BLOB_BYTES: usize = 8 << 20;

/// The manifest stored beside a blob's chunks; written last, so its presence
/// means the blob is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Uncompressed size in bytes.
    pub size: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// `zlib+base64` for chunks; `raw` for a blob held elsewhere.
    pub encoding: String,
    /// Where the blob is when it is not in chunks, e.g.
    /// `s3://bucket/prefix/sha256-<hex>` (then `chunks` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Splits a blob into chunks and their manifest.
pub(crate) fn encode(bytes: &[u8]) -> Result<(Manifest, Vec<String>)> {
    if bytes.len() > MAX_INLINE_BLOB_BYTES {
        return Err(StoreError::TooLarge {
            what: "policy blob, in bytes, for SSM parameters (give the store a bucket for \
                   large policies: ssm:<prefix>?blobs=s3://<bucket>/<prefix>)"
                .into(),
            len: bytes.len(),
            limit: MAX_INLINE_BLOB_BYTES,
        });
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).expect("in-memory write");
    let text = STANDARD.encode(z.finish().expect("in-memory write"));
    // base64 is ASCII: byte offsets are character offsets.
    let chunks: Vec<String> = text
        .as_bytes()
        .chunks(CHUNK_CHARS)
        .map(|c| String::from_utf8(c.to_vec()).expect("base64 is ASCII"))
        .collect();
    Ok((
        Manifest {
            size: bytes.len(),
            chunks: chunks.len(),
            encoding: "zlib+base64".into(),
            location: None,
        },
        chunks,
    ))
}

/// Reassembles chunks and verifies the result against `digest`.
pub(crate) fn decode(digest: &Digest, manifest: &Manifest, chunks: &[String]) -> Result<Vec<u8>> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: format!("policy blob {digest}"),
        why,
    };
    if manifest.encoding != "zlib+base64" {
        return Err(corrupt(format!("unknown encoding {:?}", manifest.encoding)));
    }
    if chunks.len() != manifest.chunks {
        return Err(corrupt(format!(
            "{} of {} chunks present",
            chunks.len(),
            manifest.chunks
        )));
    }
    if let Some(big) = chunks.iter().find(|c| c.len() > CHUNK_CHARS) {
        return Err(corrupt(format!("a chunk of {} characters", big.len())));
    }
    let compressed = STANDARD
        .decode(chunks.concat())
        .map_err(|e| corrupt(format!("not base64: {e}")))?;
    let mut bytes = Vec::with_capacity(manifest.size.min(MAX_INLINE_BLOB_BYTES));
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(MAX_INLINE_BLOB_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(format!("does not decompress: {e}")))?;
    verify(digest, bytes)
}

/// Checks that `bytes` hash to `digest`.
pub(crate) fn verify(digest: &Digest, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(StoreError::DigestMismatch {
            expected: *digest,
            actual,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_chunk_limit() {
        let bytes: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let digest = Digest::of(&bytes);
        let (m, chunks) = encode(&bytes).unwrap();
        assert!(m.chunks > 1);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_CHARS));
        assert_eq!(decode(&digest, &m, &chunks).unwrap(), bytes);
    }

    #[test]
    fn tampering_is_caught() {
        let bytes = b"policy bytes".repeat(100);
        let digest = Digest::of(&bytes);
        let (m, mut chunks) = encode(&bytes).unwrap();
        let other = encode(b"other bytes").unwrap().1;
        chunks[0] = other[0].clone();
        let err = decode(&digest, &m, &chunks).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::DigestMismatch { .. } | StoreError::Corrupt { .. }
            ),
            "{err}"
        );
        assert!(matches!(
            decode(&digest, &m, &chunks[..0]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    proptest::proptest! {
        /// Decoding whatever a store holds (chunks, manifest, a blob
        /// another host wrote) is an error or the verified bytes, never a
        /// panic or an unbounded allocation.
        #[test]
        fn decoding_arbitrary_chunks_never_panics(
            chunks in proptest::collection::vec("[A-Za-z0-9+/=]{0,64}|.{0,16}", 0..4),
            size in proptest::prelude::any::<usize>(),
            declared in 0usize..6,
            encoding in proptest::prop_oneof![proptest::strategy::Just("zlib+base64".to_owned()), ".{0,12}"],
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let manifest = Manifest { size, chunks: declared, encoding, location: None };
            let digest = Digest::of(&bytes);
            let _ = decode(&digest, &manifest, &chunks);
            // And what this host writes, it reads back.
            let (m, c) = encode(&bytes).unwrap();
            proptest::prop_assert_eq!(decode(&digest, &m, &c).unwrap(), bytes);
        }
    }
}
