//! roomlet's client protocol (docs/protocol.md): the frames a client and
//! the server exchange over `/v1/ws`, their two encodings (JSON text and
//! MessagePack binary, one schema), and the error and close codes. No
//! WebAssembly and no sockets here: a client library could use it as is.

pub mod codec;
pub mod codes;
mod contract;
pub mod frames;
mod servers;

pub use codec::{DecodeError, Encoded, Encoding};
pub use codes::{CloseCode, ErrorCode, ErrorText};
pub use contract::MAX_DEPTH;
pub use frames::{FrameId, Inbound, ServerFrame, SignalKind, Stats, WirePeer};
pub use servers::{IceServer, Media, MediaCredential, RegionLink};
