//! The NHRP Authentication extension (type 7) in its cleartext form, as Cisco IOS and FRR
//! nhrpd send it (`ip nhrp authentication`, `nhrp authentication`): a 4-byte big-endian
//! authentication type 1 followed by the secret bytes, no padding. RFC 2332 §5.3.4.
//!
//! Only building and comparing that value lives here; whether a message must carry it is the
//! caller's policy. Cleartext authentication protects against misconfiguration, not against an
//! attacker on the underlay.

use crate::wire::nhrp::{Extension, ExtensionBody};

/// Authentication type of a cleartext password (FRR `NHRP_AUTHENTICATION_PLAINTEXT`).
pub const CLEARTEXT: u32 = 1;

/// The compulsory Authentication extension carrying `secret` in cleartext.
pub fn extension(secret: &[u8]) -> Extension {
    Extension {
        compulsory: true,
        body: ExtensionBody::Authentication(value(secret)),
    }
}

/// Whether `extensions` carry an Authentication extension whose value is exactly the
/// cleartext form of `secret` (type and length included, as FRR compares it). The first
/// Authentication extension decides; a message without one fails.
pub fn verify(extensions: &[Extension], secret: &[u8]) -> bool {
    let expected = value(secret);
    extensions
        .iter()
        .find_map(|e| match &e.body {
            ExtensionBody::Authentication(v) => Some(v),
            _ => None,
        })
        .is_some_and(|v| constant_time_eq(v, &expected))
}

fn value(secret: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + secret.len());
    v.extend_from_slice(&CLEARTEXT.to_be_bytes());
    v.extend_from_slice(secret);
    v
}

/// Compares without an early exit on the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_type_one_then_the_secret() {
        let e = extension(b"dmvpn");
        assert!(e.compulsory);
        assert_eq!(
            e.body,
            ExtensionBody::Authentication(vec![0, 0, 0, 1, b'd', b'm', b'v', b'p', b'n'])
        );
    }

    #[test]
    fn verify_needs_the_exact_value() {
        let good = [extension(b"secret")];
        assert!(verify(&good, b"secret"));
        assert!(!verify(&good, b"secreT"));
        assert!(!verify(&good, b"secret2"));
        assert!(!verify(&good, b"secre"));
        assert!(!verify(&[], b"secret"));
        let wrong_type = [Extension {
            compulsory: true,
            body: ExtensionBody::Authentication(vec![0, 0, 0, 2, b's']),
        }];
        assert!(!verify(&wrong_type, b"s"));
    }

    #[test]
    fn the_first_authentication_extension_decides() {
        assert!(!verify(&[extension(b"bad"), extension(b"good")], b"good"));
        assert!(verify(&[extension(b"good"), extension(b"bad")], b"good"));
    }
}
