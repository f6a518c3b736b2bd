//! Receipts: each payment carries the proof, under the operator's signing key, that this
//! context approved it: the lowercase hex HMAC-SHA256 of `"<paymentId>:<orderId>:<qty>"`.
//! The key is the secret `signing-key`, read when a payment is made (so a rotated key signs
//! the next payment); without it payments carry no receipt.

use std::fmt::Write;

use ctxhost_sdk::{log, secrets};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret that signs receipts.
pub(crate) const SIGNING_KEY: &str = "signing-key";

/// The receipt of payment `payment_id` for `qty` units of order `order_id`, when the signing
/// key is granted and readable now.
pub(crate) fn receipt(payment_id: u64, order_id: u64, qty: u32) -> Option<String> {
    let key = signing_key()?;
    hmac_hex(&key, message(payment_id, order_id, qty).as_bytes())
}

/// At load: say once why payments will carry no receipt, if they will not.
pub(crate) fn check_key() {
    match secrets::get(SIGNING_KEY) {
        None => log::warn(&format!(
            "payments carry no receipt: secret {SIGNING_KEY} is not granted \
             (grant it in [plugins.payment.secrets]) or cannot be read now (the host's log says why)"
        )),
        Some(key) if key.is_empty() => log::warn(&format!(
            "payments carry no receipt: secret {SIGNING_KEY} is empty"
        )),
        Some(_) => {}
    }
}

/// The key, unless missing or empty (an empty key signs nothing worth trusting).
fn signing_key() -> Option<Vec<u8>> {
    secrets::get(SIGNING_KEY).filter(|key| !key.is_empty())
}

/// What a receipt signs.
fn message(payment_id: u64, order_id: u64, qty: u32) -> String {
    format!("{payment_id}:{order_id}:{qty}")
}

/// Lowercase hex HMAC-SHA256 of `message` under `key` (HMAC takes a key of any length, so
/// this is `None` only if the crate ever refused one).
fn hmac_hex(key: &[u8], message: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(message);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for byte in tag {
        let _ = write!(hex, "{byte:02x}");
    }
    Some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?").as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn the_message_is_payment_order_and_quantity() {
        assert_eq!(message(7, 3, 2), "7:3:2");
    }
}
