//! Fuzzes the SCSI logical unit with arbitrary CDBs and data-out buffers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto_iscsi::scsi::fuzz::run_command(data);
});
