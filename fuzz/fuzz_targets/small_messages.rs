//! Control message bodies and egress destinations on their own.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ds_proto::fuzzing::decode_small_messages(data);
});
