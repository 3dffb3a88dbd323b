//! HTTP frontend (axum): the API router and the metrics router, served on listeners that
//! `frontend::serve` binds.

pub mod admin;
pub mod catalog;
pub mod cluster;
mod conn;
mod direct;
pub mod error;
pub mod gojson;
pub mod handlers;
pub mod image;
pub mod ipxe_files;
pub mod metrics;
pub mod middleware;
pub mod netboot;
pub mod parse_pool;
pub mod ranges;
pub mod redirect;
pub mod state;
pub mod talosctl;
pub mod ui;

pub use conn::{serve_listener, serve_unix_listener};
use redirect::Routes;
pub use state::AppState;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{any, get, post};

use crate::frontend::registry;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

/// Builds the CORS layer from `http.allowedOrigins`.
fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.allowed_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([header::CACHE_CONTROL])
        .expose_headers([
            header::CONTENT_DISPOSITION,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
        ])
}

/// The API router (without listeners), given shared state and config.
pub fn router(state: AppState, config: &Config) -> Router {
    Routes::new()
        .route("/", get(ui::index).head(handlers::get_only))
        .route("/ui/wizard", post(ui::wizard_post))
        .route("/ui/schematics/{id}", get(ui::result))
        .route(
            "/ui/extensions-list",
            get(ui::extensions_list).post(ui::extensions_list),
        )
        .route(
            "/ui/version-doc",
            get(ui::version_doc).head(handlers::get_only),
        )
        .route("/ui/static/style.css", get(ui::style))
        .route("/ui/static/wizard.js", get(ui::script))
        .route("/schematics", post(handlers::create_schematic))
        .route(
            "/schematics/{id}",
            get(handlers::get_schematic).head(handlers::get_only),
        )
        .route("/healthz", get(handlers::health))
        .route("/readyz", get(handlers::health))
        .route("/status", get(handlers::status))
        .route("/versions", get(catalog::versions).head(handlers::get_only))
        .route(
            "/image/{schematic}/{version}/{path}",
            get(image::image).head(image::image),
        )
        .route(
            "/pxe/{schematic}/{version}/{path}",
            get(image::pxe).head(handlers::get_only),
        )
        .route(
            "/pxe/ipxe/{*file}",
            get(ipxe_files::ipxe_file).head(ipxe_files::ipxe_file),
        )
        .route(crate::netboot::BOOT_PATH, get(netboot::boot))
        .route("/v2", any(registry::handle))
        .route("/v2/", any(registry::handle))
        .route("/v2/{*rest}", any(registry::handle))
        .route(
            "/oci/cosign/signing-key.pub",
            get(image::signing_key).head(handlers::get_only),
        )
        .route(
            "/secureboot/signing-cert.pem",
            get(image::secureboot_cert).head(handlers::get_only),
        )
        .route(
            "/version/{version}/extensions/official",
            get(catalog::extensions).head(handlers::get_only),
        )
        .route(
            "/talosctl/{version}",
            get(talosctl::list).head(handlers::get_only),
        )
        .route(
            "/talosctl/{version}/{file}",
            get(talosctl::download).head(talosctl::download),
        )
        .route(
            "/version/{version}/overlays/official",
            get(catalog::overlays).head(handlers::get_only),
        )
        .finish()
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(cors(config))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::decorate,
        ))
        .with_state(state)
}

/// The admin router (`/admin/...`, bearer token), served only on the admin listener.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/admin/ui", get(ui::admin::page))
        .route("/ui/static/style.css", get(ui::style))
        .route("/ui/static/wizard.js", get(ui::script))
        .route("/admin/import", post(admin::import))
        .route("/admin/gc", post(admin::gc))
        .route("/admin/status", get(admin::status))
        .route("/admin/machines", get(admin::machines))
        .route(
            "/admin/machines/{name}",
            get(admin::machine)
                .put(admin::set_machine)
                .delete(admin::remove_machine),
        )
        .route("/admin/netboot/boots", get(admin::boots))
        .route("/admin/netboot/reload", post(admin::reload_machines))
        .route("/admin/cluster/invite", post(cluster::invite))
        .route("/admin/cluster/remove", post(cluster::remove))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::decorate,
        ))
        .with_state(state)
}

/// The metrics router (`GET /metrics`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}
