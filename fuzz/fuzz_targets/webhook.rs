#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verifyd_fuzz::webhook(data));
