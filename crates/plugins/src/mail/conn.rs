//! Connections: TCP with timeouts, TLS (rustls on ring, the platform's roots plus an optional
//! extra CA), IMAP login (implicit TLS, STARTTLS, or plain on loopback only).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use p3ak_sdk::runtime::ToolFailure;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (`imaps://`, `smtps://`).
    Implicit,
    /// STARTTLS, required (`imap://`, `smtp://` to a host that is not loopback).
    StartTls,
    /// No TLS: only ever for a loopback host.
    Plain,
}

/// A server from the config: host, port and security.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
}

impl Server {
    /// Parses `scheme://host[:port]` where `scheme` is `secure` (implicit TLS, port
    /// `secure_port`) or `starttls` (port `starttls_port`; plain on loopback).
    pub(crate) fn parse(
        key: &str,
        text: &str,
        (secure, secure_port): (&str, u16),
        (starttls, starttls_port): (&str, u16),
    ) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("`{key}`: not a URL: {e}"))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("`{key}`: the URL has no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{key}`: put no login in the URL (the password is the plugin's credential)"
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{key}`: give only scheme, host and port"));
        }
        let scheme = url.scheme();
        let (security, default_port) = if scheme == secure {
            (Security::Implicit, secure_port)
        } else if scheme == starttls {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                (Security::Plain, starttls_port)
            } else {
                (Security::StartTls, starttls_port)
            }
        } else {
            return Err(format!(
                "`{key}`: the scheme must be `{secure}` or `{starttls}`, not `{scheme}`"
            ));
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
        })
    }
}

/// The TLS settings shared by IMAP and SMTP.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) config: Arc<ClientConfig>,
    /// The extra CA's PEM, for lettre.
    pub(crate) extra_pem: Option<Vec<u8>>,
}

impl Tls {
    pub(crate) fn new(extra_pem: Option<Vec<u8>>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut extra = Vec::new();
        if let Some(pem) = &extra_pem {
            use rustls::pki_types::pem::PemObject;
            for cert in CertificateDer::pem_slice_iter(pem) {
                extra.push(cert.map_err(|e| format!("`ca_file`: not a PEM certificate: {e}"))?);
            }
            if extra.is_empty() {
                return Err("`ca_file`: no certificate in the file".to_owned());
            }
        }
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
                .map_err(|e| format!("cannot set up certificate checks: {e}"))?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            extra_pem,
        })
    }
}

/// A stream, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Stream::Plain",
            Self::Tls(_) => "Stream::Tls",
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// A stream that refuses to read more than a budget: the IMAP client keeps whatever a server
/// sends for a command (a literal of any size), so a hostile server is cut off here.
#[derive(Debug)]
pub(crate) struct Capped {
    inner: Stream,
    left: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "the IMAP server sent more than this call may read",
            ));
        }
        let most = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.inner.read(buf.get_mut(..most).unwrap_or_default())?;
        self.left = self.left.saturating_sub(read as u64);
        Ok(read)
    }
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Connects with read/write timeouts (a plain connect: `connect_timeout` needs `ioctl`, which
/// the network sandbox refuses).
fn tcp(server: &Server, timeout: Duration) -> Result<TcpStream, ToolFailure> {
    let addresses = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(|e| ToolFailure::transient(format!("cannot resolve the mail server: {e}")))?;
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address) {
            Ok(stream) => {
                let set = |s: &TcpStream| -> std::io::Result<()> {
                    s.set_read_timeout(Some(timeout))?;
                    s.set_write_timeout(Some(timeout))
                };
                set(&stream).map_err(|e| ToolFailure::transient(format!("socket: {e}")))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ToolFailure::transient(match last {
        Some(e) => format!(
            "cannot connect to the mail server {}:{}: {e}",
            server.host, server.port
        ),
        None => format!("no address for the mail server {}", server.host),
    }))
}

fn tls(tls: &Tls, server: &Server, tcp: TcpStream) -> Result<Stream, ToolFailure> {
    let name = ServerName::try_from(server.host.clone())
        .map_err(|_| ToolFailure::invalid("the mail server's host is not a valid TLS name"))?;
    let connection = ClientConnection::new(Arc::clone(&tls.config), name)
        .map_err(|e| ToolFailure::transient(format!("TLS: {e}")))?;
    let mut stream = StreamOwned::new(connection, tcp);
    // Handshake now, so that a refused certificate is reported as such.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| ToolFailure::transient(format!("TLS with the mail server failed: {e}")))?;
    }
    Ok(Stream::Tls(Box::new(stream)))
}

/// Reads one line (at most 8 KiB) byte by byte, so that nothing after it is consumed.
fn line(socket: &mut TcpStream) -> Result<Vec<u8>, ToolFailure> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while out.len() < 8192 {
        let read = socket
            .read(&mut byte)
            .map_err(|e| ToolFailure::transient(format!("IMAP connection: {e}")))?;
        if read == 0 {
            return Err(ToolFailure::transient(
                "the IMAP server closed the connection",
            ));
        }
        out.extend_from_slice(&byte);
        if out.ends_with(b"\r\n") {
            return Ok(out);
        }
    }
    Err(ToolFailure::transient(
        "the IMAP server sent an overlong line",
    ))
}

/// The greeting, then `STARTTLS` until its tagged OK. Reading stops right after that line:
/// bytes the server sent before the handshake (an injection) would be in the TLS stream's
/// way and fail it.
fn starttls(socket: &mut TcpStream) -> Result<(), ToolFailure> {
    let greeting = line(socket)?;
    if !greeting.starts_with(b"* OK") {
        return Err(ToolFailure::transient(
            "the IMAP server did not greet with OK",
        ));
    }
    socket
        .write_all(b"s1 STARTTLS\r\n")
        .map_err(|e| ToolFailure::transient(format!("IMAP connection: {e}")))?;
    for _ in 0..64 {
        let reply = line(socket)?;
        if reply.starts_with(b"s1 OK") {
            return Ok(());
        }
        if reply.starts_with(b"s1 ") {
            return Err(ToolFailure::transient("the IMAP server refused STARTTLS"));
        }
    }
    Err(ToolFailure::transient(
        "the IMAP server did not answer STARTTLS",
    ))
}

/// An IMAP session, logged in.
pub(crate) type Session = imap::Session<Capped>;

/// Connects to the IMAP server and logs in.
pub(crate) fn imap_login(
    server: &Server,
    settings: &Tls,
    timeout: Duration,
    user: &str,
    password: &str,
    budget: u64,
) -> Result<Session, ToolFailure> {
    let socket = tcp(server, timeout)?;
    let capped = |inner| Capped {
        inner,
        left: budget,
    };
    let client = match server.security {
        Security::Plain => {
            let mut client = imap::Client::new(capped(Stream::Plain(socket)));
            client.read_greeting().map_err(|e| imap_failure(&e))?;
            client
        }
        Security::Implicit => {
            let mut client = imap::Client::new(capped(tls(settings, server, socket)?));
            client.read_greeting().map_err(|e| imap_failure(&e))?;
            client
        }
        Security::StartTls => {
            let mut socket = socket;
            starttls(&mut socket)?;
            imap::Client::new(capped(tls(settings, server, socket)?))
        }
    };
    client.login(user, password).map_err(|(e, _)| match e {
        imap::Error::No(_) | imap::Error::Bad(_) => ToolFailure::new(
            p3ak_proto::ErrorKind::Auth,
            "the IMAP server refused the login (check `user` and the credential)",
        ),
        other => imap_failure(&other),
    })
}

/// A failure talking IMAP, without the server's words when they could echo input.
pub(crate) fn imap_failure(e: &imap::Error) -> ToolFailure {
    match e {
        imap::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            ToolFailure::transient("the IMAP server did not answer in time")
        }
        imap::Error::Io(io) => ToolFailure::transient(format!("IMAP connection: {io}")),
        imap::Error::ConnectionLost | imap::Error::Bye(_) => {
            ToolFailure::transient("the IMAP server closed the connection")
        }
        imap::Error::No(no) => ToolFailure::permanent(format!(
            "the IMAP server said no: {}",
            crate::mail::one_line(&no.information, 200)
        )),
        imap::Error::Bad(bad) => ToolFailure::permanent(format!(
            "the IMAP server refused the command: {}",
            crate::mail::one_line(&bad.information, 200)
        )),
        imap::Error::Validate(_) => {
            ToolFailure::invalid("a name contains a line break, which IMAP cannot carry")
        }
        other => ToolFailure::transient(format!(
            "IMAP: {}",
            crate::mail::one_line(&other.to_string(), 200)
        )),
    }
}
