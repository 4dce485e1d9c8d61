//! The flags of `serve`, `sync` and the commands that share them: the first
//! stage of configuration, before `Config::resolve` merges them over the
//! TOML file and the built-in defaults and validates the result. Keeping
//! the raw flags separate lets `SIGHUP` re-read the file and re-apply the
//! same flags on top. `cli` mounts them as subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `cvdmirror serve`. Each overrides the same setting in the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (flags given here override it).
    /// See docs/configuration.md for every option.
    #[arg(long, short = 'c', env = "CVDMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; repeat for several (default: `[::]:8080` and `0.0.0.0:8080`).
    /// In the environment variable, separate addresses with commas.
    #[arg(
        long,
        short = 'l',
        env = "CVDMIRROR_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Directory served to clients whose Host matches no `[[site]]` (default: ./mirror, created if missing).
    #[arg(long, short = 'r', env = "CVDMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Where to write the access log in combined format: a file path, `-` for
    /// standard output, or `off` (default: -).
    #[arg(long, env = "CVDMIRROR_ACCESS_LOG", value_name = "PATH|-|off")]
    pub access_log: Option<String>,

    /// Maximum concurrent client connections; beyond it clients get 503 with
    /// Retry-After (default: 10000).
    #[arg(long, env = "CVDMIRROR_MAX_CONNS", value_name = "N")]
    pub max_conns: Option<usize>,

    /// List directory contents as HTML for the default site (default: off; a
    /// mirror needs no listings).
    #[arg(long, env = "CVDMIRROR_DIRECTORY_LISTING")]
    pub directory_listing: bool,

    /// Format of the diagnostic log on standard error.
    #[arg(long, env = "CVDMIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run the sync engine in the background, this often (jittered ±10 %),
    /// e.g. `1h`. Off unless given here or as `[sync] interval`.
    #[arg(long, env = "CVDMIRROR_SYNC_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub sync_interval: Option<std::time::Duration>,

    /// Answer DNS TXT queries for `--beacon-name` here (UDP and TCP) with the
    /// versions this mirror publishes.
    #[arg(long, env = "CVDMIRROR_BEACON_LISTEN", value_name = "ADDR:PORT")]
    pub beacon_listen: Option<SocketAddr>,

    /// Name the beacon answers, e.g. `current.cvd.mirror.example.org`.
    #[arg(long, env = "CVDMIRROR_BEACON_NAME", value_name = "NAME")]
    pub beacon_name: Option<String>,

    /// Admin API address (health, readiness, `POST /sync`), e.g. `127.0.0.1:8081`.
    #[arg(long, env = "CVDMIRROR_ADMIN_LISTEN", value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,

    /// File holding the bearer token that authorizes admin actions.
    #[arg(long, env = "CVDMIRROR_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Join a fleet of nodes coordinated through this Redis,
    /// `redis://[:password@]host:port/db` (or `rediss://` for TLS); see
    /// docs/fleet.md.
    #[arg(long, env = "CVDMIRROR_FLEET", value_name = "URL")]
    pub fleet: Option<String>,

    /// This node's name in the fleet (unique; e.g. the host name).
    #[arg(long, env = "CVDMIRROR_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// The URL clients reach this node at, e.g. `http://mirror2.example.org`
    /// (other nodes redirect here).
    #[arg(long, env = "CVDMIRROR_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Total cap for everything the mirror sends, with units (`80Mbit`,
    /// `10MB/s`). Also `[shape] link_rate`.
    #[arg(long, env = "CVDMIRROR_LINK_RATE", value_name = "RATE")]
    pub link_rate: Option<crate::shape::Rate>,

    /// Cap of each client (IPv4 address, IPv6 /64), e.g. `10Mbit`. Also `[shape] client_rate`.
    #[arg(long, env = "CVDMIRROR_CLIENT_RATE", value_name = "RATE")]
    pub client_rate: Option<crate::shape::Rate>,

    /// Herd gate: admit a whole-CVD download only while each admitted one
    /// keeps at least this rate; others get 429 with a jittered Retry-After.
    /// Also `[limits.herd] bulk_min_rate`.
    #[arg(long, env = "CVDMIRROR_BULK_MIN_RATE", value_name = "RATE")]
    pub bulk_min_rate: Option<crate::shape::Rate>,

    /// Also serve HTTPS on this address; repeat for several (needs
    /// `--tls-cert` and `--tls-key`). Also `[tls] listen`. In the
    /// environment variable, separate addresses with commas.
    #[arg(
        long,
        env = "CVDMIRROR_TLS_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ','
    )]
    pub tls_listen: Vec<SocketAddr>,

    /// Certificate chain of the default site for HTTPS: PEM, leaf first.
    /// Reloaded on SIGHUP. Also `[tls] cert`.
    #[arg(long, env = "CVDMIRROR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of `--tls-cert` (PEM: PKCS#8, RSA or EC). Also `[tls] key`.
    #[arg(long, env = "CVDMIRROR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Require HTTPS clients of the default site to present a certificate
    /// issued by a CA in this PEM file. Also `[tls] client_ca`.
    #[arg(long, env = "CVDMIRROR_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Upstream settings (shared with `cvdmirror sync`).
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// Flags of `cvdmirror sync`.
#[derive(Debug, Clone, Default, Args)]
pub struct SyncCommandArgs {
    /// Read settings from this TOML file (flags override it).
    #[arg(long, short = 'c', env = "CVDMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The served directory to bring up to date (default: ./mirror).
    #[arg(long, short = 'r', env = "CVDMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Format of the diagnostic log on standard error.
    #[arg(long, env = "CVDMIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Upstream settings.
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// Where and how to sync from; each overrides the same key under `[sync]`.
#[derive(Debug, Clone, Default, Args)]
pub struct SyncArgs {
    /// Upstream base URL: the official CDN, another mirror, or another
    /// cvdmirror (default: `https://database.clamav.net`).
    #[arg(long, env = "CVDMIRROR_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    /// DNS TXT record that advertises the newest versions (default: current.cvd.clamav.net).
    #[arg(long, env = "CVDMIRROR_DNS_NAME", value_name = "NAME")]
    pub dns_name: Option<String>,

