//! Fuzz target: a peer or client byte stream through `FrameDecoder`, in chunks, and every
//! frame through its payload decoder (Raft batch, client request and response, hello) with
//! the default `DecodeLimits`. See `tessera_fuzz::frame_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::frame_stream(data));
