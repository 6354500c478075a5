//! Decode a client frame, encode what the room delivers in both encodings: see `roomlet_fuzz::checks` and FUZZING.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomlet_fuzz::checks::Target;

fuzz_target!(|data: &[u8]| Target::FrameRoundtrip.check(data));
