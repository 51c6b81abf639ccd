//! Serving the API: HTTP/1.1 on the node's unix socket, and optionally on TCP with mTLS where
//! only a manager's certificate is let in.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use orch_api::pb::{GetNodeRequest, NodeRole};
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
use crate::error::ApiError;

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

/// The node behind a client certificate must still be a manager of the swarm: a removed or
/// demoted node's certificate stays valid until it expires, and the TCP listener acts on the
/// cluster with the node's own authority.
async fn still_a_manager(backend: &Backend, node_id: &str) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "node {node_id} is not a manager of this swarm: its certificate is not accepted"
            ),
        )
    };
    let node = backend
        .control()
        .get_node(GetNodeRequest {
            node: node_id.to_string(),
        })
        .await
        .map_err(|_| refused())?
        .into_inner();
    if node.id != node_id || node.role() != NodeRole::Manager {
        return Err(refused());
    }
    Ok(())
}

/// `app` behind the per-request check of the client's node.
fn for_manager(app: App, backend: Backend, node_id: String) -> App {
    let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (app, backend, node_id) = (app.clone(), backend.clone(), node_id.clone());
        async move {
            match still_a_manager(&backend, &node_id).await {
                Ok(()) => app.oneshot(request).await,
                Err(e) => Ok(e.into_response()),
            }
        }
    });
    BoxCloneService::new(service)
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
/// cluster's manager certificates, of a node that is still a manager at each request.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    backend: Backend,
    shutdown: CancellationToken,
) {
    let app = app(backend.clone());
    let mut incoming = orch_api::transport::tls_incoming(listener, config, shutdown.clone());
    while let Some(conn) = incoming.next().await {
        let Ok(conn): Result<TlsConn, _> = conn else {
            continue;
        };
        let peer = conn.connect_info();
        let node_id = match peer.cert {
            Some(cert) if cert.role == NodeRole::Manager => cert.node_id,
            _ => {
                debug!(peer = ?peer.remote_addr, "engine API: a client without a manager certificate was refused");
                continue;
            }
        };
        let checked = for_manager(app.clone(), backend.clone(), node_id);
        serve_connection(conn, checked, shutdown.clone());
    }
}
