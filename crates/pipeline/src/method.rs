//! Stage 1: a mirror is read-only, so only GET and HEAD exist.

use http::{Method, Response, StatusCode, header};

use crate::body::ResponseBody;

/// The value of `Allow` on `405` responses.
pub const ALLOWED: &str = "GET, HEAD";

/// `Some(405 with Allow)` for anything but GET and HEAD.
pub fn reject(method: &Method) -> Option<Response<ResponseBody>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = super::respond::status(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(ALLOWED));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_pass() {
        assert!(reject(&Method::GET).is_none());
        assert!(reject(&Method::HEAD).is_none());
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            let r = reject(&m).unwrap();
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[header::ALLOW], ALLOWED);
        }
    }
}