    /// Ask this nameserver for the TXT record instead of the system resolver.
    #[arg(long, env = "CVDMIRROR_NAMESERVER", value_name = "HOST:PORT")]
    pub nameserver: Option<SocketAddr>,

    /// Learn versions from DNS (default) or from the CVD headers upstream
    /// (`http`; for upstreams that allow it, never the official CDN).
    #[arg(long, env = "CVDMIRROR_VERSION_CHECK", value_enum)]
    pub version_check: Option<VersionCheck>,

    /// A database to mirror; repeat for several (default: daily, main, bytecode).
    #[arg(
        long = "db",
        env = "CVDMIRROR_DATABASES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub databases: Vec<String>,

    /// Send every upstream request through this HTTP proxy,
    /// `http://[user:password@]host:port` (basic authentication). Without
    /// it, `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment apply.
    #[arg(long, env = "CVDMIRROR_PROXY", value_name = "URL")]
    pub proxy: Option<String>,

    /// Which keys, roots and signatures a file must verify with.
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// What a downloaded or imported file must verify with: `sync`, `serve`
/// and `bundle import` take the same three flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// An extra trusted signing key, `ROLE:n=DECIMAL,e=DECIMAL` with ROLE one
    /// of cvd, info, cdiff (repeatable; ClamAV's official keys are always trusted).
    #[arg(long = "trusted-key", value_name = "ROLE:n=..,e=..")]
    pub trusted_keys: Vec<String>,

    /// An extra trusted root for ClamAV 1.5 `.sign` files: a PEM file with
    /// one or more certificates (repeatable; ClamAV's production root is
    /// always trusted).
    #[arg(
        long = "sign-root",
        env = "CVDMIRROR_SIGN_ROOTS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub sign_roots: Vec<std::path::PathBuf>,

    /// Which signatures a file must carry before it is published:
    /// `either` (a verified `.sign`, or without one the legacy signature;
    /// default), `sign` (the `.sign`) or `both`.
    #[arg(long, env = "CVDMIRROR_SIGNATURES", value_name = "POLICY")]
    pub signatures: Option<crate::sync::SignaturePolicy>,
}

/// How the sync engine learns the newest versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VersionCheck {
    /// The DNS TXT record, as freshclam does.
    Dns,
    /// `Range: bytes=0-511` of each CVD upstream.
    Http,
}

/// How diagnostic (tracing) output is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}
