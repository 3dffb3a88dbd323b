//! The web UI: upstream's wizard (hardware type → Talos version → platform or board →
//! architecture and SecureBoot → extensions → customization → result) as server-rendered
//! pages, every step a bookmarkable GET URL, working without JavaScript and without any
//! external asset. Templates are compiled into the binary (minijinja, HTML autoescape); the
//! schematic is created by the same function as `POST /schematics`.

pub mod admin;
pub mod document;
pub mod form;
pub mod media;
pub mod pages;
pub mod wizard;

use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{Environment, Value, context};

use super::error::ApiError;
use super::handlers::{BODY_TIMEOUT, intake_permit, read_body, store_schematic};
use super::state::AppState;
use crate::catalog::Version;
use document::query_url;
use form::Params;
use wizard::{Step, Wizard};

/// The templates, by name (compiled in).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("hidden.html", include_str!("templates/hidden.html")),
    ("choose.html", include_str!("templates/choose.html")),
    ("arch.html", include_str!("templates/arch.html")),
    ("extensions.html", include_str!("templates/extensions.html")),
    (
        "extensions_list.html",
        include_str!("templates/extensions_list.html"),
    ),
    ("options.html", include_str!("templates/options.html")),
    ("result.html", include_str!("templates/result.html")),
    (
        "version_doc.html",
        include_str!("templates/version_doc.html"),
    ),
    ("admin.html", include_str!("templates/admin.html")),
];

/// The stylesheet (served by us: no CDN, no web fonts).
const STYLE_CSS: &str = include_str!("static/style.css");
/// The optional enhancements (live extension filter, copy buttons).
const WIZARD_JS: &str = include_str!("static/wizard.js");

/// What a page may load: only this origin; forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A serializable value for a template.
pub fn ser(value: impl serde::Serialize) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// The template environment, built once (HTML autoescape for every `.html` template).
fn env() -> Result<&'static Environment<'static>, ApiError> {
    static ENV: OnceLock<Result<Environment<'static>, minijinja::Error>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        env.add_global("app_version", env!("CARGO_PKG_VERSION"));
        Ok(env)
    })
    .as_ref()
    .map_err(|e| ApiError::internal(format!("loading the UI templates: {e}")))
}

/// Whether this process serves the demo release (`serve --demo`): every page says so.
static DEMO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets whether pages carry the demo banner (the data directory holds the demo release).
pub fn set_demo(on: bool) {
    DEMO.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Renders template `name` with `ctx` (and `demo`, for the banner).
pub fn render(name: &str, ctx: Value) -> Result<String, ApiError> {
    let demo = DEMO.load(std::sync::atomic::Ordering::Relaxed);
    env()?
        .get_template(name)
        .and_then(|t| t.render(context! { demo => demo, ..ctx }))
        .map_err(|e| ApiError::caused("rendering the page", e))
}

/// An HTML answer with the UI's security headers.
pub fn html(body: String) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `303 See Other` to a same-origin `location`.
fn see_other(location: &str) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(location)
        .map_err(|e| ApiError::caused("building the redirect", e))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response())
}

/// The result page of schematic `id` for the wizard's target.
fn result_url(w: &Wizard, id: &str) -> String {
    let pairs: Vec<(&str, String)> = w
        .pairs(Step::Extensions)
        .into_iter()
        .filter(|(k, _)| *k != "schematic-id")
        .collect();
    query_url(&format!("/ui/schematics/{id}"), &pairs)
}

/// Stores the complete wizard's schematic through `POST /schematics`' own path and redirects
/// to its result page.
async fn create(st: &AppState, w: &Wizard) -> Result<Response, ApiError> {
    let _permit = intake_permit(st).await?;
    let (id, _) = store_schematic(st, Bytes::from(w.document())).await?;
    see_other(&result_url(w, &id))
}

/// `GET /`: the wizard step the query describes; a complete query (upstream's final URL)
/// creates the schematic and redirects to its result page.
pub async fn index(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes(), None)?;
    let extensions_done = params.extensions_done;
    let w = Wizard::resolve(&st, params)?;
    let step = w.step();
    if step == Step::Result {
        return create(&st, &w).await;
    }
    if extensions_done && step > Step::Extensions {
        // The extensions form's `Next`: the bookmarkable URL names the chosen extensions.
        return see_other(&w.url(step));
    }
    let (name, ctx) = pages::step_page(&st, &w)?;
    Ok(html(render(name, ctx)?))
}

