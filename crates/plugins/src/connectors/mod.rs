//! Chat connectors: people's messages between a chat platform and the kernel, on the SDK's
//! connector runtime ([`p3ak_sdk::connector`]).

pub mod slack;
