//! Layered loading: defaults, then the YAML file, then `IF_*` environment variables, then flags.
//!
//! Every layer is merged into a JSON tree shaped like the serialised defaults, so an unknown key
//! is detected (with its full dotted path) before deserialisation.

use std::path::Path;

use serde_json::{Map, Value};

use super::upstream::Upstream;
use super::{Config, ConfigError};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "IF_";

/// `IF_` variables that are not configuration keys, ignored here so that setting them never
/// breaks a command: the registry password of `--registry-user`, the Debian input directory of
/// `image-factory dev synth-release`, the test suite's switch that turns a missing test tool
/// into a failure, where the test suite keeps its browser driver, and the replication tests'
/// settings (`crate::replication::BUILD_DELAY_ENV`, `crate::replication::IGNORE_HELLOS_ENV`,
/// `crate::replication::BLOB_ANSWER_DELAY_ENV`).
pub const NOT_CONFIG_ENV: &[&str] = &[
    REGISTRY_PASSWORD_ENV,
    "IF_TESTKIT_DIR",
    "IF_REQUIRE_TOOLS",
    "IF_PLAYWRIGHT_DIR",
    "IF_TEST_BUILD_DELAY_MS",
    "IF_TEST_IGNORE_HELLOS",
    "IF_TEST_BLOB_ANSWER_DELAY_MS",
    "IF_TEST_WELCOME_STRANGERS",
    "IF_TEST_ANSWER_DELAY_MS",
    "IF_TEST_PLACEMENT_SETTLE_MS",
];

/// The password of `--registry-user` (not a configuration key: never written to a file).
pub const REGISTRY_PASSWORD_ENV: &str = "IF_REGISTRY_PASSWORD";

/// Values given as command-line flags (highest precedence); `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--data-dir` → `storage.dataDir`.
    pub data_dir: Option<String>,
    /// `--http-listen-addr` → `http.httpListenAddr`.
    pub http_listen_addr: Option<String>,
    /// `--metrics-addr` → `metrics.addr` (empty disables).
    pub metrics_addr: Option<String>,
}

