//! The TLS side of a connection: the handshake, with the certificate and
//! client-certificate rule of the site the ClientHello names, and the check
//! that keeps a site's client-certificate requirement from being sidestepped
//! with another name.
//!
//! The site is picked from the SNI before the handshake goes on (rustls'
//! `Acceptor`), so every site has its own `ServerConfig`: its certificate,
//! and its own client verifier when it requires client certificates. A
//! refused client certificate is a `WARN` with the peer's address; any
//! other failed handshake (scanners, clients that give up, timeouts) is
//! `DEBUG`, as an unanswered plain connection is.
//!
//! HTTP routes a request by its `Host`, which a client may choose freely on
//! a connection set up for another name, or on a plain connection. So when
//! a site requires client certificates, every request for it is checked
//! ([`Guard`]): it must arrive on a TLS connection authenticated for that
//! very site, or it is answered `421 Misdirected Request`, logged and
//! counted like any other answer (never `403`, which freshclam takes as a
//! day-long ban).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, rustls};

use crate::body::ResponseBody;
use crate::hooks::Hooks;
use crate::pipeline::{CompletionBody, Exchange};
use cvdmirror_tls::Certificates;

/// What connections need of HTTPS: the certificates in force when they
/// were accepted, and where a refused request is reported.
#[derive(Debug)]
pub(super) struct Rules {
    pub certificates: Arc<Certificates>,
    pub hooks: Hooks,
}

/// A finished handshake.
pub(super) struct Handshaken {
    pub stream: TlsStream<TcpStream>,
    /// The site whose client CA verified the client's certificate, if the
    /// site the SNI named requires one.
    pub authenticated: Option<Arc<str>>,
}

/// Runs the server side of the handshake on `stream` within `timeout`;
/// `None` (logged) when it fails.
pub(super) async fn handshake(
    stream: TcpStream,
    certificates: Arc<Certificates>,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<Handshaken> {
    let deadline = Instant::now() + timeout;
    let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout_at(deadline, hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS connection ended before a valid ClientHello");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let site = certificates.for_server_name(start.client_hello().server_name());
    let (name, client_auth) = (Arc::clone(&site.name), site.client_auth);
    match tokio::time::timeout_at(deadline, start.into_stream(Arc::clone(&site.config))).await {
        Ok(Ok(stream)) => Some(Handshaken {
            stream,
            authenticated: client_auth.then_some(name),
        }),
        Ok(Err(e)) => {
            match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(
                    reason @ (rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertificate(_)),
                ) if client_auth => {
                    tracing::warn!(%peer, site = %name, %reason, "client certificate refused");
                }
                _ => tracing::debug!(%peer, site = %name, error = %e, "TLS handshake failed"),
            }
            None
        }
        Err(_) => {
            tracing::debug!(%peer, site = %name, "TLS handshake timed out");
            None
        }
    }
}

/// One connection's standing with the sites that require client
/// certificates.
#[derive(Debug)]
pub(super) struct Guard {
    rules: Arc<Rules>,
    /// The site this connection's client certificate was verified for.
    authenticated: Option<Arc<str>>,
}

impl Guard {
    /// The guard for a connection, when any site requires client
    /// certificates (otherwise there is nothing to check).
    pub(super) fn new(rules: &Arc<Rules>, authenticated: Option<Arc<str>>) -> Option<Box<Self>> {
        rules.certificates.client_auth().then(|| {
            Box::new(Self {
                rules: Arc::clone(rules),
                authenticated,
            })
        })
    }

    /// `421` for a request for a site that requires a client certificate
    /// this connection was not authenticated with; `None` to serve it.
    pub(super) fn check<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
    ) -> Option<Response<CompletionBody>> {
        let host = match req.uri().authority() {
            Some(authority) => Some(authority.host()),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok()),
        };
        let site = self.rules.certificates.for_host(host);
        if !site.client_auth || self.authenticated.as_deref() == Some(&*site.name) {
            return None;
        }
        tracing::warn!(%peer, site = %site.name, host = host.unwrap_or("-"), "request for a site that requires a client certificate, on a connection without one for it: 421");
        Some(misdirected(
            req,
            peer,
            Arc::clone(&site.name),
            &self.rules.hooks,
        ))
    }
}

/// The `421` answer, reported to the hooks (access log, metrics) as the
/// pipeline reports its own.
fn misdirected<B>(
    req: &Request<B>,
    peer: SocketAddr,
    site: Arc<str>,
    hooks: &Hooks,
) -> Response<CompletionBody> {
    let owned = |name| {
        req.headers()
            .get(name)
            .map(|v: &http::HeaderValue| Box::from(v.as_bytes()))
    };
    let mut exchange = Exchange::arrived(
        peer,
        req.method().clone(),
        req.uri().clone(),
        req.version(),
        site,
    );
    exchange.referer = owned(header::REFERER);
    exchange.user_agent = owned(header::USER_AGENT);
    let text =
        "421 Misdirected Request: this site requires HTTPS with a client certificate for it\n";
    let status = StatusCode::MISDIRECTED_REQUEST;
    let body = CompletionBody::new(
        ResponseBody::bytes(text),
        Arc::new(exchange),
        hooks.clone(),
        status,
    );
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=us-ascii"),
    );
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}
