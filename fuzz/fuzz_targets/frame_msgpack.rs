//! The MessagePack frame decoder: see `roomlet_fuzz::checks` and FUZZING.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomlet_fuzz::checks::Target;

fuzz_target!(|data: &[u8]| Target::FrameMsgpack.check(data));
