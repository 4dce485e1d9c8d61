//! What kind of mirror file a name denotes: a whole database, a patch, a
//! detached signature, or anything else. Shaping classes, metrics and the
//! sync engine all build on this one classification.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What kind of mirror file a name denotes (shaping classes build on this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A whole signed database (`daily.cvd`).
    Cvd,
    /// An unsigned local database (`daily.cld`).
    Cld,
    /// An incremental patch (`daily-27654.cdiff`).
    Cdiff,
    /// A detached signature (`daily-27654.cdiff.sign`).
    Sign,
    /// Anything else.
    Other,
}

impl FileKind {
    /// Classifies by file name.
    pub fn of(path: &Path) -> Self {
        match extension(path) {
            Some(b"cvd") => FileKind::Cvd,
            Some(b"cld") => FileKind::Cld,
            Some(b"cdiff") => FileKind::Cdiff,
            Some(b"sign") => FileKind::Sign,
            _ => FileKind::Other,
        }
    }

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Cvd => "cvd",
            FileKind::Cld => "cld",
            FileKind::Cdiff => "cdiff",
            FileKind::Sign => "sign",
            FileKind::Other => "other",
        }
    }
}

/// [`Path::extension`] as bytes for a path as the request path decoder
/// leaves it (no dot segments, no trailing `/`), found with one backward
/// scan instead of component parsing (it runs twice per request).
pub fn extension(path: &Path) -> Option<&[u8]> {
    let bytes = path.as_os_str().as_bytes();
    let name = match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) => &bytes[slash + 1..],
        None => bytes,
    };
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => None,
        Some(dot) => Some(&name[dot + 1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_mirror_naming() {
        assert_eq!(FileKind::of(Path::new("daily.cvd")), FileKind::Cvd);
        assert_eq!(FileKind::of(Path::new("daily-1.cdiff")), FileKind::Cdiff);
        assert_eq!(
            FileKind::of(Path::new("daily-1.cdiff.sign")),
            FileKind::Sign
        );
        assert_eq!(FileKind::of(Path::new("dns.txt")), FileKind::Other);
    }
}
