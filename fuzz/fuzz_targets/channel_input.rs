//! Everything a hostile peer could send on the channel, decoded by a real
//! session: hello, multiplexer frames, stream openings, control messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ds_proto::fuzzing::drive_session_with_input(data);
});
