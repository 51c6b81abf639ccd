//! API versions: the path prefix `/vX.Y`, the range orch serves, and the headers dockerd puts
//! on every response.

use std::fmt;

use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A request's API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

/// The version orch claims: the one docker CLI 29 requires, with every swarm field users need.
pub const MAX: ApiVersion = ApiVersion(1, 44);
/// dockerd's minimum, the swarm API's first version.
pub const MIN: ApiVersion = ApiVersion(1, 24);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }

    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion(major, minor)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Splits `/v1.44/services` into the version and `/services`. A path without a version is
/// served at [`MAX`], as dockerd serves it at its default.
pub fn split(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((MAX, path));
    };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(v) = ApiVersion::parse(version) else {
        // Not a version (`/volumes`): an ordinary unversioned path.
        return Ok((MAX, path));
    };
    if v < MIN {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too old. Minimum supported API version is {MIN}, please upgrade your client to a newer version"
        )));
    }
    if v > MAX {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too new. Maximum supported API version is {MAX}"
        )));
    }
    Ok((v, tail))
}

/// An error the routes did not write (a rejected path or body, a wrong method) in docker's
/// shape: `{"message": …}` as `application/json`, which the docker CLI prints cleanly.
async fn as_docker_error(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/json");
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

pub fn server_header() -> String {
    format!("orch/{} (linux)", env!("CARGO_PKG_VERSION"))
}

/// Strips the version prefix before routing (the routes are unversioned), records the version
/// for the handlers, and adds dockerd's headers to every response.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = match split(&path) {
        Err(e) => e.into_response(),
        Ok((version, tail)) => {
            let tail = if tail.is_empty() { "/" } else { tail };
            let rewritten = match request.uri().query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_string(),
            };
            match rewritten.parse::<Uri>() {
                Ok(uri) => {
                    *request.uri_mut() = uri;
                    request.extensions_mut().insert(version);
                    next.run(request).await
                }
                Err(_) => ApiError::bad_request("invalid request path").into_response(),
            }
        }
    };
    let mut response = as_docker_error(response).await;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&MAX.to_string()) {
        headers.insert("Api-Version", v);
    }
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    if let Ok(v) = HeaderValue::from_str(&server_header()) {
        headers.insert("Server", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_version_prefix() {
        assert_eq!(split("/v1.44/services").ok(), Some((MAX, "/services")));
        assert_eq!(
            split("/v1.24/nodes/x").ok(),
            Some((ApiVersion(1, 24), "/nodes/x"))
        );
        assert_eq!(split("/services").ok(), Some((MAX, "/services")));
        assert_eq!(split("/volumes").ok(), Some((MAX, "/volumes")));
        assert_eq!(split("/_ping").ok(), Some((MAX, "/_ping")));
    }

    #[test]
    fn refuses_versions_outside_the_range_with_dockerds_messages() {
        let too_new = split("/v1.47/info").expect_err("too new");
        assert_eq!(too_new.status.as_u16(), 400);
        assert_eq!(
            too_new.message,
            "client version 1.47 is too new. Maximum supported API version is 1.44"
        );
        let too_old = split("/v1.23/info").expect_err("too old");
        assert_eq!(
            too_old.message,
            "client version 1.23 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"
        );
        assert!(ApiVersion(1, 41) < ApiVersion(1, 44));
        assert!(ApiVersion(1, 100) > ApiVersion(1, 44));
    }
}
