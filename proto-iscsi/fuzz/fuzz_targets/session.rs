//! Drives a logged-in iSCSI session (R2T, Data-Out, task management, NOP, Text, logout, timers)
//! with actions decoded from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto_iscsi::session::fuzz::full_feature(data);
});
