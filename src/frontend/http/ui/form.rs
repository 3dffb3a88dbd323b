//! The wizard's raw parameters: read from a query string or a urlencoded form body, each
//! field bounded, anything out of bounds a `400` naming the field and its limit.

use super::super::error::ApiError;

/// Most parameters one request may carry (repeated `extensions` included).
pub const MAX_PARAMS: usize = 1024;
/// Most extensions one schematic may select in the wizard.
pub const MAX_EXTENSIONS: usize = 256;
/// Longest kernel command line (Linux' `COMMAND_LINE_SIZE` on x86 is 2048; arm64 4096).
pub const MAX_CMDLINE: usize = 4096;
/// Longest overlay-options YAML text.
pub const MAX_OVERLAY_OPTIONS: usize = 64 * 1024;
/// Longest META text (lines `KEY=VALUE`).
pub const MAX_META: usize = 64 * 1024;
/// Longest extension search text.
pub const MAX_SEARCH: usize = 128;
/// Longest short field (target, version, platform, board, arch, bootloader, names).
pub const MAX_SHORT: usize = 128;

/// The wizard's parameters as sent, checked for size only (the catalog checks the rest).
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// `target`: `metal`, `cloud` or `sbc`.
    pub target: Option<String>,
    /// `version`, with or without `v`.
    pub version: Option<String>,
    /// `platform` (cloud).
    pub platform: Option<String>,
    /// `board` (SBC).
    pub board: Option<String>,
    /// `arch`.
    pub arch: Option<String>,
    /// `secureboot`: `true`/`on` or anything else for off.
    pub secureboot: Option<String>,
    /// Repeated `extensions`; `None` until the extensions step is done (`-` = none).
    pub extensions: Option<Vec<String>>,
    /// Repeated `selected-extensions` (the extensions step's checkboxes before `Next`).
    pub selected_extensions: Vec<String>,
    /// `extensions-done`: the extensions step's `Next` was pressed.
    pub extensions_done: bool,
    /// `cmdline`.
    pub cmdline: Option<String>,
    /// `cmdline-set`: the options step was submitted.
    pub cmdline_set: bool,
    /// `bootloader`: `auto`, `dual-boot`, `sd-boot`, `grub`.
    pub bootloader: Option<String>,
    /// `overlay-options` (YAML text).
    pub overlay_options: Option<String>,
    /// `meta` (our addition: lines `KEY=VALUE`).
    pub meta: Option<String>,
    /// `embedded-config` (only from a POSTed form: never in a URL).
    pub embedded_config: Option<String>,
    /// `schematic-id`: pre-fill from this stored schematic.
    pub schematic_id: Option<String>,
    /// `search`: the extension filter.
    pub search: Option<String>,
}

fn too_long(name: &str, limit: usize) -> ApiError {
    ApiError::BadRequest(format!(
        "parameter {name:?} is too long: the limit is {limit} bytes"
    ))
}

fn set_once(
    slot: &mut Option<String>,
    name: &str,
    value: String,
    limit: usize,
) -> Result<(), ApiError> {
    if value.len() > limit {
        return Err(too_long(name, limit));
    }
    if slot.is_some() {
        return Err(ApiError::BadRequest(format!(
            "parameter {name:?} is given more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn push(list: &mut Vec<String>, name: &str, value: String) -> Result<(), ApiError> {
    if value.len() > MAX_SHORT {
        return Err(too_long(name, MAX_SHORT));
    }
    if list.len() >= MAX_EXTENSIONS {
        return Err(ApiError::BadRequest(format!(
            "too many {name:?} parameters: the limit is {MAX_EXTENSIONS}"
        )));
    }
    list.push(value);
    Ok(())
}

impl Params {
    /// Parses urlencoded `input` (a query string or a form body); `embedded_config_limit` is
    /// the longest machine configuration accepted, `None` where it must not appear (a URL).
    pub fn parse(input: &[u8], embedded_config_limit: Option<usize>) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (n, (key, value)) in url::form_urlencoded::parse(input).enumerate() {
            if n >= MAX_PARAMS {
                return Err(ApiError::BadRequest(format!(
                    "too many parameters: the limit is {MAX_PARAMS}"
                )));
            }
            let value = value.into_owned();
            match key.as_ref() {
                "target" => set_once(&mut p.target, "target", value, MAX_SHORT)?,
                "version" => set_once(&mut p.version, "version", value, MAX_SHORT)?,
                "platform" => set_once(&mut p.platform, "platform", value, MAX_SHORT)?,
                "board" => set_once(&mut p.board, "board", value, MAX_SHORT)?,
                "arch" => set_once(&mut p.arch, "arch", value, MAX_SHORT)?,
                "secureboot" => set_once(&mut p.secureboot, "secureboot", value, MAX_SHORT)?,
                "extensions" => push(
                    p.extensions.get_or_insert_with(Vec::new),
                    "extensions",
                    value,
                )?,
                "selected-extensions" => {
                    push(&mut p.selected_extensions, "selected-extensions", value)?
                }
                "extensions-done" => p.extensions_done = true,
                "cmdline" => set_once(&mut p.cmdline, "cmdline", value, MAX_CMDLINE)?,
                "cmdline-set" => p.cmdline_set = true,
                "bootloader" => set_once(&mut p.bootloader, "bootloader", value, MAX_SHORT)?,
                "overlay-options" => set_once(
                    &mut p.overlay_options,
                    "overlay-options",
                    value,
                    MAX_OVERLAY_OPTIONS,
                )?,
                "meta" => set_once(&mut p.meta, "meta", value, MAX_META)?,
                "embedded-config" => match embedded_config_limit {
                    Some(limit) => {
                        set_once(&mut p.embedded_config, "embedded-config", value, limit)?
                    }
                    None => {
                        return Err(ApiError::BadRequest(
                            "parameter \"embedded-config\" is only accepted in a POSTed form \
                             (a machine configuration never goes into a URL)"
                                .into(),
                        ));
                    }
                },
                "schematic-id" => set_once(&mut p.schematic_id, "schematic-id", value, MAX_SHORT)?,
                "search" => set_once(&mut p.search, "search", value, MAX_SEARCH)?,
                // Upstream's back-navigation mirrors, htmx's fields, `lang`: not needed here.
                _ => {}
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_extensions_and_limits() {
        let p = Params::parse(
            b"target=metal&extensions=a&extensions=b&cmdline-set=true",
            None,
        )
        .expect("parses");
        assert_eq!(p.target.as_deref(), Some("metal"));
        assert_eq!(p.extensions, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(p.cmdline_set);
        let long = format!("cmdline={}", "a".repeat(MAX_CMDLINE + 1));
        let e = Params::parse(long.as_bytes(), None).expect_err("too long");
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        let e = Params::parse(b"target=metal&target=cloud", None).expect_err("twice");
        assert!(e.to_string().contains("more than once"), "{e}");
        let e = Params::parse(b"embedded-config=x", None).expect_err("not in a URL");
        assert!(e.to_string().contains("POST"), "{e}");
        assert!(Params::parse(b"embedded-config=xy", Some(1)).is_err());
        assert!(Params::parse(b"embedded-config=x", Some(1)).is_ok());
    }
}
