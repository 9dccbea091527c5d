//! The portal's static files, compiled into the binary (nothing is fetched from elsewhere) and
//! served under content-hashed names (`style.3f2a…css`) with a year-long immutable cache
//! lifetime: a new build changes the names, so browsers never keep a stale file.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub struct Asset {
    /// `style.<hash>.css`
    pub name: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

fn asset(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = hex::encode(&Sha256::digest(bytes)[..6]);
    Asset {
        name: format!("{stem}.{hash}.{ext}"),
        content_type,
        bytes,
    }
}

pub static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "style",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    )
});

pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    )
});

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    for a in [&*STYLE, &*SCRIPT] {
        if a.name == name {
            return (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(a.content_type),
                    ),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    ),
                ],
                a.bytes,
            )
                .into_response();
        }
    }
    StatusCode::NOT_FOUND.into_response()
}
