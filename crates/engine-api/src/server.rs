//! Serving the API: HTTP/1.1 on the node's unix socket, and optionally on TCP with mTLS where
//! only a manager's certificate is let in.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use orch_api::transport::TlsConn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};
use tracing::debug;

use crate::backend::Backend;

/// How long open requests (a `logs -f`, an `/events` stream) get once the node stops.
pub const DRAIN: Duration = Duration::from_secs(1);

type App = BoxCloneService<hyper::Request<hyper::body::Incoming>, Response, Infallible>;

/// The whole API as one service: the version layer around the routes.
pub fn app(backend: Backend) -> App {
    let router = crate::routes::router(backend);
    let app = axum::middleware::from_fn(crate::version::layer).layer(router);
    BoxCloneService::new(
        app.map_request(|r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
    )
}

fn serve_connection<S>(stream: S, app: App, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = TowerToHyperService::new(app);
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "engine API connection ended");
                }
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, conn).await;
            }
        }
    });
}

/// Serves the unix socket until `shutdown`.
pub async fn serve_unix(listener: UnixListener, backend: Backend, shutdown: CancellationToken) {
    let app = app(backend);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(stream, app.clone(), shutdown.clone()),
                Err(e) => {
                    debug!(error = %e, "engine API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves TCP with mTLS until `shutdown`: the client's certificate must be one of the
/// cluster's manager certificates.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    backend: Backend,
    shutdown: CancellationToken,
) {
    let app = app(backend);
    let mut incoming = orch_api::transport::tls_incoming(listener, config, shutdown.clone());
    while let Some(conn) = incoming.next().await {
        let Ok(conn): Result<TlsConn, _> = conn else {
            continue;
        };
        let peer = conn.connect_info();
        if peer.cert.as_ref().map(|c| c.role) != Some(orch_api::pb::NodeRole::Manager) {
            debug!(peer = ?peer.remote_addr, "engine API: a client without a manager certificate was refused");
            continue;
        }
        serve_connection(conn, app.clone(), shutdown.clone());
    }
}
