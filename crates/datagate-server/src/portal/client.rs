//! The portal as a client of the API: every read and every change a page makes is a request to
//! the API routes, sent in-process through the whole layered application (request id, audit,
//! fair use, compression off), with the visitor's key and address — so a page can show nothing
//! the API would not give the same caller, each data read is limited and audited like an API
//! call, and refusals are the API's own.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

use crate::fair_use::Continuation;

/// JSON answers the portal reads whole (a rows page, a SQL result under the row cap).
const JSON_LIMIT: usize = 64 * 1024 * 1024;

/// Headers of the visitor's request that the API needs to see as they were: where the request
/// came from (behind trusted proxies), and which language.
const FORWARDED: [header::HeaderName; 4] = [
    header::HeaderName::from_static("x-forwarded-for"),
    header::HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
    header::HeaderName::from_static("x-forwarded-proto"),
];

/// The application the portal sends its requests to (set once it is built: the portal is part
/// of it).
#[derive(Clone, Default)]
pub struct Api(Arc<OnceLock<Router>>);

impl Api {
    pub fn set(&self, app: Router) {
        let _ = self.0.set(app);
    }

    /// Sends one request as `from`, returning the API's answer as it is (bodies stream).
    pub async fn send(
        &self,
        from: &Caller,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Body,
    ) -> Response {
        let headers: Vec<(header::HeaderName, &str)> = content_type
            .map(|c| vec![(header::CONTENT_TYPE, c)])
            .unwrap_or_default();
        self.send_with(from, method, uri, &headers, body).await
    }

    /// [`Api::send`] with the body's headers (`Content-Type`, `Content-Encoding`) given.
    pub async fn send_with(
        &self,
        from: &Caller,
        method: Method,
        uri: &str,
        body_headers: &[(header::HeaderName, &str)],
        body: Body,
    ) -> Response {
        let Some(app) = self.0.get() else {
            return problem_response(StatusCode::SERVICE_UNAVAILABLE, "the API is not ready");
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap_or_else(|_| Request::new(Body::empty()));
        let headers = req.headers_mut();
        for name in &FORWARDED {
            if let Some(v) = from.forwarded.get(name) {
                headers.insert(name.clone(), v.clone());
            }
        }
        if let Some(key) = &from.key
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            headers.insert(header::AUTHORIZATION, v);
        }
        for (name, value) in body_headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        }
        if let Some(peer) = from.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        if from.continuation {
            req.extensions_mut().insert(Continuation);
        }
        match app.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// A `DELETE` whose answer matters only by its status: the problem when it is refused.
    pub async fn delete(&self, from: &Caller, uri: &str) -> Result<(), Answer> {
        let resp = self
            .send(from, Method::DELETE, uri, None, Body::empty())
            .await;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(answer_of(resp).await)
        }
    }

    /// A GET whose JSON answer is read into `T`; any other answer is an [`Answer`] error.
    pub async fn get<T: DeserializeOwned>(&self, from: &Caller, uri: &str) -> Result<T, Answer> {
        let resp = self.send(from, Method::GET, uri, None, Body::empty()).await;
        read_json(resp).await
    }

    /// A request with a JSON body whose JSON answer is read into `T`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        from: &Caller,
        method: Method,
        uri: &str,
        body: &Value,
    ) -> Result<T, Answer> {
        let resp = self
            .send(
                from,
                method,
                uri,
                Some("application/json"),
                Body::from(body.to_string()),
            )
            .await;
        read_json(resp).await
    }
}

/// Who a portal request comes from: the session's key (none when signed out) and the
/// visitor's address and forwarding headers.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub key: Option<String>,
    pub peer: Option<SocketAddr>,
    pub forwarded: HeaderMap,
    /// Its requests go on reading what an earlier one of the same page view began
    /// ([`Continuation`]): not counted against the visitor's rate again.
    pub continuation: bool,
}

impl Caller {
    /// The same visitor, for requests that go on reading what this page view began.
    pub fn continuing(&self) -> Self {
        Self {
            continuation: true,
            ..self.clone()
        }
    }
}

/// An API answer that was not the success a page expected: its status and problem document.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub problem: Value,
}

impl Answer {
    pub fn detail(&self) -> String {
        self.problem
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    /// A number field of the problem (`line`, `column`, `position`).
    pub fn number(&self, field: &str) -> Option<u64> {
        self.problem.get(field).and_then(Value::as_u64)
    }
}

/// A refusal's status and problem document (non-JSON bodies give a null problem).
pub async fn answer_of(resp: Response) -> Answer {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    Answer {
        status,
        problem: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn read_json<T: DeserializeOwned>(resp: Response) -> Result<T, Answer> {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), JSON_LIMIT)
        .await
        .map_err(|e| Answer {
            status: StatusCode::BAD_GATEWAY,
            problem: serde_json::json!({"detail": format!("reading the API's answer: {e}")}),
        })?;
    if !status.is_success() {
        let problem = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({"detail": String::from_utf8_lossy(&bytes)}));
        return Err(Answer { status, problem });
    }
    serde_json::from_slice(&bytes).map_err(|e| Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        problem: serde_json::json!({"detail": format!("the API's answer was not what the portal expects: {e}")}),
    })
}

fn problem_response(status: StatusCode, detail: &str) -> Response {
    axum::response::IntoResponse::into_response(crate::problem::ApiError::new(
        status,
        "unavailable",
        detail,
    ))
}
