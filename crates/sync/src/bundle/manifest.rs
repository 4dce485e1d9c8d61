//! The bundle's `manifest.json`: what a bundle claims to hold, checked for
//! consistency before a single byte of its files is trusted.
//!
//! Every claim is one the reader can check against the files themselves
//! (name, size, SHA-256, the version in a CVD's header), so a manifest that
//! lies is caught, never believed. Names follow the served set's rules
//! (`<db>.cvd`, `<db>-N.cdiff`, `<db>-N.cvd.sign`, `<db>-N.cdiff.sign`), so
//! nothing in a bundle can name a path outside the root or a file the
//! mirror would not serve.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The `format` field of every manifest.
pub const FORMAT: &str = "cvdmirror-bundle";
/// The manifest version this build writes and reads.
pub const VERSION: u32 = 1;
/// The manifest's name inside a bundle.
pub const NAME: &str = "manifest.json";

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Manifest version ([`VERSION`]).
    pub version: u32,
    /// When the bundle was written (RFC 3339, UTC).
    pub created: String,
    /// What wrote it (`cvdmirror 0.1.0`).
    pub producer: String,
    /// Per database, the version of its CVD.
    pub databases: BTreeMap<String, DbEntry>,
    /// The files, in the order they are stored.
    pub files: Vec<FileEntry>,
}

/// One database in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbEntry {
    /// Version of `<db>.cvd`.
    pub version: u32,
}

/// One file in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name in the bundle and, once published, in the root.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The database it belongs to.
    pub database: String,
    /// A CVD's version (from its header), a cdiff's number, or the version
    /// of the file a `.sign` signs.
    pub version: u32,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// What a file in a bundle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `<db>.cvd`.
    Cvd,
    /// `<db>-N.cdiff`.
    Cdiff,
    /// `<db>-N.cvd.sign` or `<db>-N.cdiff.sign` (ClamAV 1.5).
    Sign,
}

/// What a file name says about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// What it is.
    pub kind: Kind,
    /// Database.
    pub database: String,
    /// The version in the name (none for `<db>.cvd`).
    pub version: Option<u32>,
    /// For a `.sign`: whether it signs a CVD (else a cdiff).
    pub signs_cvd: bool,
}

