#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto_nvmeof::fuzz::auth_messages(data);
});
