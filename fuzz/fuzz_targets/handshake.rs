//! Any bytes as a plugin's side of a connection during the handshake: read as the host reads
//! them (frame decoder, then the strict message decoder) and fed to the handshake state
//! machine. It never panics; it welcomes only a hello under the plugin's own name with a
//! common version, and reaches `registered` only once, after a welcome, with a registration
//! that the host's validation accepts — and nothing is accepted after the end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_kernel::host::handshake::{Handshake, Step};
use p3ak_kernel::host::registration::{MAX_ACTIONS, MAX_DESCRIPTION, Registration, validate};
use p3ak_proto::{Envelope, FrameDecoder, Message, PluginKind};

include!("../../crates/kernel/src/host/handshake_check.rs");

fuzz_target!(|data: &[u8]| {
    run(data);
});
