//! Agora RTC tokens in the "AccessToken2" format (version `007`).
//!
//! Rooms whose media goes through Agora need a token Agora accepts, signed
//! with the project's app certificate. Everything here is pure (the caller
//! supplies the issue time and the salt), so it runs on wasm and natively,
//! and Agora's published test vectors pin it down byte for byte.
//!
//! Layout, all integers little-endian, strings as a `u16` length and bytes:
//! `content = string(signature) ++ signing_info`, where `signing_info` is
//! the app id, issue ts, token expire, salt, a `u16` service count and each
//! service; the RTC service is its type (1), a `u16`-counted map of
//! `u16` privilege to `u32` expire sorted by privilege, the channel and the
//! account. The signature is HMAC-SHA256 over `signing_info`, keyed by
//! HMAC(salt, HMAC(issue ts, certificate)). The token is `007` followed by
//! the padded standard base64 of the zlib-compressed content.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Every AccessToken2 starts with it; Agora picks the parser by it.
pub const VERSION: &str = "007";

/// Agora rejects channel names of 64 bytes or more.
pub const MAX_CHANNEL_LEN: usize = 63;

const SERVICE_RTC: u16 = 1;
const PRIVILEGE_JOIN_CHANNEL: u16 = 1;
const PRIVILEGE_PUBLISH_AUDIO: u16 = 2;
const PRIVILEGE_PUBLISH_VIDEO: u16 = 3;
const PRIVILEGE_PUBLISH_DATA: u16 = 4;

/// Punctuation Agora allows in a channel name besides ASCII letters and
/// digits.
const CHANNEL_PUNCTUATION: &[u8] = b" !#$%&()+-:;<=.>?@[]^_{}|~,";

/// Marks a channel name derived from a hash, so it cannot be mistaken for
/// a room that was used verbatim.
const HASHED_PREFIX: &str = "rh-";
/// 160 bits of SHA-256: collisions between room names stay out of reach
/// while the name stays well under Agora's limit.
const HASHED_HEX_LEN: usize = 40;

/// zlib's default level. Contents this short usually come out of miniz as
/// one stored block (a token some 25 characters longer than zlib's); any
/// zlib stream inflates to the same content, which is all Agora reads.
const COMPRESSION_LEVEL: u8 = 6;

/// What an RTC token lets its holder do, each for a number of seconds from
/// the issue time (Agora's "privilege expire"; the token's own expiry still
/// bounds them).
///
/// Joining is always granted: a token that cannot join is useless. A
/// publish privilege left `None` is left out of the token, which is how
/// Agora tells an audience member from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcPrivileges {
    /// Join the channel.
    pub join: u32,
    /// Publish audio.
    pub publish_audio: Option<u32>,
    /// Publish video.
    pub publish_video: Option<u32>,
    /// Send data streams.
    pub publish_data: Option<u32>,
}

impl RtcPrivileges {
    /// Join only: Agora's subscriber role.
    pub fn subscriber(expire: u32) -> Self {
        Self {
            join: expire,
            publish_audio: None,
            publish_video: None,
            publish_data: None,
        }
    }

    /// Join and publish everything for the same time: Agora's publisher
    /// role.
    pub fn publisher(expire: u32) -> Self {
        Self {
            join: expire,
            publish_audio: Some(expire),
            publish_video: Some(expire),
            publish_data: Some(expire),
        }
    }

    /// Granted privileges in the order the map is packed (by key).
    fn entries(&self) -> impl Iterator<Item = (u16, u32)> {
        [
            (PRIVILEGE_JOIN_CHANNEL, Some(self.join)),
            (PRIVILEGE_PUBLISH_AUDIO, self.publish_audio),
            (PRIVILEGE_PUBLISH_VIDEO, self.publish_video),
            (PRIVILEGE_PUBLISH_DATA, self.publish_data),
        ]
        .into_iter()
        .filter_map(|(key, expire)| expire.map(|e| (key, e)))
    }
}

/// An RTC token for `account` in `channel`.
///
/// `token_expire` is seconds from `issue_ts` (Unix seconds); `salt` should
/// be random per token so two tokens issued in the same second differ.
/// Agora identifies a numeric uid by its decimal string and uid 0 (anyone)
/// by the empty account. The caller checks the app id and certificate with
/// [`is_app_id`] and the channel with [`is_channel_name`] first: Agora's
/// edge refuses tokens built from anything else. Strings longer than the
/// format's 65 535 bytes are cut there so the token stays well-formed.
#[allow(clippy::too_many_arguments)]
pub fn rtc_token(
    app_id: &str,
    app_certificate: &str,
    channel: &str,
    account: &str,
    token_expire: u32,
    privileges: &RtcPrivileges,
    issue_ts: u32,
    salt: u32,
) -> String {
    let service = rtc_service(channel, account, privileges);
    let content = signed_content(
        app_id,
        app_certificate,
        issue_ts,
        token_expire,
        salt,
        &[&service],
    );
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&content, COMPRESSION_LEVEL);
    let mut token = String::with_capacity(VERSION.len() + compressed.len().div_ceil(3) * 4);
    token.push_str(VERSION);
    STANDARD.encode_string(compressed, &mut token);
    token
}

