//! Length-prefixed framing and a sans-I/O frame decoder.
//!
//! Every frame on a Tessera connection is:
//!
//! ```text
//! +--------------------+-----------+---------------------------+
//! | length: u32 LE     | type: u8  | payload: `length` bytes   |
//! +--------------------+-----------+---------------------------+
//! ```
//!
//! `length` counts the payload only (not the 5 header bytes) and must not exceed the
//! receiver's `frame_bytes_max`. The payload is one FlatBuffer whose root depends on `type`
//! (see [`FrameType`] and `docs/protocol.md`).
//!
//! [`FrameDecoder`] takes bytes in chunks of any size, as they come off a socket, and yields
//! whole frames. It checks a header as soon as its 5 bytes are in, so a 4 GiB length prefix is
//! an error before any buffer grows towards it: the decoder only ever holds bytes that were
//! actually received, at most one maximal frame plus one chunk.

use crate::TransportError;

/// Bytes of the frame header: the length then the type.
pub const FRAME_HEADER_BYTES: usize = 5;

/// What a frame's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// A `tessera.handshake.Hello`: the first frame on a connection, both ways.
    Hello,
    /// A `tessera.raft.RaftBatch`: many Regions' messages from one core to one core.
    RaftBatch,
    /// A `tessera.client.ClientRequest`.
    ClientRequest,
    /// A `tessera.client.ClientResponse`.
    ClientResponse,
    /// A `tessera.raft.SnapshotChunk`: a piece of a snapshot too large for one `RaftBatch`.
    SnapshotChunk,
}

impl FrameType {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            FrameType::Hello => 1,
            FrameType::RaftBatch => 2,
            FrameType::ClientRequest => 3,
            FrameType::ClientResponse => 4,
            FrameType::SnapshotChunk => 5,
        }
    }

    /// The type for a wire byte.
    ///
    /// # Errors
    /// [`TransportError::UnknownFrameType`] for any other byte (0 is reserved).
    pub const fn from_code(code: u8) -> Result<FrameType, TransportError> {
        match code {
            1 => Ok(FrameType::Hello),
            2 => Ok(FrameType::RaftBatch),
            3 => Ok(FrameType::ClientRequest),
            4 => Ok(FrameType::ClientResponse),
            5 => Ok(FrameType::SnapshotChunk),
            _ => Err(TransportError::UnknownFrameType { code }),
        }
    }

    /// The name used in errors and logs.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "Hello",
            FrameType::RaftBatch => "RaftBatch",
            FrameType::ClientRequest => "ClientRequest",
            FrameType::ClientResponse => "ClientResponse",
            FrameType::SnapshotChunk => "SnapshotChunk",
        }
    }
}

/// One complete frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's bytes on the wire: header then payload.
    ///
    /// # Panics
    /// If the payload is 4 GiB or more, which no encoder in this crate produces.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self.frame_type, &self.payload)
    }
}

/// Writes header and payload into one buffer, ready to send.
///
/// # Panics
/// If `payload` is 4 GiB or more: callers bound their payloads far below that.
pub fn encode_frame(frame_type: FrameType, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame payload of 4 GiB or more");
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.push(frame_type.code());
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits a byte stream into frames. Sans-I/O: feed it with [`FrameDecoder::push`], then call
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
///
/// After any error the stream is out of sync; the connection must be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as frames.
    consumed: usize,
    frame_bytes_max: u32,
}

