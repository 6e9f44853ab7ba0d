//! Proofs of computation: signed receipts binding what ran to the agreement (format in
//! `docs/receipt.md`), the content digests they hold, and their verification.

pub mod build;
pub mod digest;
pub mod receipt;
pub mod verify;
