//! Escaping text for HTML, shared by everything that writes a page from
//! names it did not choose: directory listings (file names on disk) and the
//! traffic report (text from access logs). One escape, so a fix reaches
//! both.

/// Escapes `&`, `<`, `>`, `"` and `'`, so the text is safe in element
/// content and in quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape("daily.cvd"), "daily.cvd");
        assert_eq!(escape(""), "");
    }
}