impl FrameDecoder {
    /// A decoder refusing payloads longer than `frame_bytes_max`.
    pub fn new(frame_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            frame_bytes_max,
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Appends received bytes.
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`] or [`TransportError::UnknownFrameType`] when the next
    /// frame's header is complete and bad; [`TransportError::DecoderBacklog`] when the caller
    /// let more than one maximal frame plus this chunk pile up without draining frames.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TransportError> {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        let max_bytes = FRAME_HEADER_BYTES + self.frame_bytes_max as usize + chunk.len();
        if self.buffer.len() + chunk.len() > max_bytes {
            return Err(TransportError::DecoderBacklog {
                buffered_bytes: self.buffer.len() + chunk.len(),
                max_bytes,
            });
        }
        self.buffer.extend_from_slice(chunk);
        self.peek_header().map(|_| ())
    }

    /// The next complete frame, or `None` when more bytes are needed.
    ///
    /// # Errors
    /// As [`FrameDecoder::push`], for the header of the next frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        let Some((frame_type, length)) = self.peek_header()? else {
            return Ok(None);
        };
        let start = self.consumed + FRAME_HEADER_BYTES;
        let end = start + length;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let payload = self.buffer[start..end].to_vec();
        self.consumed = end;
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        Ok(Some(Frame {
            frame_type,
            payload,
        }))
    }

    /// Call at end of stream.
    ///
    /// # Errors
    /// [`TransportError::TruncatedFrame`] when a partial frame is buffered.
    pub fn finish(&self) -> Result<(), TransportError> {
        match self.buffered_bytes() {
            0 => Ok(()),
            buffered_bytes => Err(TransportError::TruncatedFrame { buffered_bytes }),
        }
    }

    /// The header of the next frame, checked, once its 5 bytes are buffered.
    fn peek_header(&self) -> Result<Option<(FrameType, usize)>, TransportError> {
        let pending = &self.buffer[self.consumed..];
        let Some(header) = pending.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if length > self.frame_bytes_max {
            return Err(TransportError::FrameTooLarge {
                length_bytes: u64::from(length),
                max_bytes: self.frame_bytes_max,
            });
        }
        let frame_type = FrameType::from_code(header[4])?;
        Ok(Some((frame_type, length as usize)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut FrameDecoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn frames_split_at_every_byte_come_out_whole() {
        let frames = vec![
            Frame {
                frame_type: FrameType::Hello,
                payload: vec![1, 2, 3],
            },
            Frame {
                frame_type: FrameType::RaftBatch,
                payload: Vec::new(),
            },
            Frame {
                frame_type: FrameType::ClientResponse,
                payload: vec![9; 300],
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for chunk_bytes in [1, 2, 5, 7, 64, wire.len()] {
            let mut decoder = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for chunk in wire.chunks(chunk_bytes) {
                decoder.push(chunk).unwrap();
                got.extend(drain(&mut decoder));
            }
            decoder.finish().unwrap();
            assert_eq!(got, frames, "chunk size {chunk_bytes}");
        }
    }

    #[test]
    fn four_gib_length_prefix_is_refused_without_allocating() {
        let mut decoder = FrameDecoder::new(1 << 20);
        let err = decoder.push(&[0xff, 0xff, 0xff, 0xff, 2]).unwrap_err();
        assert!(matches!(
            err,
            TransportError::FrameTooLarge {
                length_bytes: 0xffff_ffff,
                ..
            }
        ));
        assert!(decoder.buffer.capacity() < 1024);
    }

    #[test]
    fn unknown_type_and_truncation_are_typed_errors() {
        let mut decoder = FrameDecoder::new(64);
        assert!(matches!(
            decoder.push(&[0, 0, 0, 0, 0]),
            Err(TransportError::UnknownFrameType { code: 0 })
        ));
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&[10, 0, 0, 0, 1, 1, 2]).unwrap();
        assert!(decoder.next_frame().unwrap().is_none());
        assert!(matches!(
            decoder.finish(),
            Err(TransportError::TruncatedFrame { buffered_bytes: 7 })
        ));
    }

    #[test]
    fn undrained_pushes_hit_the_backlog_bound() {
        let mut decoder = FrameDecoder::new(8);
        let frame = encode_frame(FrameType::Hello, &[0; 8]);
        decoder.push(&frame).unwrap();
        decoder.push(&frame).unwrap();
        let err = decoder.push(&frame).unwrap_err();
        assert!(matches!(err, TransportError::DecoderBacklog { .. }));
    }
}