/// Parses a served file name; `None` for anything a bundle may not hold.
pub fn parse_name(name: &str) -> Option<Named> {
    let db_ok = |db: &str| {
        !db.is_empty()
            && db
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let numbered = |stem: &str| -> Option<(String, u32)> {
        let (db, n) = stem.rsplit_once('-')?;
        if !db_ok(db) || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((db.to_owned(), n.parse().ok()?))
    };
    if let Some(stem) = name.strip_suffix(".cvd.sign") {
        let (database, v) = numbered(stem)?;
        return Some(Named {
            kind: Kind::Sign,
            database,
            version: Some(v),
            signs_cvd: true,
        });
    }
    if let Some(stem) = name.strip_suffix(".cdiff.sign") {
        let (database, v) = numbered(stem)?;
        return Some(Named {
            kind: Kind::Sign,
            database,
            version: Some(v),
            signs_cvd: false,
        });
    }
    if let Some(stem) = name.strip_suffix(".cdiff") {
        let (database, v) = numbered(stem)?;
        return Some(Named {
            kind: Kind::Cdiff,
            database,
            version: Some(v),
            signs_cvd: false,
        });
    }
    let db = name.strip_suffix(".cvd")?;
    db_ok(db).then(|| Named {
        kind: Kind::Cvd,
        database: db.to_owned(),
        version: None,
        signs_cvd: false,
    })
}

impl Manifest {
    /// Checks that the manifest describes a servable set: known format,
    /// valid names agreeing with the kinds, databases and versions given,
    /// one CVD per database, `.sign` files only beside what they sign, no
    /// cdiff beyond its CVD, no duplicates. The error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format is {:?}, not {FORMAT:?}: not a cvdmirror bundle",
                self.format
            ));
        }
        if self.version != VERSION {
            return Err(format!(
                "manifest version {} (this cvdmirror reads version {VERSION})",
                self.version
            ));
        }
        if self.databases.is_empty() {
            return Err("lists no databases".into());
        }
        let mut names = BTreeSet::new();
        let mut cvds = BTreeSet::new();
        for file in &self.files {
            let name = &file.name;
            if !names.insert(name.as_str()) {
                return Err(format!("lists {name} twice"));
            }
            let named = parse_name(name)
                .ok_or_else(|| format!("{name:?} is not a database, cdiff or .sign file name"))?;
            if named.kind != file.kind || named.database != file.database {
                return Err(format!(
                    "{name}: listed as a {:?} of {}, which its name contradicts",
                    file.kind, file.database
                ));
            }
            let db = self.databases.get(&file.database).ok_or_else(|| {
                format!(
                    "{name}: database {} is not in the databases list",
                    file.database
                )
            })?;
            if named.version.is_some_and(|v| v != file.version) {
                return Err(format!(
                    "{name}: listed with version {}, which its name contradicts",
                    file.version
                ));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{name}: sha256 is not 64 hex digits"));
            }
            match file.kind {
                Kind::Cvd => {
                    if file.version != db.version {
                        return Err(format!(
                            "{name}: listed with version {}, but the databases list says {}",
                            file.version, db.version
                        ));
                    }
                    if file.size < crate::cvd::HEADER_LEN as u64 {
                        return Err(format!(
                            "{name}: {} bytes is too short for a CVD",
                            file.size
                        ));
                    }
                    cvds.insert(file.database.as_str());
                }
                Kind::Cdiff | Kind::Sign if file.version > db.version => {
                    return Err(format!(
                        "{name}: version {} is newer than its database's CVD ({})",
                        file.version, db.version
                    ));
                }
                Kind::Sign if named.signs_cvd && file.version != db.version => {
                    return Err(format!(
                        "{name}: signs version {} but the bundle's {}.cvd is {}",
                        file.version, file.database, db.version
                    ));
                }
                Kind::Cdiff | Kind::Sign => {}
            }
        }
        for file in self.files.iter().filter(|f| f.kind == Kind::Sign) {
            let signed = file.name.trim_end_matches(".sign");
            let signed = if signed.ends_with(".cvd") {
                format!("{}.cvd", file.database)
            } else {
                signed.to_owned()
            };
            if !names.contains(signed.as_str()) {
                return Err(format!("{} is listed without {signed}", file.name));
            }
        }
        if let Some(db) = self.databases.keys().find(|db| !cvds.contains(db.as_str())) {
            return Err(format!("database {db} is listed without {db}.cvd"));
        }
        Ok(())
    }

    /// The entry for `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Total bytes of the files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The files of `db`.
    pub fn files_of<'a>(&'a self, db: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.files.iter().filter(move |f| f.database == db)
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    crate::cvd::info::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: Kind, version: u32) -> FileEntry {
        FileEntry {
            name: name.into(),
            kind,
            database: "daily".into(),
            version,
            size: 1000,
            sha256: "0".repeat(64),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created: "2026-11-27T16:41:07Z".into(),
            producer: "cvdmirror test".into(),
            databases: BTreeMap::from([("daily".to_owned(), DbEntry { version: 7 })]),
            files: vec![
                entry("daily-7.cdiff.sign", Kind::Sign, 7),
                entry("daily-7.cdiff", Kind::Cdiff, 7),
                entry("daily-7.cvd.sign", Kind::Sign, 7),
                entry("daily.cvd", Kind::Cvd, 7),
            ],
        }
    }

    #[test]
    fn names_are_parsed_strictly() {
        let n = parse_name("daily-27654.cdiff").unwrap();
        assert_eq!(
            (n.kind, n.database.as_str(), n.version),
            (Kind::Cdiff, "daily", Some(27654))
        );
        let n = parse_name("safebrowsing_x-3.cvd.sign").unwrap();
        assert_eq!(
            (n.kind, n.signs_cvd, n.version),
            (Kind::Sign, true, Some(3))
        );
        let n = parse_name("main-9.cdiff.sign").unwrap();
        assert_eq!((n.kind, n.signs_cvd), (Kind::Sign, false));
        assert_eq!(parse_name("main.cvd").unwrap().kind, Kind::Cvd);
        for bad in [
            "../main.cvd",
            "a/main.cvd",
            ".cvd",
            "Main.cvd",
            "main.cld",
            "main-.cdiff",
            "main-x.cdiff",
            "main-1.cdiff.tmp",
            "-1.cdiff",
            "manifest.json",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_consistent_manifest_passes() {
        manifest().check().unwrap();
    }

    /// A change that makes a manifest lie.
    type Lie = Box<dyn Fn(&mut Manifest)>;

    #[test]
    fn every_lie_is_named() {
        let cases: Vec<(&str, Lie)> = vec![
            (
                "not a cvdmirror bundle",
                Box::new(|m| m.format = "tar".into()),
            ),
            ("manifest version 2", Box::new(|m| m.version = 2)),
            (
                "twice",
                Box::new(|m| m.files.push(entry("daily.cvd", Kind::Cvd, 7))),
            ),
            (
                "not a database",
                Box::new(|m| m.files[0].name = "../x".into()),
            ),
            ("contradicts", Box::new(|m| m.files[1].kind = Kind::Cvd)),
            ("contradicts", Box::new(|m| m.files[1].version = 6)),
            (
                "databases list says 7",
                Box::new(|m| m.files[3].version = 6),
            ),
            (
                "signs version 7 but",
                Box::new(|m| {
                    m.databases.insert("daily".into(), DbEntry { version: 8 });
                }),
            ),
            (
                "newer than",
                Box::new(|m| {
                    m.files[1] = entry("daily-9.cdiff", Kind::Cdiff, 9);
                }),
            ),
            (
                "without daily-7.cdiff",
                Box::new(|m| {
                    m.files.remove(1);
                }),
            ),
            (
                "without daily.cvd",
                Box::new(|m| {
                    m.files.retain(|f| f.kind == Kind::Cdiff);
                }),
            ),
            ("hex", Box::new(|m| m.files[3].sha256 = "xyz".into())),
            (
                "not in the databases list",
                Box::new(|m| {
                    let mut f = entry("main.cvd", Kind::Cvd, 7);
                    f.database = "main".into();
                    m.files.push(f);
                }),
            ),
        ];
        for (words, lie) in cases {
            let mut m = manifest();
            lie(&mut m);
            let err = m.check().unwrap_err();
            assert!(err.contains(words), "{words:?} not in {err:?}");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = manifest();
        let text = serde_json::to_string_pretty(&m).unwrap();
        assert!(text.contains("\"kind\": \"cdiff\""), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}
