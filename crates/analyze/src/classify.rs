//! What a request was, in the terms of the incident: the ClamAV file class
//! (whole database, patch, header check, detached signature, anything
//! else), which database and patch number it names, and which freshclam
//! version asked. These are the only facts the aggregates, the
//! fallback-chain detector and the `.sign` follow-up detector need.

use std::borrow::Cow;

/// Longest normalised user agent kept (longer ones are cut).
const MAX_AGENT: usize = 160;

/// The traffic classes of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A whole database: `.cvd` or `.cld` body (not a header check).
    Cvd = 0,
    /// A patch: `<db>-N.cdiff`.
    Cdiff = 1,
    /// freshclam's version probe: a `304`, a `206` of at most 512 bytes or a
    /// `HEAD` on a `.cvd`/`.cld`.
    HeaderCheck = 2,
    /// A detached signature (`daily-27780.cvd.sign`, `daily-27781.cdiff.sign`)
    /// that ClamAV 1.5 clients fetch after the file it signs, whatever the
    /// status.
    Sign = 3,
    /// Everything else (`dns.txt`, web pages, scanners).
    Other = 4,
}

impl Class {
    /// Number of classes (length of the per-class arrays).
    pub const COUNT: usize = 5;

    /// All classes in timeline order.
    pub const ALL: [Class; Self::COUNT] = [
        Class::Cvd,
        Class::Cdiff,
        Class::HeaderCheck,
        Class::Sign,
        Class::Other,
    ];

    /// Short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Class::Cvd => "cvd",
            Class::Cdiff => "cdiff",
            Class::HeaderCheck => "header checks",
            Class::Sign => "sign",
            Class::Other => "other",
        }
    }
}

/// The last path segment of a request target, without query or fragment:
/// mirrors may live under a sub-path, and clients add nothing else.
pub fn file_name(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let path = &target[..end];
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The database a `.cvd`/`.cld` name stands for (`daily.cvd` -> `daily`).
pub fn whole_database(name: &[u8]) -> Option<&[u8]> {
    let db = name
        .strip_suffix(b".cvd")
        .or_else(|| name.strip_suffix(b".cld"))?;
    is_db_name(db).then_some(db)
}

/// `daily-27654.cdiff` -> (`daily`, 27654).
///
/// Only a name ending in `.cdiff`: `daily-27654.cdiff.sign` is a signature
/// ([`sign`]), never a patch, so its `404` never starts a fallback chain.
pub fn cdiff(name: &[u8]) -> Option<(&[u8], u32)> {
    numbered(name.strip_suffix(b".cdiff")?)
}

/// What a `.sign` file signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signed {
    /// A whole database: `<db>-<version>.cvd.sign` (version from the CVD
    /// header, not the name `daily.cvd` it was downloaded as).
    Cvd,
    /// A patch: `<db>-<N>.cdiff.sign`.
    Cdiff,
    /// A `.cld` (`<db>-<version>.cld.sign`): sigtool names one so, but no
    /// ClamAV checks or asks for it.
    Cld,
}

/// A `.sign` name taken apart: `daily-27780.cvd.sign` -> (`daily`, 27780,
/// [`Signed::Cvd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignName<'a> {
    /// The database.
    pub db: &'a [u8],
    /// The CVD version or patch number.
    pub version: u32,
    /// What it signs.
    pub signed: Signed,
}

/// Whether `name` is a detached signature (any `*.sign`).
pub fn is_sign(name: &[u8]) -> bool {
    name.len() > b".sign".len() && name.ends_with(b".sign")
}

/// `daily-27780.cvd.sign`, `daily-27781.cdiff.sign`, `main-62.cld.sign`
/// taken apart; `None` for any other name (also a `.sign` not in ClamAV's
/// naming, which still counts as [`Class::Sign`]).
pub fn sign(name: &[u8]) -> Option<SignName<'_>> {
    let signed = name.strip_suffix(b".sign")?;
    if let Some((db, version)) = cdiff(signed) {
        return Some(SignName {
            db,
            version,
            signed: Signed::Cdiff,
        });
    }
    let (stem, kind) = match signed.strip_suffix(b".cvd") {
        Some(stem) => (stem, Signed::Cvd),
        None => (signed.strip_suffix(b".cld")?, Signed::Cld),
    };
    let (db, version) = numbered(stem)?;
    Some(SignName {
        db,
        version,
        signed: kind,
    })
}

