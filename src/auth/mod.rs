//! Who is asking: Ethereum signatures of Squid clients.

pub mod signature;
