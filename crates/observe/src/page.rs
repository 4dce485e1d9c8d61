//! The live status page: one self-contained HTML document (no external
//! assets, so it works on an air-gapped admin network and leaks nothing to
//! third parties) whose inline script fetches `status.json` beside it every
//! two seconds and redraws the numbers, tables and charts in place.
//!
//! The page is the same on the admin listener (`/`) and the public one
//! (`[observe] public_path`): it fetches `status.json` relative to its own
//! URL, and draws the sections present in the document it gets.

/// The page.
pub const HTML: &str = include_str!("page.html");

/// Content-Security-Policy of the page: nothing but itself.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        assert!(HTML.starts_with("<!DOCTYPE html>"));
        // The SVG namespace is a name, not a fetch.
        let html = HTML.replace("http://www.w3.org/2000/svg", "");
        for external in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!html.contains(external), "external reference {external}");
        }
        assert!(HTML.contains("status.json"));
    }
}
