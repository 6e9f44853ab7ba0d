//! EIP-191 `personal_sign` signatures as Squid clients send them, in both forms Brizo accepted:
//! a signature over the request's own message (address + ids), or an auth token
//! `"<signature>-<timestamp>"` signed over `"Ocean Protocol Authentication\n<timestamp>"`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use alloy::primitives::{Address, Signature};

/// How long an auth token stays valid, as in Brizo.
pub const TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// Clock skew tolerated for a token's timestamp in the future.
pub const TOKEN_FUTURE_SKEW_SECS: u64 = 300;
pub const TOKEN_MESSAGE_PREFIX: &str = "Ocean Protocol Authentication\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("signature is not 65 bytes of hex")]
    Malformed,
    #[error("signature does not match {0}")]
    WrongSigner(Address),
    #[error("auth token expired (older than 24 h); sign a new one")]
    Expired,
    #[error("auth token timestamp lies in the future")]
    FromTheFuture,
}

/// The address that signed `message` (EIP-191 personal message).
///
/// Remembered for the signatures seen lately: a Squid client polls a job's status with the
/// same signed query over and over (its signatures are deterministic), and recovering a key
/// costs more than the rest of the request. The answer is a pure function of its inputs, so a
/// hit is exactly what recovering again would give.
pub fn recover(message: &str, signature: &str) -> Result<Address, AuthError> {
    type Seen = HashMap<(String, String), Address>;
    static SEEN: LazyLock<Mutex<Seen>> = LazyLock::new(Mutex::default);
    /// Bounds the memory: query messages are an address and ids, about 200 bytes with the
    /// signature; when full, it starts over.
    const REMEMBERED: usize = 4096;
    let signature = signature.trim();
    let key = (message.to_string(), signature.to_string());
    if let Some(address) = SEEN.lock().unwrap().get(&key) {
        return Ok(*address);
    }
    let sig = Signature::from_str(signature).map_err(|_| AuthError::Malformed)?;
    let address = sig
        .recover_address_from_msg(message.as_bytes())
        .map_err(|_| AuthError::Malformed)?;
    if message.len() <= 512 {
        let mut seen = SEEN.lock().unwrap();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(key, address);
    }
    Ok(address)
}

/// The public key (SEC1, uncompressed) that made a signature `verify` accepted: a signature
/// recovers the whole key, not only the address, so results can be encrypted to it.
pub fn recover_public_key(message: &str, signature: &str) -> Result<Vec<u8>, AuthError> {
    let signature = signature.trim();
    let (message, sig) = match signature
        .split_once('-')
        .filter(|_| signature.matches('-').count() == 1)
    {
        Some((sig, ts)) => (format!("{TOKEN_MESSAGE_PREFIX}{ts}"), sig),
        None => (message.to_string(), signature),
    };
    let sig = Signature::from_str(sig).map_err(|_| AuthError::Malformed)?;
    let key = sig
        .recover_from_msg(message.as_bytes())
        .map_err(|_| AuthError::Malformed)?;
    Ok(key.to_encoded_point(false).as_bytes().to_vec())
}

/// Checks that `consumer` signed either `message` itself or a valid auth token.
pub fn verify(
    consumer: Address,
    message: &str,
    signature: &str,
    now_secs: u64,
) -> Result<(), AuthError> {
    let signature = signature.trim();
    // A token is `0x<130 hex>-<digits>`: exactly one '-' (Brizo's rule).
    if let Some((sig, timestamp)) = signature
        .split_once('-')
        .filter(|_| signature.matches('-').count() == 1)
    {
        let ts: u64 = timestamp.parse().map_err(|_| AuthError::Malformed)?;
        let signer = recover(&format!("{TOKEN_MESSAGE_PREFIX}{ts}"), sig)?;
        if signer != consumer {
            return Err(AuthError::WrongSigner(consumer));
        }
        if ts > now_secs + TOKEN_FUTURE_SKEW_SECS {
            return Err(AuthError::FromTheFuture);
        }
        if now_secs.saturating_sub(ts) > TOKEN_LIFETIME_SECS {
            return Err(AuthError::Expired);
        }
        return Ok(());
    }
    if recover(message, signature)? == consumer {
        Ok(())
    } else {
        Err(AuthError::WrongSigner(consumer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    fn sign(key: &PrivateKeySigner, message: &str) -> String {
        key.sign_message_sync(message.as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn request_signatures_and_tokens() {
        let consumer = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let now = 1_800_000_000;
        let message = format!("{}{}", consumer.address(), "0xabc");
        assert_eq!(
            verify(
                consumer.address(),
                &message,
                &sign(&consumer, &message),
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify(consumer.address(), &message, &sign(&other, &message), now),
            Err(AuthError::WrongSigner(consumer.address()))
        );
        assert_eq!(
            verify(
                consumer.address(),
                "tampered",
                &sign(&consumer, &message),
                now
            ),
            Err(AuthError::WrongSigner(consumer.address()))
        );
        assert_eq!(
            verify(consumer.address(), &message, "0x1234", now),
            Err(AuthError::Malformed)
        );

        let token = |key: &PrivateKeySigner, ts: u64| {
            format!("{}-{ts}", sign(key, &format!("{TOKEN_MESSAGE_PREFIX}{ts}")))
        };
        assert_eq!(
            verify(
                consumer.address(),
                "ignored",
                &token(&consumer, now - 60),
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                consumer.address(),
                "ignored",
                &token(&consumer, now - TOKEN_LIFETIME_SECS - 1),
                now
            ),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(
                consumer.address(),
                "ignored",
                &token(&consumer, now + 3600),
                now
            ),
            Err(AuthError::FromTheFuture)
        );
        assert_eq!(
            verify(consumer.address(), "ignored", &token(&other, now), now),
            Err(AuthError::WrongSigner(consumer.address()))
        );
        // Changing the timestamp after signing breaks the token.
        let tampered = token(&consumer, now - 60)
            .replace(&format!("-{}", now - 60), &format!("-{}", now - 30));
        assert_eq!(
            verify(consumer.address(), "ignored", &tampered, now),
            Err(AuthError::WrongSigner(consumer.address()))
        );
    }
}
