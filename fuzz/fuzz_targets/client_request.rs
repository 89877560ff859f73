//! Fuzz target: a client request payload through `decode_client_request` with the default
//! `DecodeLimits`; an accepted request must round-trip. See `tessera_fuzz::client_request`.
#![no_main]

use tessera_transport::DecodeLimits;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera_fuzz::client_request(data, &DecodeLimits::default())
});
