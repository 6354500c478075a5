//! A reader for Agora "AccessToken2" (`007`) tokens, written apart from
//! the auth module's builder so the tests check that builder against a
//! second reading of the format rather than against itself.
//!
//! A token is `007` and the standard base64 of a zlib stream. Inflated, it
//! is a `u16`-length-prefixed signature followed by the signed part: app
//! id (string), issue ts, expire, salt (`u32` each), a `u16` service count
//! and the services. All integers are little-endian. Only RTC services
//! (type 1) are read: a service's body depends on its type, so an unknown
//! one cannot be skipped.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The only version understood.
const VERSION: &str = "007";
/// Inflated tokens larger than this are refused: real ones are a few
/// hundred bytes.
const MAX_CONTENT: usize = 64 * 1024;
/// Agora's service type for RTC.
pub const SERVICE_RTC: u16 = 1;

/// A token's fields as they were packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// HMAC-SHA256 of the signed part.
    pub signature: Vec<u8>,
    /// Agora app id.
    pub app_id: String,
    /// Unix seconds.
    pub issue_ts: u32,
    /// Seconds after `issue_ts`.
    pub expire: u32,
    /// Per-token random value mixed into the signing key.
    pub salt: u32,
    /// In token order.
    pub services: Vec<Service>,
}

/// One RTC service of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Agora's service type; always [`SERVICE_RTC`] here.
    pub kind: u16,
    /// Privilege (1 join, 2 audio, 3 video, 4 data) to seconds after the
    /// issue time.
    pub privileges: BTreeMap<u16, u32>,
    /// Channel name.
    pub channel: String,
    /// User account; a numeric uid as its decimal string, "" for uid 0.
    pub account: String,
}

/// Reads every field of `token`; refuses trailing bytes, duplicate
/// privileges and services other than RTC.
pub fn decode(token: &str) -> Result<Decoded, String> {
    read(token).map(|(decoded, _)| decoded)
}

/// Whether `token` was signed with `app_certificate`. Errors only when the
/// token does not decode.
pub fn verify(token: &str, app_certificate: &str) -> Result<bool, String> {
    let (decoded, signed) = read(token)?;
    let key = hmac(
        &decoded.salt.to_le_bytes(),
        &hmac(&decoded.issue_ts.to_le_bytes(), app_certificate.as_bytes())?,
    )?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(&signed);
    Ok(mac.verify_slice(&decoded.signature).is_ok())
}

/// The decoded token and the bytes its signature covers.
fn read(token: &str) -> Result<(Decoded, Vec<u8>), String> {
    let content = inflate(token)?;
    let mut r = Reader(&content);
    let signature = r.bytes()?.to_vec();
    let signed = r.0.to_vec();
    let app_id = r.string()?;
    let issue_ts = r.u32()?;
    let expire = r.u32()?;
    let salt = r.u32()?;
    let count = r.u16()?;
    let mut services = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        services.push(service(&mut r)?);
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last service", r.0.len()));
    }
    let decoded = Decoded {
        signature,
        app_id,
        issue_ts,
        expire,
        salt,
        services,
    };
    Ok((decoded, signed))
}

fn inflate(token: &str) -> Result<Vec<u8>, String> {
    let body = token
        .strip_prefix(VERSION)
        .ok_or_else(|| format!("not a {VERSION} token"))?;
    let compressed = STANDARD.decode(body).map_err(|e| format!("base64: {e}"))?;
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&compressed, MAX_CONTENT)
        .map_err(|e| format!("zlib: {e}"))
}

fn service(r: &mut Reader<'_>) -> Result<Service, String> {
    let kind = r.u16()?;
    if kind != SERVICE_RTC {
        return Err(format!(
            "service type {kind} is not supported (only RTC, {SERVICE_RTC})"
        ));
    }
    let count = r.u16()?;
    let mut privileges = BTreeMap::new();
    for _ in 0..count {
        let key = r.u16()?;
        let expire = r.u32()?;
        if privileges.insert(key, expire).is_some() {
            return Err(format!("privilege {key} appears twice"));
        }
    }
    let channel = r.string()?;
    let account = r.string()?;
    Ok(Service {
        kind,
        privileges,
        channel,
        account,
    })
}

fn hmac(key: &[u8], message: &[u8]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The unread rest of the content.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "token ends early: {n} bytes wanted, {} left",
                self.0.len()
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("string: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Agora's AccessToken2 fixtures (AgoraIO/Tools,
    // DynamicKey/AgoraDynamicKey/*/test/AccessToken2Test*).
    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const APP_CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const CHANNEL: &str = "7d72365eb983485397e3e3f9d460bdda";
    /// RTC, uid 2882341273, join for 600 s, issued at 1111111 with salt 1.
    const TOKEN_UID: &str = "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj";
    /// RTC for uid 0 (empty account), otherwise the same.
    const TOKEN_UID_0: &str = "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo=";
    /// RTC with four privileges, then an RTM service.
    const TOKEN_RTC_RTM: &str = "007eJxTYOAQsrQ5s3TfH+1tvy8zZZ46EpCc0V43JXdGd2jS8porKo4KDJbmBs6OxqYpqWYGySYmZiamSUmJqRaJRoamBmaGScbG7l8EGCKYGBgYGRgYmBgYGVgYGMF8JjDJDCZZwKQCg3mKuZGxmWlqkqWFsYmFqbGleapxqnGaZYqJmUFSSkoiF4ORhYWRsYmhkbkxyCyISZwMJanFJfGlxalFACKnKng=";

    #[test]
    fn decodes_agora_vector() {
        let d = decode(TOKEN_UID).expect("decode");
        assert_eq!(d.app_id, APP_ID);
        assert_eq!(d.issue_ts, 1_111_111);
        assert_eq!(d.expire, 600);
        assert_eq!(d.salt, 1);
        assert_eq!(d.signature.len(), 32);
        assert_eq!(
            d.services,
            vec![Service {
                kind: SERVICE_RTC,
                privileges: BTreeMap::from([(1, 600)]),
                channel: CHANNEL.into(),
                account: "2882341273".into(),
            }]
        );

        let zero = decode(TOKEN_UID_0).expect("decode uid 0");
        assert_eq!(zero.services[0].account, "");
        assert_ne!(zero.signature, d.signature);
    }

    #[test]
    fn verifies_agora_vectors() {
        assert_eq!(verify(TOKEN_UID, APP_CERTIFICATE), Ok(true));
        assert_eq!(verify(TOKEN_UID_0, APP_CERTIFICATE), Ok(true));
        assert_eq!(
            verify(TOKEN_UID, "5CFd2fd1755d40ecb72977518be15d3c"),
            Ok(false)
        );
        assert_eq!(verify(TOKEN_UID, ""), Ok(false));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let rtm = decode(TOKEN_RTC_RTM).expect_err("RTM is not read");
        assert!(rtm.contains("service type 2"), "{rtm}");
        assert!(decode("006abc").is_err());
        assert!(decode("007!!!!").is_err());
        assert!(decode(&TOKEN_UID[..TOKEN_UID.len() - 8]).is_err());
        assert!(verify("007", APP_CERTIFICATE).is_err());
    }
}
