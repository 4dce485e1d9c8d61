//! Optional HTML directory listings (off by default: a mirror's clients know
//! the names they want). Dotfiles are hidden, names are escaped, and links
//! are absolute so they work with or without a trailing slash.

use std::fmt::Write as _;
use std::fs::File;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::respond;
use crate::body::ResponseBody;
use crate::html::escape;

/// Bytes escaped in a link path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\');

/// Lists `dir`, requested as `request_path`.
pub fn respond(dir: File, request_path: &str, method: &Method) -> Response<ResponseBody> {
    let entries = match read_entries(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, path = request_path, "cannot list directory");
            return respond::status(StatusCode::NOT_FOUND);
        }
    };
    let base = request_path.trim_end_matches('/');
    let title = escape(if base.is_empty() { "/" } else { request_path });
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1><ul>\n"
    );
    for (name, is_dir) in entries {
        let slash = if is_dir { "/" } else { "" };
        let _ = writeln!(
            html,
            "<li><a href=\"{base}/{}{slash}\">{}{slash}</a></li>",
            utf8_percent_encode(&name, SEGMENT),
            escape(&name)
        );
    }
    html.push_str("</ul></body></html>\n");
    let len = html.len();
    let body = if method == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::bytes(html)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

fn read_entries(dir: &File) -> std::io::Result<Vec<(String, bool)>> {
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        entries.push((
            name.to_owned(),
            entry.file_type() == rustix::fs::FileType::Directory,
        ));
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_hides_dotfiles_and_escapes_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("daily.cvd"), b"x").unwrap();
        std::fs::write(dir.path().join(".secret"), b"x").unwrap();
        std::fs::write(dir.path().join("<b>.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let entries = read_entries(&File::open(dir.path()).unwrap()).unwrap();
        let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["<b>.txt", "daily.cvd", "sub"]);
        assert!(entries[2].1);
    }
}