/// `daily-27654` -> (`daily`, 27654).
fn numbered(stem: &[u8]) -> Option<(&[u8], u32)> {
    let dash = stem.iter().rposition(|&b| b == b'-')?;
    let (db, num) = (&stem[..dash], &stem[dash + 1..]);
    if !is_db_name(db) || num.is_empty() || num.len() > 9 || !num.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = num.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0'));
    Some((db, n))
}

fn is_db_name(db: &[u8]) -> bool {
    !db.is_empty() && db.len() <= 32 && db.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// The class of one request.
pub fn classify(method: &[u8], name: &[u8], status: u16, bytes: u64) -> Class {
    if is_sign(name) {
        Class::Sign
    } else if whole_database(name).is_some() {
        if status == 304 || (status == 206 && bytes <= 512) || method == b"HEAD" {
            Class::HeaderCheck
        } else {
            Class::Cvd
        }
    } else if cdiff(name).is_some() {
        Class::Cdiff
    } else {
        Class::Other
    }
}

/// What the User-Agent says about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent<'a> {
    /// The agent with freshclam's per-installation UUID removed, so that one
    /// version on one platform is one row (cut to 160 characters).
    pub normalized: String,
    /// `ClamAV/1.4.6` for freshclam, else the product token (`curl`,
    /// `Mozilla`), or `(none)`.
    pub version: String,
    /// freshclam's installation UUID, which tells apart clients behind one
    /// address.
    pub uuid: Option<&'a [u8]>,
}

/// Reads a User-Agent as logged (escaped, maybe empty).
pub fn agent(ua: &[u8]) -> Agent<'_> {
    if ua.is_empty() {
        return Agent {
            normalized: "(none)".into(),
            version: "(none)".into(),
            uuid: None,
        };
    }
    let (without_uuid, uuid) = strip_uuid(ua);
    let mut normalized = String::from_utf8_lossy(&without_uuid).into_owned();
    truncate(&mut normalized, MAX_AGENT);
    let version = match ua.strip_prefix(b"ClamAV/") {
        Some(rest) => {
            let v = product_token(rest);
            format!("ClamAV/{}", if v.is_empty() { "?" } else { v })
        }
        None => {
            let p = product_token(ua);
            if p.is_empty() {
                "(unknown)".into()
            } else {
                p.to_owned()
            }
        }
    };
    Agent {
        normalized,
        version,
        uuid,
    }
}

/// The leading run of token characters (`1.4.6` of `1.4.6 (OS: ...)`).
fn product_token(s: &[u8]) -> &str {
    let end = s
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+')))
        .unwrap_or(s.len())
        .min(32);
    std::str::from_utf8(&s[..end]).unwrap_or_default()
}

