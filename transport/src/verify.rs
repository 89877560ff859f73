//! Helpers every decoder shares: verify a root with the configured limits, then read fields
//! with range checks.

use flatbuffers::{Follow, Vector, Verifiable};
use tessera_core::NodeId;

use crate::{DecodeLimits, TransportError};

/// Checks the file identifier, then runs the FlatBuffers verifier with `limits`, and returns
/// the root table.
pub(crate) fn verified_root<'a, T>(
    frame: &'static str,
    identifier: &'static str,
    payload: &'a [u8],
    limits: &DecodeLimits,
) -> Result<T::Inner, TransportError>
where
    T: Follow<'a> + Verifiable + 'a,
{
    if payload.len() > limits.frame_bytes_max as usize {
        return Err(TransportError::FrameTooLarge {
            length_bytes: payload.len() as u64,
            max_bytes: limits.frame_bytes_max,
        });
    }
    // `buffer_has_identifier` asserts on buffers shorter than a root offset plus identifier,
    // so the length is checked first: a short payload is a typed error, not a panic.
    let identified = payload.len()
        >= flatbuffers::SIZE_UOFFSET + flatbuffers::FILE_IDENTIFIER_LENGTH
        && flatbuffers::buffer_has_identifier(payload, identifier, false);
    if !identified {
        return Err(TransportError::BadIdentifier {
            frame,
            expected: identifier,
        });
    }
    flatbuffers::root_with_opts::<T>(&limits.verifier_options(), payload)
        .map_err(|source| TransportError::Verification { frame, source })
}

/// A node id that must not be 0.
pub(crate) fn node_id(
    frame: &'static str,
    field: &'static str,
    raw: u64,
) -> Result<NodeId, TransportError> {
    if raw == 0 {
        return Err(TransportError::invalid(
            frame,
            field,
            "node id 0 is reserved",
        ));
    }
    Ok(NodeId(raw))
}

/// An optional byte vector (absent = empty), copied out, at most `max` bytes.
pub(crate) fn bytes(
    frame: &'static str,
    field: &'static str,
    vector: Option<Vector<'_, u8>>,
    max: usize,
) -> Result<Vec<u8>, TransportError> {
    let bytes = vector.map(|v| v.bytes()).unwrap_or_default();
    TransportError::check_count(frame, field, bytes.len(), max)?;
    Ok(bytes.to_vec())
}

/// An optional string (absent = empty), copied out, at most `max` bytes.
pub(crate) fn text(
    frame: &'static str,
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<String, TransportError> {
    let value = value.unwrap_or_default();
    TransportError::check_count(frame, field, value.len(), max)?;
    Ok(value.to_owned())
}
