//! The accept loops: the Unix socket (the peer's uid from `SO_PEERCRED`) and, when set, TCP
//! (TLS when public). Each connection is HTTP/1.1 with a cap on the request head's size and
//! the time to send it (idle connections included: one that sends nothing is closed after
//! `api.header_timeout`). `api.max_connections` are served at once, on both listeners
//! together; one more is answered `503` (plain HTTP: a JSON error with `Retry-After`; TLS:
//! closed) and closed at once, so a client that holds many connections open cannot make
//! others queue behind it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use p3ak_kernel::audit::AuditEvent;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::auth::Peer;
use crate::backend::Backend;
use crate::{App, router};

/// Why the API cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A socket could not be bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// Where.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// `[api]` is not usable.
    #[error("{0}")]
    Settings(String),
    /// The TLS certificate or key cannot be used.
    #[error("api TLS: {0}")]
    Tls(String),
}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How often idle callers' rate-limit state is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How a connection over `api.max_connections` shows in the metrics and the audit log.
const OVER_CONNECTIONS: &str = "max_connections";
/// The answer on a plain connection over `api.max_connections`, before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 104\r\n\r\n\
{\"error\":\"unavailable\",\"message\":\"the API serves as many connections as it may (`api.max_connections`)\"}";

/// The API's listeners, bound, with the TLS certificate loaded: [`Listening::run`] serves
/// them. Binding first makes a bad setting (a port in use, a key the kernel cannot read) an
/// error at start rather than an API silently absent.
pub struct Listening<B: Backend> {
    app: Arc<App<B>>,
    unix: Option<UnixListener>,
    tcp: Option<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
}

impl<B: Backend> std::fmt::Debug for Listening<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("unix", &self.unix.is_some())
            .field("tcp", &self.tcp.as_ref().map(|(_, tls)| tls.is_some()))
            .finish_non_exhaustive()
    }
}

/// Binds the API's listeners under `app`'s settings.
///
/// # Errors
/// A [`ServeError`]: a socket that cannot be bound, an unusable `[api]`, a TLS certificate
/// or key that cannot be read or used.
pub async fn bind<B: Backend>(app: Arc<App<B>>) -> Result<Listening<B>, ServeError> {
    bind_with(app, None).await
}

/// [`bind`], serving `inherited` (a listener bound by systemd's socket activation) instead of
/// binding `[api] listen`. Its address must pass the same rules as `listen` (loopback, or
/// `public` with TLS), and TLS applies to it as it would to `listen`.
///
/// # Errors
/// As [`bind`]; an inherited socket whose address the rules refuse is
/// [`ServeError::Settings`].
pub async fn bind_with<B: Backend>(
    app: Arc<App<B>>,
    inherited: Option<std::net::TcpListener>,
) -> Result<Listening<B>, ServeError> {
    let settings = app.settings.clone();
    let addr = match &inherited {
        Some(listener) => {
            let addr = listener.local_addr().map_err(|source| ServeError::Bind {
                what: "the inherited socket".to_owned(),
                source,
            })?;
            let mut checked = settings.clone();
            checked.listen = addr.to_string();
            checked
                .listen_addr()
                .map_err(|e| ServeError::Settings(format!("the inherited socket: {e}")))?
        }
        None => settings
            .listen_addr()
            .map_err(|e| ServeError::Settings(e.to_string()))?,
    };
    let tcp = match addr {
        Some(addr) => {
            let tls = match (&settings.tls_cert, &settings.tls_key) {
                (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
                _ => None,
            };
            let bound = match inherited {
                Some(listener) => listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(listener)),
                None => TcpListener::bind(addr).await,
            };
            let listener = bound.map_err(|source| ServeError::Bind {
                what: addr.to_string(),
                source,
            })?;
            Some((listener, tls))
        }
        None => None,
    };
    let unix = if settings.enabled {
        Some(bind_unix(&app.kernel.home().api_socket())?)
    } else {
        None
    };
    Ok(Listening { app, unix, tcp })
}

impl<B: Backend> Listening<B> {
    /// Serves until the kernel stops.
    pub async fn run(self) {
        let Self { app, unix, tcp } = self;
        let routes = router(&app);
        let slots = Arc::new(Semaphore::new(app.settings.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        let had_socket = unix.is_some();
        if let Some(listener) = unix {
            tasks.spawn(accept_unix(
                listener,
                routes.clone(),
                Arc::clone(&slots),
                Arc::clone(&app),
            ));
        }
        if let Some((listener, tls)) = tcp {
            tasks.spawn(accept_tcp(
                listener,
                tls,
                routes,
                Arc::clone(&slots),
                Arc::clone(&app),
            ));
        }
        let pruner = {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_EVERY);
                loop {
                    tick.tick().await;
                    app.limits.prune();
                }
            })
        };
        app.kernel.stopping().await;
        pruner.abort();
        tasks.abort_all();
        if had_socket {
            let _ = std::fs::remove_file(app.kernel.home().api_socket());
        }
    }
}

/// Binds and serves the API until the kernel stops ([`bind`], then [`Listening::run`]).
///
/// # Errors
/// As [`bind`].
pub async fn serve<B: Backend>(app: Arc<App<B>>) -> Result<(), ServeError> {
    bind(app).await?.run().await;
    Ok(())
}

fn bind_unix(path: &PathBuf) -> Result<UnixListener, ServeError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        what: format!("`{}`", path.display()),
        source,
    })?;
    // Anyone may connect; the peer's uid (or a token) decides what it may do.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|source| {
        ServeError::Bind {
            what: format!("`{}`", path.display()),
            source,
        }
    })?;
    Ok(listener)
}

async fn accept_unix<B: Backend>(
    listener: UnixListener,
    routes: Router,
    slots: Arc<Semaphore>,
    app: Arc<App<B>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        let peer = Peer::Unix { uid: cred.uid() };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            let _ = stream.try_write(BUSY);
            over_connections(&app, &peer);
            continue;
        };
        let routes = routes.clone();
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            connection(stream, peer, routes, &app).await;
            drop(permit);
        });
    }
}

async fn accept_tcp<B: Backend>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    routes: Router,
    slots: Arc<Semaphore>,
    app: Arc<App<B>>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let peer = Peer::Tcp { addr };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // A TLS client would not understand plain text: it is only closed.
            if tls.is_none() {
                let _ = stream.try_write(BUSY);
            }
            over_connections(&app, &peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let app = Arc::clone(&app);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, peer, routes, &app).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                    {
                        connection(stream, peer, routes, &app).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// A connection refused over `api.max_connections`: counted, and audited at most once a
/// minute per peer (a flood of connections is not a flood of audit entries).
fn over_connections<B: Backend>(app: &Arc<App<B>>, peer: &Peer) {
    app.kernel.metrics().rate_limited(OVER_CONNECTIONS);
    let key = peer.key();
    if app.limits.should_audit(OVER_CONNECTIONS, &key) {
        let app = Arc::clone(app);
        tokio::spawn(async move {
            app.kernel
                .audit()
                .note(AuditEvent::ApiRateLimited {
                    principal: key,
                    scope: OVER_CONNECTIONS.to_owned(),
                    route: "(connection)".to_owned(),
                })
                .await;
        });
    }
}

async fn connection<B: Backend, S>(stream: S, peer: Peer, routes: Router, app: &App<B>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = routes.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        req
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.settings.header_timeout)
        .max_buf_size(app.settings.max_header_bytes.max(8192))
        .keep_alive(true);
    let _ = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await;
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("`{}`: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("`{}`: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "`{}` holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Tls(format!("`{}`: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed_http_with_a_json_error() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "unavailable");
    }
}
