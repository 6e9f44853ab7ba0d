//! `did:op:<64 hex>`: the on-chain id is the 32 bytes.

use alloy::primitives::B256;

pub fn parse(text: &str) -> Option<B256> {
    let hex = text.trim();
    let hex = hex.strip_prefix("did:op:").unwrap_or(hex);
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 64 {
        return None;
    }
    hex.parse::<B256>().ok()
}

pub fn format(id: &B256) -> String {
    format!("did:op:{}", hex::encode(id))
}

/// A 32-byte id given with or without `0x` (agreement ids arrive both ways).
pub fn parse_id(text: &str) -> Option<B256> {
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    (hex.len() == 64)
        .then(|| hex.parse::<B256>().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dids_and_ids_parse_in_every_spelling() {
        let hex = "ab".repeat(32);
        let id = parse(&format!("did:op:{hex}")).unwrap();
        assert_eq!(parse(&format!("0x{hex}")), Some(id));
        assert_eq!(parse(&hex.to_uppercase()), Some(id));
        assert_eq!(format(&id), format!("did:op:{hex}"));
        assert_eq!(parse_id(&hex), Some(id));
        assert_eq!(parse_id(&format!("0x{hex}")), Some(id));
        assert!(parse("did:op:1234").is_none());
        assert!(parse_id(&"zz".repeat(32)).is_none());
    }
}