/// Loads the configuration from an optional file, environment pairs and flags (not validated).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<Config, ConfigError> {
    let defaults =
        serde_json::to_value(Config::default()).map_err(|source| ConfigError::Decode {
            key: "<defaults>",
            source,
        })?;
    let mut tree = defaults.clone();
    let mut upstream = Upstream::default();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?
        };
        let parsed = match parsed {
            Value::Null => Value::Object(Map::new()),
            v => v,
        };
        let source_name = path.display().to_string();
        merge(
            &mut tree,
            &defaults,
            parsed,
            "",
            &source_name,
            &mut upstream,
        )?;
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_CONFIG_ENV.contains(&k.as_str()))
        .collect();
    env.sort();
    for (name, value) in env {
        apply_env(&mut tree, &defaults, &name, &value, &mut upstream)?;
    }
    upstream.apply(&mut tree);
    upstream.warn();

    if let Some(v) = &flags.data_dir {
        set(&mut tree, &["storage", "dataDir"], Value::String(v.clone()));
    }
    if let Some(v) = &flags.http_listen_addr {
        set(
            &mut tree,
            &["http", "httpListenAddr"],
            Value::String(v.clone()),
        );
    }
    if let Some(v) = &flags.metrics_addr {
        set(&mut tree, &["metrics", "addr"], Value::String(v.clone()));
    }

    serde_json::from_value(tree).map_err(|source| ConfigError::Decode {
        key: "<config>",
        source,
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Deep-merges `src` into `dst`, checking every key against the shape of `shape`; keys only
/// upstream image-factory has go to `upstream`.
fn merge(
    dst: &mut Value,
    shape: &Value,
    src: Value,
    prefix: &str,
    source_name: &str,
    upstream: &mut Upstream,
) -> Result<(), ConfigError> {
    match (shape, src) {
        (Value::Object(shape_map), Value::Object(src_map)) => {
            for (k, v) in src_map {
                let key = join(prefix, &k);
                let Some(sub_shape) = shape_map.get(&k) else {
                    match upstream.take(&key, v, source_name)? {
                        None => continue,
                        Some(key) => {
                            return Err(ConfigError::UnknownKey {
                                key,
                                source_name: source_name.to_string(),
                            });
                        }
                    }
                };
                let Some(sub_dst) = dst.as_object_mut().and_then(|m| m.get_mut(&k)) else {
                    return Err(ConfigError::UnknownKey {
                        key,
                        source_name: source_name.to_string(),
                    });
                };
                if v.is_null() {
                    // `key:` with no value keeps the default.
                    continue;
                }
                merge(sub_dst, sub_shape, v, &key, source_name, upstream)?;
            }
            Ok(())
        }
        (Value::Object(_), other) => Err(ConfigError::Invalid {
            key: if prefix.is_empty() {
                "<root>".into()
            } else {
                prefix.into()
            },
            message: format!("expected a mapping, got {other}"),
        }),
        (_, v) => {
            *dst = coerce(shape, v, prefix)?;
            Ok(())
        }
    }
}

/// Checks a leaf value against the type of its default, converting where unambiguous.
fn coerce(shape: &Value, v: Value, key: &str) -> Result<Value, ConfigError> {
    let bad = |what: &str, v: &Value| ConfigError::Invalid {
        key: key.to_string(),
        message: format!("{v} is not {what}"),
    };
    match shape {
        Value::String(_) => match v {
            Value::String(_) => Ok(v),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(bad("a string", &other)),
        },
        Value::Number(_) => match &v {
            Value::Number(n) if n.is_u64() => Ok(v),
            Value::String(s) => s
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| bad("a non-negative integer", &v)),
            _ => Err(bad("a non-negative integer", &v)),
        },
        Value::Bool(_) => match &v {
            Value::Bool(_) => Ok(v),
            Value::String(s) => s
                .trim()
                .parse::<bool>()
                .map(Value::Bool)
                .map_err(|_| bad("a boolean", &v)),
            _ => Err(bad("a boolean", &v)),
        },
        // A list of objects (trust.identities): serde checks the fields.
        Value::Array(shape_items) if shape_items.first().is_some_and(Value::is_object) => match v {
            Value::Array(_) => Ok(v),
            other => Err(bad("a list of objects", &other)),
        },
        Value::Array(_) => match v {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(_) => Ok(item),
                    Value::Number(n) => Ok(Value::String(n.to_string())),
                    other => Err(bad("a list of strings", &other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::String(s) => Ok(Value::Array(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )),
            other => Err(bad("a list of strings", &other)),
        },
        _ => Ok(v),
    }
}

/// Applies one `IF_A_B=value` variable: segments are matched case-insensitively to keys; keys
/// only upstream image-factory has go to `upstream`.
fn apply_env(
    tree: &mut Value,
    shape: &Value,
    name: &str,
    value: &str,
    upstream: &mut Upstream,
) -> Result<(), ConfigError> {
    let rest = &name[ENV_PREFIX.len()..];
    let source_name = format!("environment variable {name}");
    let dotted = rest.to_ascii_lowercase().replace('_', ".");
    let mut unknown =
        || match upstream.take(&dotted, Value::String(value.to_string()), &source_name) {
            Ok(None) => Ok(()),
            Ok(Some(key)) => Err(ConfigError::UnknownKey {
                key,
                source_name: source_name.clone(),
            }),
            Err(e) => Err(e),
        };
    let mut path: Vec<String> = Vec::new();
    let mut node = shape;
    for seg in rest.split('_') {
        let Value::Object(map) = node else {
            return unknown();
        };
        let Some((k, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)) else {
            return unknown();
        };
        path.push(k.clone());
        node = v;
    }
    if node.is_object() {
        return unknown();
    }
    let dotted = path.join(".");
    let trimmed = value.trim_start();
    let raw = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        serde_json::from_str(value).map_err(|e| ConfigError::Unparsable {
            key: dotted.clone(),
            message: format!("{name}={value:?} is not valid JSON"),
            source: Box::new(e),
        })?
    } else {
        Value::String(value.to_string())
    };
    let coerced = coerce(node, raw, &dotted)?;
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    set(tree, &refs, coerced);
    Ok(())
}

fn set(tree: &mut Value, path: &[&str], v: Value) {
    let mut node = tree;
    for seg in path {
        let Some(next) = node.as_object_mut().and_then(|m| m.get_mut(*seg)) else {
            return;
        };
        node = next;
    }
    *node = v;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn precedence_file_env_flags() {
        let f = file(
            "http:\n  httpListenAddr: \":1\"\n  externalURL: http://file/\nstorage:\n  dataDir: /from-file\n",
        );
        let cfg = load(
            Some(f.path()),
            env(&[
                ("IF_HTTP_EXTERNALURL", "http://env/"),
                ("IF_STORAGE_DATADIR", "/from-env"),
                ("PATH", "/bin"),
            ]),
            &FlagOverrides {
                data_dir: Some("/from-flag".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.http.http_listen_addr, ":1");
        assert_eq!(cfg.http.external_url, "http://env/");
        assert_eq!(cfg.storage.data_dir, "/from-flag");
    }

    #[test]
    fn env_json_lists_numbers_and_case() {
        let cfg = load(
            None,
            env(&[
                ("IF_HTTP_ALLOWEDORIGINS", r#"["http://a", "http://b"]"#),
                ("IF_build_maxconcurrency", "3"),
                (
                    "IF_REPLICATION_BOOTSTRAPPEERS",
                    "/ip4/1.2.3.4/tcp/1, /ip4/1.2.3.5/tcp/1",
                ),
            ]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.http.allowed_origins, vec!["http://a", "http://b"]);
        assert_eq!(cfg.build.max_concurrency, 3);
        assert_eq!(cfg.replication.bootstrap_peers.len(), 2);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let f = file("http:\n  nope: 1\n");
        let e = load(Some(f.path()), env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key http.nope"), "{e}");
        let e = load(
            None,
            env(&[("IF_HTTP_NOPE", "1")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("IF_HTTP_NOPE"), "{e}");
        // The test kit's and the test suite's own variables are not configuration.
        load(
            None,
            env(&[
                ("IF_REQUIRE_TOOLS", "1"),
                ("IF_TESTKIT_DIR", "/kit"),
                ("IF_PLAYWRIGHT_DIR", "/node"),
                ("IF_TEST_BUILD_DELAY_MS", "3000"),
            ]),
            &FlagOverrides::default(),
        )
        .unwrap();
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = load(
            None,
            env(&[("IF_BUILD_MAXCONCURRENCY", "lots")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("build.maxConcurrency") && e.contains("lots"),
            "{e}"
        );
        let f = file("http:\n  allowedOrigins: {a: 1}\n");
        let e = load(Some(f.path()), env(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.allowedOrigins"), "{e}");
    }

    fn upstream(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/upstream-config")
            .join(name)
    }

    #[test]
    fn upstream_default_configurations_load() {
        let cfg = load(
            Some(&upstream("defaults.yaml")),
            env(&[]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.http.external_url, "https://localhost/");
        assert_eq!(cfg.build.max_concurrency, 6);
        assert_eq!(cfg.metrics.addr, ":2122");
        // Upstream's containerSignature defaults are our default identity.
        assert_eq!(
            cfg.trust.identities,
            super::super::TrustConfig::default().identities
        );
        let cfg = load(
            Some(&upstream("helm.yaml")),
            env(&[]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            cfg.cache.signing_key_path,
            "/etc/image-factory/keys/cache-signing.key"
        );
        let text = std::fs::read_to_string(upstream("defaults.env")).unwrap();
        let vars: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(vars.len() > 80, "{} variables", vars.len());
        let cfg = load(None, vars, &FlagOverrides::default()).unwrap();
        assert_eq!(cfg.http.allowed_origins, vec!["*"]);
        assert_eq!(cfg.build.min_talos_version, "1.2.0");
    }

    #[test]
    fn upstream_keys_map_refuse_or_stay_unknown_when_misspelt() {
        let f = file("containerSignature:\n  publicKeyFile: /keys/sidero.pem\n");
        let cfg = load(Some(f.path()), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(cfg.trust.public_keys, vec!["/keys/sidero.pem"]);
        let cfg = load(
            None,
            env(&[("IF_CONTAINERSIGNATURE_PUBLICKEYFILE", "/keys/env.pem")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.trust.public_keys, vec!["/keys/env.pem"]);
        // Upstream's keyless identity becomes the one trust.identities entry.
        let f =
            file("containerSignature:\n  subjectRegExp: '@example\\.org$'\n  issuerRegExp: ''\n");
        let cfg = load(Some(f.path()), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(cfg.trust.identities.len(), 1);
        assert_eq!(cfg.trust.identities[0].subject_reg_exp, "@example\\.org$");
        assert_eq!(cfg.trust.identities[0].issuer, super::super::SIDERO_ISSUER);
        let cfg = load(
            None,
            env(&[("IF_CONTAINERSIGNATURE_ISSUERREGEXP", "^https://dex\\.")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        let id = &cfg.trust.identities[0];
        assert_eq!(
            (id.issuer.as_str(), id.issuer_reg_exp.as_str()),
            ("", "^https://dex\\.")
        );
        assert_eq!(id.subject_reg_exp, super::super::SIDERO_SUBJECT_REGEXP);
        for (yaml, expect) in [
            (
                "cache:\n  s3:\n    bukcet: x\n",
                "unknown key cache.s3.bukcet",
            ),
            ("artifacts:\n  cor: {}\n", "unknown key artifacts.cor"),
            (
                "authentication:\n  enabled: true\n",
                "no user authentication",
            ),
            (
                "containerSignature:\n  disabled: true\n",
                "--insecure-skip-signature-verification",
            ),
            (
                "containerSignature:\n  publicKeyHashAlgo: sha512\n",
                "SHA-256",
            ),
        ] {
            let f = file(yaml);
            let e = load(Some(f.path()), env(&[]), &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{yaml}: {e}");
        }
        let e = load(
            None,
            env(&[("IF_CACHE_S3_BUKCET", "x")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cache.s3.bukcet") && e.contains("IF_CACHE_S3_BUKCET"),
            "{e}"
        );
        let e = load(
            None,
            env(&[("IF_AUTHENTICATION_ENABLED", "true")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("IF_AUTHENTICATION_ENABLED"), "{e}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let f = file("");
        let cfg = load(Some(f.path()), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(cfg, Config::default());
    }
}