/// Whether `s` can be an Agora app id or app certificate: Agora's own
/// builders refuse anything but 32 hex digits.
pub fn is_app_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether Agora accepts `s` as a channel name.
pub fn is_channel_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CHANNEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || CHANNEL_PUNCTUATION.contains(&b))
}

/// The Agora channel for a roomlet room.
///
/// Room names Agora accepts are kept, so channels stay recognisable in
/// Agora's console; any other name (too long, empty, non-ASCII, `/`...)
/// becomes `rh-` and 40 hex digits of its SHA-256. A valid room name that
/// already has that shape is hashed too, so no two rooms share a channel.
pub fn channel_name(room: &str) -> String {
    if is_channel_name(room) && !looks_hashed(room) {
        return room.to_owned();
    }
    let digest = Sha256::digest(room.as_bytes());
    let mut name = String::with_capacity(HASHED_PREFIX.len() + HASHED_HEX_LEN);
    name.push_str(HASHED_PREFIX);
    for byte in digest.iter().take(HASHED_HEX_LEN / 2) {
        name.push(hex_digit(byte >> 4));
        name.push(hex_digit(byte & 0x0f));
    }
    name
}

fn looks_hashed(s: &str) -> bool {
    s.strip_prefix(HASHED_PREFIX).is_some_and(|hex| {
        hex.len() == HASHED_HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// The packed RTC service: type, privileges, channel, account.
fn rtc_service(channel: &str, account: &str, privileges: &RtcPrivileges) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + 4 * 6 + 4 + channel.len() + account.len());
    put_u16(&mut out, SERVICE_RTC);
    let entries: Vec<(u16, u32)> = privileges.entries().collect();
    put_u16(&mut out, u16::try_from(entries.len()).unwrap_or(u16::MAX));
    for (key, expire) in entries {
        put_u16(&mut out, key);
        put_u32(&mut out, expire);
    }
    put_string(&mut out, channel.as_bytes());
    put_string(&mut out, account.as_bytes());
    out
}

/// The uncompressed token body for already packed `services` (in service
/// type order): the signature, then what it signs.
fn signed_content(
    app_id: &str,
    app_certificate: &str,
    issue_ts: u32,
    expire: u32,
    salt: u32,
    services: &[&[u8]],
) -> Vec<u8> {
    let mut info =
        Vec::with_capacity(2 + app_id.len() + 14 + services.iter().map(|s| s.len()).sum::<usize>());
    put_string(&mut info, app_id.as_bytes());
    put_u32(&mut info, issue_ts);
    put_u32(&mut info, expire);
    put_u32(&mut info, salt);
    put_u16(&mut info, u16::try_from(services.len()).unwrap_or(u16::MAX));
    for service in services {
        info.extend_from_slice(service);
    }

    let key = hmac_sha256(
        &salt.to_le_bytes(),
        &hmac_sha256(&issue_ts.to_le_bytes(), app_certificate.as_bytes()),
    );
    let signature = hmac_sha256(&key, &info);

    let mut content = Vec::with_capacity(2 + signature.len() + info.len());
    put_string(&mut content, &signature);
    content.extend_from_slice(&info);
    content
}

/// HMAC-SHA256 with a key of at most one SHA-256 block. HMAC zero-pads such
/// keys to the block size itself (RFC 2104), so padding here gives the same
/// MAC through the infallible constructor, with the bound checked at
/// compile time.
fn hmac_sha256<const N: usize>(key: &[u8; N], message: &[u8]) -> [u8; 32] {
    const {
        assert!(
            N <= 64,
            "HMAC-SHA256 keys longer than a block are hashed first"
        )
    };
    let mut block = Key::<HmacSha256>::default();
    for (slot, byte) in block.iter_mut().zip(key) {
        *slot = *byte;
    }
    let mut mac = <HmacSha256 as KeyInit>::new(&block);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    put_u16(out, len);
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Agora's AccessToken2 test fixtures (AgoraIO/Tools,
    // DynamicKey/AgoraDynamicKey/*/test).
    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const APP_CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const CHANNEL: &str = "7d72365eb983485397e3e3f9d460bdda";
    const UID: &str = "2882341273";
    const ISSUE_TS: u32 = 1_111_111;
    const SALT: u32 = 1;
    const EXPIRE: u32 = 600;

    /// RTC, uid 2882341273, join for 600 s (python3 `test_service_rtc`;
    /// the same string in the nodejs, java, cpp and php tests).
    const TOKEN_UID: &str = "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj";
    /// The same token compressed by C#'s zlib (csharp `build_ServiceRtc`).
    const TOKEN_UID_CSHARP: &str = "007eJwlx6EKQjEUgOGjYDEJgsG0R9h2zrazKAaDgtGrQdg880Gsgk2M+gA+wI0Wg1jMPodglYv8/OFTMLjUs9V69/zO6/7rvLxP349bUlUnXk+Lw3E/VBCDHo/QSfF6Q+TJ5ZwKJ2uc9iYjTj49qNoALWj+11hBkGDRu5IjI7HDGAoW3EYhr7NI6oJltkjGBvwBwmok4w==";
    /// The same token from Go's compress/zlib, which ends on a sync flush
    /// rather than a final block (go `Test_AssessToken_ServiceRtc`).
    const TOKEN_UID_GO: &str = "007eJxSYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxoAAAAD//8JqJOM=";
    /// RTC, uid 0 (empty account), join for 600 s (python3
    /// `test_service_rtc_uid_0`).
    const TOKEN_UID_0: &str = "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo=";
    /// RTC with all four privileges for 600 s, then RTM for `test_user`
    /// (nodejs `AccessToken_Test4`).
    const TOKEN_RTC_RTM: &str = "007eJxTYOAQsrQ5s3TfH+1tvy8zZZ46EpCc0V43JXdGd2jS8porKo4KDJbmBs6OxqYpqWYGySYmZiamSUmJqRaJRoamBmaGScbG7l8EGCKYGBgYGRgYmBgYGVgYGMF8JjDJDCZZwKQCg3mKuZGxmWlqkqWFsYmFqbGleapxqnGaZYqJmUFSSkoiF4ORhYWRsYmhkbkxyCyISZwMJanFJfGlxalFACKnKng=";

    fn inflate(token: &str) -> Vec<u8> {
        let body = token.strip_prefix(VERSION).expect("version prefix");
        let compressed = STANDARD.decode(body).expect("base64");
        miniz_oxide::inflate::decompress_to_vec_zlib(&compressed).expect("zlib")
    }

    fn build(account: &str, privileges: &RtcPrivileges) -> String {
        rtc_token(
            APP_ID,
            APP_CERTIFICATE,
            CHANNEL,
            account,
            EXPIRE,
            privileges,
            ISSUE_TS,
            SALT,
        )
    }

    #[test]
    fn matches_agora_uid_vector() {
        let ours = build(UID, &RtcPrivileges::subscriber(EXPIRE));
        assert_eq!(inflate(&ours), inflate(TOKEN_UID));
    }

    #[test]
    fn matches_agora_vectors_from_other_zlibs() {
        let ours = inflate(&build(UID, &RtcPrivileges::subscriber(EXPIRE)));
        for theirs in [TOKEN_UID_CSHARP, TOKEN_UID_GO] {
            assert_ne!(theirs, TOKEN_UID);
            assert_eq!(ours, inflate(theirs));
        }
    }

    #[test]
    fn matches_agora_uid_0_vector() {
        let ours = build("", &RtcPrivileges::subscriber(EXPIRE));
        assert_eq!(inflate(&ours), inflate(TOKEN_UID_0));
    }

    #[test]
    fn matches_agora_multi_privilege_vector() {
        // Agora's only published vector with every RTC privilege also
        // carries an RTM service, which this module does not build: pack
        // that one by hand (type 2, {login(1): 600}, user id) and sign both.
        let mut rtm = Vec::new();
        put_u16(&mut rtm, 2);
        put_u16(&mut rtm, 1);
        put_u16(&mut rtm, 1);
        put_u32(&mut rtm, EXPIRE);
        put_string(&mut rtm, b"test_user");
        let rtc = rtc_service(CHANNEL, UID, &RtcPrivileges::publisher(EXPIRE));
        let ours = signed_content(
            APP_ID,
            APP_CERTIFICATE,
            ISSUE_TS,
            EXPIRE,
            SALT,
            &[&rtc, &rtm],
        );
        let theirs = inflate(TOKEN_RTC_RTM);
        assert_eq!(ours, theirs);

        // And the RTC service rtc_token packs is the one in Agora's token.
        let token = inflate(&build(UID, &RtcPrivileges::publisher(EXPIRE)));
        let header = 2 + 32 + 2 + APP_ID.len() + 4 + 4 + 4 + 2;
        let rtc_in_token = &token[header..];
        assert_eq!(rtc_in_token, &theirs[header..header + rtc_in_token.len()]);
    }

    #[test]
    fn lays_out_partial_privileges_and_string_accounts() {
        let privileges = RtcPrivileges {
            join: 3600,
            publish_audio: Some(300),
            publish_video: None,
            publish_data: Some(0),
        };
        let content = inflate(&rtc_token(
            APP_ID,
            APP_CERTIFICATE,
            "lobby",
            "alice@example.com",
            7200,
            &privileges,
            1_700_000_000,
            42,
        ));

        let mut info = Vec::new();
        put_string(&mut info, APP_ID.as_bytes());
        info.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        info.extend_from_slice(&7200u32.to_le_bytes());
        info.extend_from_slice(&42u32.to_le_bytes());
        info.extend_from_slice(&[1, 0]); // one service
        info.extend_from_slice(&[1, 0]); // RTC
        info.extend_from_slice(&[3, 0]); // three privileges, by key
        info.extend_from_slice(&[1, 0]);
        info.extend_from_slice(&3600u32.to_le_bytes());
        info.extend_from_slice(&[2, 0]);
        info.extend_from_slice(&300u32.to_le_bytes());
        info.extend_from_slice(&[4, 0]);
        info.extend_from_slice(&0u32.to_le_bytes());
        put_string(&mut info, b"lobby");
        put_string(&mut info, b"alice@example.com");

        assert_eq!(&content[..2], &[32, 0]);
        assert_eq!(&content[34..], &info[..]);
        // Signed as Agora signs, through hmac's variable-length keys.
        let mac = |key: &[u8], message: &[u8]| {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("key");
            mac.update(message);
            mac.finalize().into_bytes()
        };
        let ts_key = mac(&1_700_000_000u32.to_le_bytes(), APP_CERTIFICATE.as_bytes());
        let signing_key = mac(&42u32.to_le_bytes(), &ts_key);
        assert_eq!(&content[2..34], &mac(&signing_key, &info)[..]);
    }

    #[test]
    fn token_text_is_version_and_padded_standard_base64() {
        let token = build(UID, &RtcPrivileges::subscriber(EXPIRE));
        let body = token.strip_prefix("007").expect("prefix");
        assert_eq!(body.len() % 4, 0);
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        );
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("lobby"), "lobby");
        let punctuated = "Team A: {stand-up} #3 (a|b) [x]~y, z@q.r?!$%&+;<=>^_";
        assert!(is_channel_name(punctuated));
        assert_eq!(channel_name(punctuated), punctuated);
        let longest = "x".repeat(MAX_CHANNEL_LEN);
        assert_eq!(channel_name(&longest), longest);

        for room in [
            "a/b",
            "café",
            &"r".repeat(200),
            &"x".repeat(64),
            "",
            "tab\there",
        ] {
            let name = channel_name(room);
            assert!(is_channel_name(&name), "{room:?} -> {name:?}");
            assert!(name.starts_with("rh-") && name.len() == 43, "{name:?}");
            assert_eq!(name, channel_name(room), "deterministic");
        }
        assert_ne!(channel_name("a/b"), channel_name("a\\b"));
        // The hashed name is the prefix and the digest's first 20 bytes.
        let digest = Sha256::digest(b"a/b");
        let expected: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(channel_name("a/b"), format!("rh-{expected}"));

        // A room already shaped like a hashed name is hashed too, so it
        // cannot take the channel of the room it looks derived from.
        let hashed = channel_name("café");
        assert_ne!(channel_name(&hashed), hashed);
        assert!(is_channel_name(&channel_name(&hashed)));
    }

    #[test]
    fn app_ids() {
        assert!(is_app_id(APP_ID));
        assert!(is_app_id(APP_CERTIFICATE));
        assert!(is_app_id("0123456789abcdefABCDEF0123456789"));
        assert!(!is_app_id(""));
        assert!(!is_app_id("abc"));
        assert!(!is_app_id("Z70CA35de60c44645bbae8a215061b33"));
        assert!(!is_app_id("970CA35de60c44645bbae8a215061b3"));
        assert!(!is_app_id("970CA35de60c44645bbae8a215061b333"));
        assert!(!is_app_id("970CA35de60c44645bbae8a215061b3 "));
    }

    #[test]
    fn long_strings_are_cut_to_the_format_limit() {
        let huge = "a".repeat(70_000);
        let content = inflate(&build(&huge, &RtcPrivileges::subscriber(EXPIRE)));
        let tail = &content[content.len() - 65_535 - 2..];
        assert_eq!(&tail[..2], &[0xff, 0xff]);
    }
}