/// `POST /ui/wizard` (form fields, as upstream's): the customization step's form — it may
/// carry an embedded machine configuration, which never goes into a URL. A complete form
/// creates the schematic and redirects to its result page; any other redirects to its step.
pub async fn wizard_post(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let w = {
        let _permit = intake_permit(&st).await?;
        let limit = st.max_body_bytes();
        let body = tokio::time::timeout(BODY_TIMEOUT, read_body(&headers, body, limit))
            .await
            .map_err(|_| ApiError::RequestTimeout)??;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Wizard::resolve(&st, Params::parse(&body, Some(limit))?)?
    };
    match w.step() {
        Step::Result => create(&st, &w).await,
        step => see_other(&w.url(step)),
    }
}

/// The host (and port) the browser reached us at, for the snippets; `http.externalURL`'s
/// when the `Host` header is absent or not a plain host name.
fn browser_host(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(h) = super::state::request_host(headers) {
        return h.to_string();
    }
    url::Url::parse(&st.node().config().http.external_url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "localhost:8080".into())
}

/// `GET /ui/schematics/{id}?target=…&version=…&platform=…|board=…&arch=…&secureboot=…`: the
/// result page of a stored schematic (`404` when it is not stored); without a complete
/// target, `303` to the wizard pre-filled from it.
pub async fn result(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut params = Params::parse(query.unwrap_or_default().as_bytes(), None)?;
    params.schematic_id = None;
    let w = Wizard::resolve(&st, params)?;
    if !crate::schematic::is_valid_id(&id) {
        return Err(ApiError::NotFound("schematic not found".into()));
    }
    let yaml = st
        .schematics()
        .get(&id)?
        .ok_or_else(|| ApiError::NotFound("schematic not found".into()))?;
    if w.step() < Step::Extensions {
        // Not told which media to show (e.g. `/ui/schematics/<id>` alone): the wizard asks
        // for the rest, pre-filled from the schematic.
        let mut pairs = w.pairs(w.step());
        pairs.push(("schematic-id", id));
        return see_other(&query_url("/", &pairs));
    }
    let scheme = if st.node().config().http.cert_file.is_empty() {
        "http"
    } else {
        "https"
    };
    let host = browser_host(&st, &headers);
    let ctx = pages::result(&w, &id, &yaml, &host, scheme)?;
    Ok(html(render("result.html", ctx)?))
}

/// `GET|POST /ui/extensions-list` (`version`, `search`, repeated `extensions`): the extension
/// list fragment, filtered by reference or description, case-insensitively (as upstream's).
pub async fn extensions_list(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let body = tokio::time::timeout(BODY_TIMEOUT, read_body(&headers, body, 64 * 1024))
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
    let input = if body.is_empty() {
        query.unwrap_or_default().into_bytes()
    } else {
        body.to_vec()
    };
    let mut params = Params::parse(&input, None)?;
    if params.version.is_none() {
        return Err(ApiError::BadRequest(
            "parameter \"version\" is required".into(),
        ));
    }
    let selected = params.extensions.take().unwrap_or_default();
    let search = params.search.take().unwrap_or_default();
    let w = Wizard::resolve(
        &st,
        Params {
            version: params.version,
            ..Params::default()
        },
    )?;
    let items = pages::extension_items(&w, "", &search, &selected);
    let items: Vec<_> = items.into_iter().filter(|i| i.shown()).collect();
    let ctx = context! { extensions => ser(&items), arch => "" };
    Ok(html(render("extensions_list.html", ctx)?))
}

/// `GET /ui/version-doc?version=`: a fragment with the version's documentation pointers.
pub async fn version_doc(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes(), None)?;
    let raw = params
        .version
        .clone()
        .ok_or_else(|| ApiError::BadRequest("parameter \"version\" is required".into()))?;
    let w = Wizard::resolve(
        &st,
        Params {
            version: Some(raw),
            ..Params::default()
        },
    )?;
    let v: &Version = w
        .version
        .as_ref()
        .ok_or_else(|| ApiError::internal("a resolved version"))?;
    Ok(html(render("version_doc.html", pages::version_doc(v))?))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/static/style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /ui/static/wizard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", WIZARD_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes() {
        let env = env().expect("templates load");
        for (name, _) in TEMPLATES {
            env.get_template(name).expect(name);
        }
        let out = render(
            "version_doc.html",
            context! { version => "<script>", minor => "\"x\"" },
        )
        .expect("renders");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(!out.contains("<script>"), "{out}");
    }
}