/// Removes `, UUID: xxxxxxxx-...` (up to the `)` or end) from a freshclam agent.
fn strip_uuid(ua: &[u8]) -> (Cow<'_, [u8]>, Option<&[u8]>) {
    const KEY: &[u8] = b"UUID: ";
    let Some(at) = ua.windows(KEY.len()).position(|w| w == KEY) else {
        return (Cow::Borrowed(ua), None);
    };
    let start = at + KEY.len();
    let len = ua[start..]
        .iter()
        .position(|&b| b == b')' || b == b',' || b == b' ')
        .unwrap_or(ua.len() - start);
    let uuid = &ua[start..start + len];
    let mut cut = at;
    // Also drop the ", " that joined it to the previous field.
    while cut > 0 && matches!(ua[cut - 1], b' ' | b',') {
        cut -= 1;
    }
    let mut out = ua[..cut].to_vec();
    out.extend_from_slice(&ua[start + len..]);
    (Cow::Owned(out), (!uuid.is_empty()).then_some(uuid))
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(b"GET", b"daily.cvd", 200, 60_000_000), Class::Cvd);
        assert_eq!(classify(b"GET", b"daily.cvd", 206, 512), Class::HeaderCheck);
        assert_eq!(classify(b"GET", b"daily.cvd", 206, 4096), Class::Cvd);
        assert_eq!(classify(b"GET", b"main.cld", 304, 0), Class::HeaderCheck);
        assert_eq!(classify(b"GET", b"daily-27654.cdiff", 404, 0), Class::Cdiff);
        assert_eq!(classify(b"GET", b"", 200, 9), Class::Other);
        assert_eq!(classify(b"GET", b"dns.txt", 200, 9), Class::Other);
    }

    #[test]
    fn signatures_are_their_own_class_whatever_the_status() {
        for (name, status, bytes) in [
            (&b"daily-27654.cdiff.sign"[..], 200, 8870),
            (b"daily-27654.cdiff.sign", 404, 0),
            (b"daily-27780.cvd.sign", 200, 9083),
            (b"daily-27780.cvd.sign", 404, 14),
            (b"main-62.cld.sign", 404, 14),
            (b"daily-27780.cvd.sign", 304, 0),
            (b"odd.sign", 200, 5),
        ] {
            assert_eq!(
                classify(b"GET", name, status, bytes),
                Class::Sign,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        // Not a signature: a CVD, a patch, the bare suffix.
        assert_eq!(classify(b"GET", b"daily.cvd", 200, 9), Class::Cvd);
        assert_eq!(classify(b"GET", b".sign", 200, 9), Class::Other);
    }

    #[test]
    fn a_signature_is_never_a_patch_or_a_database() {
        // The fallback detector asks these: a `.sign` 404 must not look
        // like a missing patch, nor a `.sign` 200 like a whole download.
        assert_eq!(cdiff(b"daily-27654.cdiff.sign"), None);
        assert_eq!(whole_database(b"daily-27780.cvd.sign"), None);
        assert_eq!(whole_database(b"daily.cvd.sign"), None);
    }

    #[test]
    fn signature_names_follow_clamav() {
        let n = |s: &'static [u8]| sign(s).map(|n| (n.db, n.version, n.signed));
        assert_eq!(
            n(b"daily-27780.cvd.sign"),
            Some((&b"daily"[..], 27780, Signed::Cvd))
        );
        assert_eq!(
            n(b"daily-27781.cdiff.sign"),
            Some((&b"daily"[..], 27781, Signed::Cdiff))
        );
        assert_eq!(
            n(b"bytecode-339.cld.sign"),
            Some((&b"bytecode"[..], 339, Signed::Cld))
        );
        // freshclam never asks for `daily.cvd.sign`: the version is part of the name.
        assert_eq!(n(b"daily.cvd.sign"), None);
        assert_eq!(n(b"daily-x.cvd.sign"), None);
        assert_eq!(n(b"daily-27780.cvd"), None);
        assert_eq!(n(b"-1.cdiff.sign"), None);
    }

    #[test]
    fn names() {
        assert_eq!(file_name(b"/mirror/daily.cvd?x=/y"), b"daily.cvd");
        assert_eq!(file_name(b"http://h/daily-1.cdiff"), b"daily-1.cdiff");
        assert_eq!(cdiff(b"daily-27654.cdiff"), Some((&b"daily"[..], 27654)));
        assert_eq!(cdiff(b"-1.cdiff"), None);
        assert_eq!(cdiff(b"daily-99999999999.cdiff"), None);
        assert_eq!(whole_database(b"bytecode.cld"), Some(&b"bytecode"[..]));
    }

    #[test]
    fn agents() {
        let a = agent(b"ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 0f3c-11)");
        assert_eq!(a.version, "ClamAV/1.4.6");
        assert_eq!(
            a.normalized,
            "ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64)"
        );
        assert_eq!(a.uuid, Some(&b"0f3c-11"[..]));
        assert_eq!(agent(b"curl/8.5.0").version, "curl");
        assert_eq!(agent(b"").version, "(none)");
    }
}
