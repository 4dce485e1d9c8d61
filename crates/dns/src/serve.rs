//! The authoritative core shared by the [beacon](super::beacon) and the
//! [test server](super::test_server): it answers TXT for exactly one name
//! on UDP and TCP, and asks an [`AnswerSource`] what to say.
//!
//! A zone this small does not need hickory's catalog and zone files, and a
//! hand-written request handler keeps every answer code in one place: the
//! name itself gets its TXT, other types there and the names between it and
//! the zone apex get an empty `NOERROR`, other names in the zone `NXDOMAIN`,
//! and names outside the zone `REFUSED` (we are nobody's resolver).

use std::future::Future;
use std::io;
use std::iter;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;

/// How often to retry finding a port free for both UDP and TCP.
const SAME_PORT_TRIES: usize = 16;

/// The longest character-string a TXT record can hold.
const TXT_STRING_MAX: usize = 255;

/// What to say to a TXT query for the served name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // `NoAnswer` reads right: the server stays silent.
pub enum Answer {
    /// Answer with one TXT record per text (each split into 255-byte
    /// strings if longer), in this order.
    Txt(Vec<String>),
    /// Answer `SERVFAIL`: the server cannot say right now.
    ServFail,
    /// Answer `NXDOMAIN`, as if the name did not exist.
    NxDomain,
    /// Send nothing, so the client times out.
    Silence,
}

/// Decides the answer for the served name at the moment of each query.
pub trait AnswerSource: Send + Sync + Unpin + 'static {
    /// The answer to give now.
    fn answer(&self) -> Answer;
}

/// The request handler: one name, its zone, a TTL and an answer source.
pub struct Authority<S> {
    name: LowerName,
    zone: LowerName,
    ttl: u32,
    source: S,
}

/// What to send back for one request.
enum Reply {
    Code {
        code: ResponseCode,
        authoritative: bool,
    },
    Txt(Vec<String>),
    Silent,
}

impl<S: AnswerSource> Authority<S> {
    /// Serves TXT for `name`; the zone is `name`'s parent.
    pub fn new(name: &Name, ttl: Duration, source: S) -> Self {
        let name = LowerName::new(name);
        Self {
            zone: name.base_name(),
            name,
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            source,
        }
    }

    fn decide(&self, request: &Request) -> Reply {
        let plain = |code| Reply::Code {
            code,
            authoritative: false,
        };
        let authoritative = |code| Reply::Code {
            code,
            authoritative: true,
        };
        if request.metadata.message_type != MessageType::Query {
            return plain(ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return plain(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return plain(ResponseCode::FormErr);
        };
        let query = info.query;
        let class = query.query_class();
        if (class != DNSClass::IN && class != DNSClass::ANY) || !self.zone.zone_of(query.name()) {
            return plain(ResponseCode::Refused);
        }
        if *query.name() != self.name {
            // Names between the zone apex and ours exist (they own nothing);
            // anything else in the zone does not.
            return if query.name().zone_of(&self.name) {
                authoritative(ResponseCode::NoError)
            } else {
                authoritative(ResponseCode::NXDomain)
            };
        }
        if !matches!(query.query_type(), RecordType::TXT | RecordType::ANY) {
            return authoritative(ResponseCode::NoError);
        }
        match self.source.answer() {
            Answer::Txt(texts) => Reply::Txt(texts),
            Answer::ServFail => plain(ResponseCode::ServFail),
            Answer::NxDomain => authoritative(ResponseCode::NXDomain),
            Answer::Silence => Reply::Silent,
        }
    }
}

#[async_trait::async_trait]
impl<S: AnswerSource> RequestHandler for Authority<S> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.decide(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answers: Vec<Record> = match reply {
            Reply::Silent => return failed(request),
            Reply::Code {
                code,
                authoritative,
            } => {
                metadata.response_code = code;
                metadata.authoritative = authoritative;
                Vec::new()
            }
            Reply::Txt(texts) => {
                metadata.authoritative = true;
                let owner = request
                    .request_info()
                    .map(|info| info.query.original().name().clone())
                    .unwrap_or_else(|_| Name::from(&self.name));
                texts
                    .iter()
                    .map(|text| Record::from_rdata(owner.clone(), self.ttl, RData::TXT(txt(text))))
                    .collect()
            }
        };
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            iter::empty(),
            iter::empty(),
            iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "could not send DNS response");
                failed(request)
            }
        }
    }
}

/// What the server records for a request that got no answer.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// TXT data for `text`: one character-string when it fits, which is what
/// freshclam reads (it looks at the first string only).
fn txt(text: &str) -> TXT {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return TXT::from_bytes(vec![bytes]);
    }
    TXT::from_bytes(bytes.chunks(TXT_STRING_MAX).collect())
}

/// The sockets a DNS server answers on.
#[derive(Debug)]
pub struct Listeners {
    udp: UdpSocket,
    tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds UDP at `udp` and TCP at `tcp`. When both are the same address
    /// with port 0, both get the same free port, so one `ADDR:PORT` reaches
    /// the server over either transport.
    pub async fn bind(udp: SocketAddr, tcp: Option<SocketAddr>) -> io::Result<Self> {
        if tcp == Some(udp) && udp.port() == 0 {
            let mut last = None;
            for _ in 0..SAME_PORT_TRIES {
                let socket = UdpSocket::bind(udp).await?;
                match TcpListener::bind(socket.local_addr()?).await {
                    Ok(listener) => {
                        return Ok(Self {
                            udp: socket,
                            tcp: Some(listener),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            return Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)));
        }
        let socket = UdpSocket::bind(udp).await?;
        let listener = match tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            udp: socket,
            tcp: listener,
        })
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The bound TCP address, if TCP is served.
    pub fn tcp_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.tcp.as_ref().map(TcpListener::local_addr).transpose()
    }
}

/// Answers on `listeners` with `authority` until `shutdown` completes.
pub async fn serve<S: AnswerSource>(
    listeners: Listeners,
    authority: Authority<S>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut server = hickory_server::Server::new(authority);
    server.register_socket(listeners.udp);
    if let Some(tcp) = listeners.tcp {
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let stop = server.shutdown_token().clone();
    tokio::select! {
        done = server.block_until_done() => return done.map_err(io::Error::other),
        () = shutdown => stop.cancel(),
    }
    server.block_until_done().await.map_err(io::Error::other)
}
