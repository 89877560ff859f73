//! The commands a Region's Raft log carries, and their byte encoding (an entry's payload).
//!
//! Layout, all integers little-endian:
//! ```text
//! [format u8 = 1][op u8][namespace len u16][namespace][key len u32][key]
//! then by op:  Put: [value len u32][value]   Delete: nothing
//!              Cas: [expected u64][value len u32][value]   CasDelete: [expected u64]
//! ```
//! Decoding checks every length; a bad payload is an error, never a panic (entries come from
//! the disk and from peers).

/// Longest namespace, in bytes.
pub const NAMESPACE_BYTES_MAX: usize = 255;
/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Longest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;

const FORMAT: u8 = 1;

/// A write to a Region's key-value state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Unconditional write.
    Put {
        namespace: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Unconditional delete.
    Delete { namespace: String, key: Vec<u8> },
    /// Write only if the key's version is `expected_version` (0: the key must not exist).
    Cas {
        namespace: String,
        key: Vec<u8>,
        expected_version: u64,
        value: Vec<u8>,
    },
    /// Delete only if the key's version is `expected_version`.
    CasDelete {
        namespace: String,
        key: Vec<u8>,
        expected_version: u64,
    },
}

/// Why a payload could not be decoded, or a command is out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown command format {0}")]
    UnknownFormat(u8),
    #[error("unknown command op {0}")]
    UnknownOp(u8),
    #[error("namespace is not UTF-8")]
    NamespaceNotUtf8,
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} trailing bytes after the command")]
    TrailingBytes(usize),
}

impl KvCommand {
    /// The namespace and key written.
    pub fn target(&self) -> (&str, &[u8]) {
        match self {
            KvCommand::Put { namespace, key, .. }
            | KvCommand::Delete { namespace, key }
            | KvCommand::Cas { namespace, key, .. }
            | KvCommand::CasDelete { namespace, key, .. } => (namespace, key),
        }
    }

    /// Checks the size limits.
    ///
    /// # Errors
    /// `TooLong` naming the field.
    pub fn validate(&self) -> Result<(), CommandError> {
        let (namespace, key) = self.target();
        check_len("namespace", namespace.len(), NAMESPACE_BYTES_MAX)?;
        check_len("key", key.len(), KEY_BYTES_MAX)?;
        if let KvCommand::Put { value, .. } | KvCommand::Cas { value, .. } = self {
            check_len("value", value.len(), VALUE_BYTES_MAX)?;
        }
        Ok(())
    }

    /// Encodes as documented in the module docs.
    pub fn encode(&self) -> Vec<u8> {
        let (namespace, key) = self.target();
        let mut out = Vec::with_capacity(16 + namespace.len() + key.len());
        out.push(FORMAT);
        out.push(match self {
            KvCommand::Put { .. } => 1,
            KvCommand::Delete { .. } => 2,
            KvCommand::Cas { .. } => 3,
            KvCommand::CasDelete { .. } => 4,
        });
        out.extend_from_slice(&(namespace.len() as u16).to_le_bytes());
        out.extend_from_slice(namespace.as_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match self {
            KvCommand::Put { value, .. } => put_bytes(&mut out, value),
            KvCommand::Delete { .. } => {}
            KvCommand::Cas {
                expected_version,
                value,
                ..
            } => {
                out.extend_from_slice(&expected_version.to_le_bytes());
                put_bytes(&mut out, value);
            }
            KvCommand::CasDelete {
                expected_version, ..
            } => out.extend_from_slice(&expected_version.to_le_bytes()),
        }
        out
    }

    /// Decodes what `encode` wrote.
    ///
    /// # Errors
    /// A `CommandError` for anything else.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, CommandError> {
        let mut reader = Reader { bytes, at: 0 };
        let format = reader.u8()?;
        if format != FORMAT {
            return Err(CommandError::UnknownFormat(format));
        }
        let op = reader.u8()?;
        let namespace_len = reader.u16()? as usize;
        check_len("namespace", namespace_len, NAMESPACE_BYTES_MAX)?;
        let namespace = String::from_utf8(reader.take(namespace_len)?.to_vec())
            .map_err(|_| CommandError::NamespaceNotUtf8)?;
        let key = reader.bytes("key", KEY_BYTES_MAX)?;
        let command = match op {
            1 => KvCommand::Put {
                namespace,
                key,
                value: reader.bytes("value", VALUE_BYTES_MAX)?,
            },
            2 => KvCommand::Delete { namespace, key },
            3 => KvCommand::Cas {
                namespace,
                key,
                expected_version: reader.u64()?,
                value: reader.bytes("value", VALUE_BYTES_MAX)?,
            },
            4 => KvCommand::CasDelete {
                namespace,
                key,
                expected_version: reader.u64()?,
            },
            other => return Err(CommandError::UnknownOp(other)),
        };
        if reader.at != bytes.len() {
            return Err(CommandError::TrailingBytes(bytes.len() - reader.at));
        }
        Ok(command)
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CommandError> {
    if len > max {
        return Err(CommandError::TooLong { what, len, max });
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A bounds-checked cursor over a byte slice.
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], CommandError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(CommandError::Truncated(self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub fn u8(&mut self) -> Result<u8, CommandError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, CommandError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub fn u32(&mut self) -> Result<u32, CommandError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, CommandError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, CommandError> {
        let len = self.u32()? as usize;
        check_len(what, len, max)?;
        Ok(self.take(len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = KvCommand> {
        let ns = "[a-z]{0,8}";
        let bytes = proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            (ns, bytes.clone(), bytes.clone()).prop_map(|(namespace, key, value)| KvCommand::Put {
                namespace,
                key,
                value
            }),
            (ns, bytes.clone()).prop_map(|(namespace, key)| KvCommand::Delete { namespace, key }),
            (ns, bytes.clone(), any::<u64>(), bytes.clone()).prop_map(
                |(namespace, key, expected_version, value)| KvCommand::Cas {
                    namespace,
                    key,
                    expected_version,
                    value
                }
            ),
            (ns, bytes, any::<u64>()).prop_map(|(namespace, key, expected_version)| {
                KvCommand::CasDelete {
                    namespace,
                    key,
                    expected_version,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn commands_round_trip(command in command()) {
            prop_assert_eq!(KvCommand::decode(&command.encode()), Ok(command));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = KvCommand::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(command in command()) {
            let encoded = command.encode();
            for len in 0..encoded.len() {
                prop_assert!(KvCommand::decode(&encoded[..len]).is_err());
            }
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused_without_allocating() {
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            KvCommand::decode(&bytes),
            Err(CommandError::TooLong { what: "key", .. })
        ));
    }
}
