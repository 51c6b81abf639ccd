//! Errors as the docker CLI reads them: docker's status codes and `{"message": …}` with a
//! Content-Type of exactly `application/json` (the client compares it with `==`).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tonic::Code;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

/// dockerd's mapping of swarmkit's gRPC codes, with two of orch's: a worker's "not a swarm
/// manager" is a 503 as in dockerd, and a stale `version=` is the 500 "update out of sequence"
/// dockerd passes through from swarmkit.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let message = status.message().to_string();
        if message.starts_with("This node is not a swarm manager") {
            return ApiError::unavailable(message);
        }
        let status_code = match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Aborted => {
                return ApiError::internal(format!("rpc error: code = Unknown desc = {message}"))
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status_code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_dockers_statuses() {
        let cases = [
            (tonic::Status::not_found("service x not found"), 404),
            (tonic::Status::invalid_argument("bad"), 400),
            (tonic::Status::failed_precondition("no previous spec"), 400),
            (tonic::Status::already_exists("name conflicts"), 409),
            (tonic::Status::unavailable("no leader"), 503),
            (tonic::Status::internal("boom"), 500),
            (
                tonic::Status::failed_precondition(orch_api::NOT_A_MANAGER),
                503,
            ),
        ];
        for (status, code) in cases {
            assert_eq!(ApiError::from(status).status.as_u16(), code);
        }
        let stale = ApiError::from(tonic::Status::aborted("update out of sequence: service x"));
        assert_eq!(stale.status.as_u16(), 500);
        assert_eq!(
            stale.message,
            "rpc error: code = Unknown desc = update out of sequence: service x"
        );
    }

    #[tokio::test]
    async fn errors_are_a_json_message_with_the_exact_content_type() {
        let response = ApiError::not_found("service nosuch not found").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"message":"service nosuch not found"}"#);
    }
}
