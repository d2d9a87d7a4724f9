//! The web console at `/console`: one static page and its scripts, embedded in the
//! binary (docs/console.md).
//!
//! The page itself is open, like `/docs`: it holds no data. Everything it shows comes
//! from ordinary API calls made by the browser, so those calls follow the server's
//! auth like any other client's (the page asks for a token when they answer 401).
//!
//! Every answer carries a strong `ETag` (the version and a hash of the bytes) and
//! `Cache-Control: no-cache`: the browser keeps its copy and revalidates it, so a new
//! binary is picked up at once while an unchanged one costs a 304.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::AppError;
use crate::error::ErrorKind;

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console";

/// The most the embedded assets may weigh together: the console is a small tool, not
/// an application; a unit test keeps it so.
pub const SIZE_BUDGET_BYTES: usize = 100 * 1024;

/// Scripts may only come from the page's own origin and talk to it; no inline code,
/// no external fonts or CDNs, and no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

/// Every file of the console; `index.html` is the page itself.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("chart.js", JS),
    asset!("browser.js", JS),
    asset!("view.js", JS),
    asset!("sql.js", JS),
    asset!("health.js", JS),
    asset!("app.js", JS),
];

/// The console's routes, stateless, merged into the main router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(CONSOLE_PATH, get(index))
        .route("/console/", get(index))
        .route("/console/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => Ok(serve(asset, &headers)),
        None => Err(AppError::new(
            ErrorKind::NotFound,
            "no such console file; the console is at /console",
        )),
    }
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = etag(asset);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    resp
}

/// `"<version>-<fnv1a64 of the bytes>"`, computed once per asset.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}-{:016x}\"", env!("CARGO_PKG_VERSION"), fnv1a(a.body)))
            .collect()
    });
    let i = ASSETS
        .iter()
        .position(|a| a.name == asset.name)
        .unwrap_or(0);
    tags[i].as_str()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get_path(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(IF_NONE_MATCH, tag);
        }
        routes::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn assets_fit_the_size_budget() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(
            total <= SIZE_BUDGET_BYTES,
            "console assets weigh {total} bytes, over the budget of {SIZE_BUDGET_BYTES}"
        );
    }

    #[test]
    fn every_script_and_style_the_page_names_is_embedded_and_the_other_way_round() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for a in &ASSETS[1..] {
            assert!(
                html.contains(&format!("\"/console/{}\"", a.name)),
                "index.html does not load {}",
                a.name
            );
        }
        assert_eq!(
            html.matches("src=\"/console/").count() + 1,
            ASSETS.len() - 1
        );
        // Nothing from elsewhere: no CDN, no external fonts.
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[tokio::test]
    async fn the_page_and_its_files_have_their_types() {
        for (path, ty) in [
            ("/console", HTML),
            ("/console/", HTML),
            ("/console/app.js", JS),
            ("/console/style.css", CSS),
        ] {
            let resp = get_path(path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[CONTENT_TYPE], ty, "{path}");
            assert_eq!(resp.headers()[CACHE_CONTROL], "no-cache", "{path}");
            let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn an_unchanged_file_is_a_304_and_an_unknown_one_a_404() {
        let resp = get_path("/console/chart.js", None).await;
        let tag = resp.headers()[ETAG].to_str().unwrap().to_owned();
        let resp = get_path("/console/chart.js", Some(&tag)).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let resp = get_path("/console/chart.js", Some("\"other\"")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = get_path("/console/nope.js", None).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
