//! roomlet's fuzz targets' shared code (issue 32; FUZZING.md): the checks
//! every target runs and the seed inputs. `tests/fuzz_corpus.rs` includes
//! the same two files to replay the committed corpus on stable Rust.

pub mod checks;
pub mod seeds;
