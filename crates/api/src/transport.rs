//! gRPC over mutual TLS (TCP) and over the node's unix control socket.
//!
//! Servers accept TCP connections, run the TLS handshake in their own task (a slow or garbage
//! client never blocks the accept loop), and hand tonic only finished handshakes. Each
//! connection carries a [`PeerInfo`] that handlers read from the request extensions to learn who
//! called: a verified certificate, no certificate, or the local socket.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::{server::TlsStream, TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::tls::{cert_info_from_der, CertInfo, MANAGER_SERVER_NAME};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a server connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate, if the client presented one.
    pub cert: Option<CertInfo>,
    /// The connection came through the node's unix socket (local administrator).
    pub local: bool,
}

/// A server-side TLS connection with its peer's identity.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

macro_rules! delegate_io {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.stream).poll_read(cx, buf)
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.stream).poll_write(cx, buf)
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.stream).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.stream).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.stream.is_write_vectored()
            }
        }
    };
}

delegate_io!(TlsConn);

/// Accepts TCP connections and yields those that complete a TLS handshake. Stops when
/// `shutdown` fires (dropping the listener closes the port).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| cert_info_from_der(leaf.as_ref()).ok());
                        let peer = PeerInfo {
                            remote_addr: Some(remote),
                            cert,
                            local: false,
                        };
                        let _ = tx.send(Ok(TlsConn { stream, peer })).await;
                    }
                    Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake refused"),
                    Err(_) => debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A connection on the node's unix control socket.
pub struct UnixConn {
    stream: UnixStream,
}

impl Connected for UnixConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            cert: None,
            local: true,
        }
    }
}

delegate_io!(UnixConn);

/// Binds the control socket at `path` with mode 0600 (removing a stale socket file first).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub fn unix_incoming(
    listener: UnixListener,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<UnixConn, io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if tx.send(Ok(UnixConn { stream })).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "unix accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    });
    ReceiverStream::new(rx)
}

fn endpoint(uri: String) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// A channel to a manager at `addr` (host:port) over TLS with `config`. Connects lazily:
/// the first call reports a connection failure.
pub fn tls_channel(
    addr: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = addr.to_string();
    let connector = TlsConnector::from(config);
    let connect = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let addr = addr.clone();
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(MANAGER_SERVER_NAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint("http://orch.invalid".to_string())?.connect_with_connector_lazy(connect))
}

/// A channel to the local node's control socket.
pub fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    let connect = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    Ok(endpoint("http://orch.local".to_string())?.connect_with_connector_lazy(connect))
}

/// Reads the caller's identity from a request (set by the server's incoming stream).
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}
