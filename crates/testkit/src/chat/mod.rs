//! Loopback fakes of the chat platforms the connectors talk to.

pub mod slack;
