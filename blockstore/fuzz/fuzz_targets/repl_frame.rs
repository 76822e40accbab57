#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blockstore::repl::frame::fuzz_repl_frame(data);
});
