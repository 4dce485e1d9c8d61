//! Traffic classes: which responses count as small and which as bulk.
//!
//! The herd lesson is that a client checking for updates (a 304, a header
//! range, a few kilobytes of cdiff) must never wait behind thousands of whole
//! `daily.cvd` downloads. Classes carry a strict priority for that; the
//! classifier decides by file kind, path glob and response size. Rules are
//! tried in order and the first class with a matching rule wins, so the
//! configuration reads top to bottom like a firewall.

use std::sync::Arc;

use serde::Deserialize;

use super::rate::Rate;
use cvdmirror_formats::FileKind;

/// Responses up to this size are small by default (header checks, 304/404
/// bodies, cdiffs).
pub const SMALL_RESPONSE: u64 = 64 * 1024;

/// One class of traffic and the rules that select it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Name used in stats and by [`FlowSpec::class`](super::FlowSpec::class).
    pub name: String,
    /// Higher is served strictly first among the classes of a site.
    #[serde(default)]
    pub priority: i32,
    /// Share among classes of equal priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// Cap on the whole class within each site.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Cap on each client within this class.
    #[serde(default)]
    pub client_rate: Option<Rate>,
    /// The class applies when any rule matches.
    #[serde(default, rename = "match")]
    pub rules: Vec<MatchRule>,
}

fn one() -> u32 {
    1
}

/// A conjunction: every criterion given must hold; an empty rule matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// File kinds (`cvd`, `cld`, `cdiff`, `sign`, `other`); empty: any.
    #[serde(default)]
    pub kinds: Vec<KindName>,
    /// Path globs where `*` matches any run of characters; empty: any.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Smallest response body size, inclusive.
    #[serde(default)]
    pub min_size: Option<u64>,
    /// Largest response body size, inclusive.
    #[serde(default)]
    pub max_size: Option<u64>,
}

/// A [`FileKind`] as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KindName(pub FileKind);

impl TryFrom<String> for KindName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        [
            FileKind::Cvd,
            FileKind::Cld,
            FileKind::Cdiff,
            FileKind::Sign,
            FileKind::Other,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
        .map(KindName)
        .ok_or_else(|| format!("unknown file kind `{name}`: use cvd, cld, cdiff, sign or other"))
    }
}

impl MatchRule {
    /// Whether a response of this path, kind and body size matches.
    pub fn matches(&self, path: &str, kind: FileKind, size: u64) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k.0 == kind))
            && (self.paths.is_empty() || self.paths.iter().any(|g| glob_match(g, path)))
            && self.min_size.is_none_or(|min| size >= min)
            && self.max_size.is_none_or(|max| size <= max)
    }
}

/// The defaults that encode the herd lesson: `small` (everything up to
/// [`SMALL_RESPONSE`], and every cdiff, signature, CLD or other file) at
/// priority 10; `bulk` (whole CVDs) at priority 0.
pub fn default_classes() -> Vec<ClassConfig> {
    let kinds = [
        FileKind::Cdiff,
        FileKind::Sign,
        FileKind::Cld,
        FileKind::Other,
    ];
    vec![
        ClassConfig {
            name: "small".into(),
            priority: 10,
            weight: 1,
            rate: None,
            client_rate: None,
            rules: vec![
                MatchRule {
                    max_size: Some(SMALL_RESPONSE),
                    ..MatchRule::default()
                },
                MatchRule {
                    kinds: kinds.into_iter().map(KindName).collect(),
                    ..MatchRule::default()
                },
            ],
        },
        ClassConfig {
            name: "bulk".into(),
            priority: 0,
            weight: 1,
            rate: None,
            client_rate: None,
            rules: vec![MatchRule {
                kinds: vec![KindName(FileKind::Cvd)],
                ..MatchRule::default()
            }],
        },
    ]
}

/// Classes in order with their names shared, ready to classify.
#[derive(Debug, Clone)]
pub struct Classifier {
    classes: Vec<(Arc<str>, ClassConfig)>,
    default: Arc<str>,
}

impl Classifier {
    /// Builds a classifier; `default` is used when no rule matches.
    pub fn new(classes: &[ClassConfig], default: &str) -> Self {
        Self {
            classes: classes
                .iter()
                .map(|c| (Arc::from(c.name.as_str()), c.clone()))
                .collect(),
            default: Arc::from(default),
        }
    }

    /// The class of a response: path, file kind (`Other` when no file) and
    /// body size (the range length for `206`). First match wins.
    pub fn classify(&self, path: &str, kind: FileKind, size: u64) -> Arc<str> {
        self.classes
            .iter()
            .find(|(_, c)| c.rules.iter().any(|r| r.matches(path, kind, size)))
            .map_or_else(|| self.default.clone(), |(name, _)| name.clone())
    }

    /// The highest priority of any class, if there are classes.
    pub fn top_priority(&self) -> Option<i32> {
        self.classes.iter().map(|(_, c)| c.priority).max()
    }

    /// The configuration of a class by name.
    pub fn get(&self, name: &str) -> Option<&ClassConfig> {
        self.classes
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, c)| c)
    }
}

/// `*` matches any run of characters (including `/`); everything else is
/// literal. Iterative with one backtrack point, so no pattern is exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_put_small_things_first() {
        let c = Classifier::new(&default_classes(), "bulk");
        assert_eq!(
            &*c.classify("/daily.cvd", FileKind::Cvd, 60_000_000),
            "bulk"
        );
        // A header check: a 512-byte range of the same file.
        assert_eq!(&*c.classify("/daily.cvd", FileKind::Cvd, 512), "small");
        assert_eq!(
            &*c.classify("/daily-27654.cdiff", FileKind::Cdiff, 900_000),
            "small"
        );
        assert_eq!(
            &*c.classify("/daily.cld", FileKind::Cld, 90_000_000),
            "small"
        );
        assert_eq!(&*c.classify("/nope", FileKind::Other, 153), "small");
        assert_eq!(
            &*c.classify("/daily.cvd", FileKind::Cvd, SMALL_RESPONSE + 1),
            "bulk"
        );
    }

    #[test]
    fn rules_are_conjunctions_and_first_class_wins() {
        let classes: Vec<ClassConfig> = toml::from_str::<toml::Table>(
            r#"
            [[class]]
            name = "mainbig"
            priority = 1
            match = [{ paths = ["/main*"], min_size = 1000 }]
            [[class]]
            name = "rest"
            "#,
        )
        .unwrap()["class"]
            .clone()
            .try_into()
            .unwrap();
        let c = Classifier::new(&classes, "rest");
        assert_eq!(&*c.classify("/main.cvd", FileKind::Cvd, 5000), "mainbig");
        assert_eq!(&*c.classify("/main.cvd", FileKind::Cvd, 10), "rest");
        assert_eq!(&*c.classify("/daily.cvd", FileKind::Cvd, 5000), "rest");
        assert_eq!(c.get("mainbig").map(|c| c.priority), Some(1));
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(toml::from_str::<MatchRule>("kinds = [\"cvd\", \"zip\"]").is_err());
        assert!(toml::from_str::<MatchRule>("kinds = [\"cvd\", \"cdiff\"]").is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("/daily*.cdiff", "/daily-1.cdiff"));
        assert!(glob_match("*.cvd", "/a/b/main.cvd"));
        assert!(!glob_match("*.cvd", "/main.cvd.sign"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("abc**", "abc"));
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z/.]{0,12}", b in "[a-z/.]{0,12}") {
            prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn star_prefix_matches_suffixes(a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let text = format!("{a}{b}");
            let pattern = format!("*{b}");
            prop_assert!(glob_match(&pattern, &text));
        }
    }
}
