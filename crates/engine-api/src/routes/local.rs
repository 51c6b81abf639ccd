//! The node's own containers, images and volumes: read-only requests passed to the node's
//! Docker Engine as they came (without the version prefix, which that engine may not serve).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::{Backend, EngineAddr};
use crate::error::ApiError;

async fn send<S>(stream: S, request: hyper::Request<Body>) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.map(Body::new))
}

/// Sends a GET for `path_and_query` to the node's engine.
async fn engine_get(backend: &Backend, path_and_query: &str) -> Result<Response, String> {
    let Some(engine) = backend.engine() else {
        return Err("the node's Docker Engine address is not a unix or tcp address".into());
    };
    let request = hyper::Request::get(path_and_query)
        .header("Host", "docker")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let connect = async {
        match engine {
            EngineAddr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                send(stream, request).await
            }
            EngineAddr::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                send(stream, request).await
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| "the node's Docker Engine did not answer within 10s".to_string())?
}

/// The engine's JSON answer to a GET, if it gives one within 3 s (it only adds detail).
pub async fn engine_json(backend: &Backend, path: &str) -> Option<Value> {
    let read = async {
        let response = engine_get(backend, path).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), read)
        .await
        .ok()
        .flatten()
}

/// A change to the node's containers, images or volumes: orch passes only reads on.
pub async fn refused() -> ApiError {
    ApiError::not_found(
        "orch passes only reads to this node's Docker Engine: use the engine itself to change \
         its containers, images or volumes",
    )
}

/// Whether `path` names what its route matched: no `.` or `..` segment and no encoded `.` or
/// `/`, which the engine could resolve to another of its routes.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !lower.contains("%2e")
        && !lower.contains("%2f")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

pub async fn proxy(State(backend): State<Backend>, request: Request) -> Response {
    if !is_plain(request.uri().path()) {
        return ApiError::not_found("page not found").into_response();
    }
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match engine_get(&backend, &target).await {
        Ok(response) => response,
        Err(e) => ApiError::unavailable(format!("cannot reach this node's Docker Engine: {e}"))
            .into_response(),
    }
}

/// `GET /images/{name}/json` and `/images/{name}/history`: an image's name may hold slashes
/// (`orch-test/busybox:1`), so the route takes the rest of the path and only these two parts
/// go to the engine.
pub async fn image(
    State(backend): State<Backend>,
    Path(name_and_part): Path<String>,
    request: Request,
) -> Response {
    let is_read = ["/json", "/history"].iter().any(|part| {
        name_and_part
            .strip_suffix(part)
            .is_some_and(|n| !n.is_empty())
    });
    if !is_read {
        return ApiError::not_found("page not found").into_response();
    }
    proxy(State(backend), request).await
}

#[cfg(test)]
mod tests {
    use super::is_plain;

    #[test]
    fn only_plain_paths_go_to_the_engine() {
        for path in [
            "/containers/abc/logs",
            "/images/orch-test/busybox:1/json",
            "/images/registry.example:5000/a/b:1.2/history",
            "/volumes/data.1",
        ] {
            assert!(is_plain(path), "{path}");
        }
        for path in [
            "/containers/../secrets/json",
            "/containers/x/../../info/logs",
            "/images/./json",
            "/containers/%2e%2e/json",
            "/containers/%2E%2e/json",
            "/images/a%2fb/json",
            "/images/a%2Fb/json",
        ] {
            assert!(!is_plain(path), "{path}");
        }
    }
}
