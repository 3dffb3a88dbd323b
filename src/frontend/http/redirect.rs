//! Redirects of near-miss paths as upstream's router (httprouter) makes them: a path that
//! matches a route once its trailing slash is added or removed, or once it is cleaned and its
//! fixed segments take the route's case, is redirected there (`301` for GET, `307` otherwise).

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::handlers;
use super::state::AppState;

/// A router that remembers its route templates, for [`Routes::finish`]'s redirects.
pub struct Routes {
    router: Router<AppState>,
    templates: Vec<&'static str>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            templates: Vec::new(),
        }
    }

    /// Adds `path` (an axum template) served by `methods`.
    pub fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Self {
        self.templates.push(path);
        self.router = self.router.route(path, methods);
        self
    }

    /// The router, whose unmatched requests are redirected to a route when a near-miss of
    /// one, else answered 404.
    pub fn finish(self) -> Router<AppState> {
        let templates: std::sync::Arc<[&'static str]> = self.templates.into();
        self.router
            .fallback(move |req: Request| redirect_or_not_found(templates.clone(), req))
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

async fn redirect_or_not_found(
    templates: std::sync::Arc<[&'static str]>,
    req: Request,
) -> Response {
    let path = req.uri().path();
    let fixed = (req.method() != Method::CONNECT && path != "/")
        .then(|| fix_path(&templates, path))
        .flatten();
    let Some(fixed) = fixed else {
        return handlers::not_found().await.into_response();
    };
    let location = match req.uri().query() {
        Some(q) => format!("{fixed}?{q}"),
        None => fixed,
    };
    let Ok(value) = HeaderValue::from_str(&location) else {
        return handlers::not_found().await.into_response();
    };
    let (status, body) = if req.method() == Method::GET {
        let text = format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&location)
        );
        (StatusCode::MOVED_PERMANENTLY, text)
    } else {
        (StatusCode::TEMPORARY_REDIRECT, String::new())
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::LOCATION, value);
    if req.method() == Method::GET || req.method() == Method::HEAD {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The route path `path` nearly matches (trailing slash, unclean or wrongly cased), if any.
pub fn fix_path(templates: &[&str], path: &str) -> Option<String> {
    let cleaned = clean(path);
    [
        path.to_string(),
        toggle_slash(path),
        toggle_slash(&cleaned),
        cleaned,
    ]
    .iter()
    .find_map(|candidate| templates.iter().find_map(|t| matches(t, candidate)))
    .filter(|fixed| fixed != path)
}

fn toggle_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed.to_string(),
        Some(_) => path.to_string(),
        None => format!("{path}/"),
    }
}

/// `path` with empty and `.` segments dropped and `..` applied (Go's `path.Clean`, keeping a
/// trailing slash as httprouter's `CleanPath` does).
fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut cleaned = format!("/{}", out.join("/"));
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// `path` with the template's case in its fixed segments, if it matches `template` ignoring
/// the case of those segments.
fn matches(template: &str, path: &str) -> Option<String> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut out: Vec<&str> = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(out.join("/")),
            (Some(ts), Some(ps)) if ts.starts_with("{*") => {
                // A wildcard takes the rest of the path, which must not be empty.
                let rest: Vec<&str> = std::iter::once(ps).chain(p).collect();
                if rest.iter().all(|s| s.is_empty()) {
                    return None;
                }
                out.extend(rest);
                return Some(out.join("/"));
            }
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                out.push(ps);
            }
            (Some(ts), Some(ps)) if ts.eq_ignore_ascii_case(ps) => out.push(ts),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[&str] = &[
        "/versions",
        "/schematics/{id}",
        "/image/{schematic}/{version}/{path}",
        "/pxe/ipxe/{*file}",
        "/v2",
        "/v2/",
    ];

    #[test]
    fn trailing_slashes_case_and_unclean_paths_are_fixed() {
        let fix = |p: &str| fix_path(ROUTES, p);
        assert_eq!(fix("/versions/").as_deref(), Some("/versions"));
        assert_eq!(fix("/VERSIONS").as_deref(), Some("/versions"));
        assert_eq!(fix("/Versions/").as_deref(), Some("/versions"));
        assert_eq!(fix("//versions").as_deref(), Some("/versions"));
        assert_eq!(fix("/x/../versions").as_deref(), Some("/versions"));
        // Parameters keep their case; fixed segments take the route's.
        assert_eq!(fix("/Schematics/AbC").as_deref(), Some("/schematics/AbC"));
        assert_eq!(
            fix("/IMAGE/s/v1.11.0/metal-amd64.iso/").as_deref(),
            Some("/image/s/v1.11.0/metal-amd64.iso")
        );
        assert_eq!(
            fix("/PXE/ipxe/a/B.efi").as_deref(),
            Some("/pxe/ipxe/a/B.efi")
        );
        // No route nearby, an exact match, or an empty parameter: no redirect.
        assert_eq!(fix("/nope"), None);
        assert_eq!(fix("/versions"), None);
        assert_eq!(fix("/schematics/"), None);
        assert_eq!(fix("/pxe/ipxe/"), None);
    }
}
