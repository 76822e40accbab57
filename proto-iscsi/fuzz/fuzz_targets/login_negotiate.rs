//! Drives the login state machine and the negotiation engine with arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto_iscsi::login::fuzz_login_negotiate(data);
});
