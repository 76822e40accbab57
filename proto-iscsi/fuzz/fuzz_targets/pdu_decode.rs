//! Feeds arbitrary bytes to the iSCSI PDU stream decoder, with and without digests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto_iscsi::pdu::fuzz_decode(data);
});
