//! Keys of upstream image-factory's configuration that this appliance does not have under the
//! same name: each is mapped to ours, accepted with one warning that says why it does not apply,
//! or refused where ignoring its value would change what the operator asked for.

use serde_json::Value;

use super::ConfigError;

/// What happens to an upstream key (and every key below it).
#[derive(Debug, Clone, Copy)]
enum Treatment {
    /// Accepted and ignored, for this reason.
    Ignored(&'static str),
    /// Accepted while its value is one of `allowed` (compared as text, case-insensitively;
    /// empty is always allowed); any other value is refused for `reason`.
    Only {
        allowed: &'static [&'static str],
        reason: &'static str,
    },
    /// Appended to this list key of ours (path segments).
    AppendTo(&'static [&'static str]),
    /// This field of the one keyless identity upstream has: the fields met replace
    /// `trust.identities` with one entry (the others from upstream's defaults).
    Identity(&'static str),
}

use Treatment::{AppendTo, Identity, Ignored, Only};

const TAGS_REREAD: &str = "the registry's tag list (artifacts.core.registry) is read again every \
    15 minutes, and a release is imported once, when first asked for";

/// Why a component's repository must be upstream's.
const COMPONENT: &str = "images are imported under upstream's repository names \
    (siderolabs/...); put a different registry or mirror project in artifacts.core.*";
const STORES_ITSELF: &str = "this appliance stores and serves built assets itself \
    (storage.dataDir)";

/// Fields of upstream's repository options (`{registry, namespace, repository, insecure}`),
/// written `<key>.*` in [`KEYS`].
const REPOSITORY_FIELDS: &[&str] = &["registry", "namespace", "repository", "insecure"];

/// Every upstream key this appliance does not have under the same name (lower case, from
/// upstream's configuration reference), with what happens to it.
const KEYS: &[(&[&str], Treatment)] = &[
    (
        &[
            "artifacts.talosversionrecheckinterval",
            "artifacts.refreshinterval",
        ],
        Ignored(TAGS_REREAD),
    ),
    (
        &["artifacts.core.components.installerbase"],
        Only {
            allowed: &["siderolabs/installer-base"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.core.components.installer"],
        Only {
            allowed: &["siderolabs/installer"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.core.components.imager"],
        Only {
            allowed: &["siderolabs/imager"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.core.components.extensionmanifest"],
        Only {
            allowed: &["siderolabs/extensions"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.core.components.overlaymanifest"],
        Only {
            allowed: &["siderolabs/overlays"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.core.components.talosctl"],
        Only {
            allowed: &["siderolabs/talosctl-all"],
            reason: COMPONENT,
        },
    ),
    (
        &["artifacts.schematic.*"],
        Ignored("schematics are stored in the data directory (storage.dataDir)"),
    ),
    (
        &[
            "artifacts.installer.internal.*",
            "artifacts.installer.external.*",
        ],
        Ignored("installer images are served by this appliance's own registry (/v2/)"),
    ),
    (
        &[
            "cache.oci.*",
            "cache.s3.enabled",
            "cache.s3.bucket",
            "cache.s3.endpoint",
            "cache.s3.region",
            "cache.s3.insecure",
            "cache.s3.presignedurlttl",
            "cache.cdn.enabled",
            "cache.cdn.host",
            "cache.cdn.trimprefix",
        ],
        Ignored(STORES_ITSELF),
    ),
    (
        &[
            "cache.gsa.serviceaccountemail",
            "cache.gsa.keyfile",
            "cache.gsa.fulciourl",
            "cache.gsa.rekorurl",
            "cache.gsa.tsaurl",
        ],
        Ignored(
            "keyless signing needs Fulcio and Rekor online; assets are signed with \
             cache.signingKeyPath (or the generated key)",
        ),
    ),
    (
        &["cache.schematic.capacity", "cache.schematic.negativettl"],
        Ignored("schematics are read from the embedded store; there is no cache to size"),
    ),
    (
        &["containersignature.publickeyfile"],
        AppendTo(&["trust", "publicKeys"]),
    ),
    (
        &["containersignature.disabled"],
        Only {
            allowed: &["false"],
            reason: "verification is never switched off for every import; skip it for one \
                     import with --insecure-skip-signature-verification",
        },
    ),
    (
        &["containersignature.publickeyhashalgo"],
        Only {
            allowed: &["sha256"],
            reason: "cosign signatures are verified over SHA-256 digests",
        },
    ),
    (
        &["containersignature.subjectregexp"],
        Identity("subjectRegExp"),
    ),
    (&["containersignature.issuer"], Identity("issuer")),
    (
        &["containersignature.issuerregexp"],
        Identity("issuerRegExp"),
    ),
    (
        &[
            "secureboot.azurekeyvault.url",
            "secureboot.azurekeyvault.certificatename",
            "secureboot.azurekeyvault.keyname",
            "secureboot.awskms.keyid",
            "secureboot.awskms.pcrkeyid",
            "secureboot.awskms.certpath",
            "secureboot.awskms.certarn",
            "secureboot.awskms.region",
        ],
        Ignored(
            "cloud key services are out of reach of an air-gapped appliance; give the keys as \
             secureBoot.file.* (image-factory keys secureboot generate makes them)",
        ),
    ),
    (
        &["registry.jobs", "registry.debug"],
        Ignored("tuning of upstream's registry client; imports here have their own bounds"),
    ),
    (
        &["authentication.enabled"],
        Only {
            allowed: &["false"],
            reason: "this appliance has no user authentication (an upstream Enterprise \
                     feature); its admin API has its own listener and token (admin.*)",
        },
    ),
    (
        &[
            "authentication.provider",
            "authentication.htpasswdpath",
            "authentication.downloadtokenkeypath",
            "authentication.downloadtokenttl",
            "authentication.auth0.domain",
            "authentication.auth0.audience",
            "authentication.auth0.clientid",
            "authentication.auth0.clientsecret",
            "authentication.auth0.machinescope",
            "authentication.auth0.sessionkey",
            "authentication.auth0.maxnodeappsperorg",
        ],
        Ignored("user authentication is an upstream Enterprise feature"),
    ),
    (
        &[
            "enterprise.extraextensions.manifest.*",
            "enterprise.scanner.databaseurl",
            "enterprise.scanner.cache.ttl",
            "enterprise.scanner.cache.capacity",
            "enterprise.spdx.cache.*",
            "enterprise.vex.data.*",
            "enterprise.vex.cache.ttl",
            "enterprise.vex.cache.capacity",
        ],
        Ignored(
            "upstream Enterprise features (scanner, SPDX, VEX, extra extensions) are not part \
             of this appliance",
        ),
    ),
    (
        &[
            "audit.mode",
            "audit.file.path",
            "audit.file.maxage",
            "audit.file.maxsizemb",
            "audit.file.maxbackups",
        ],
        Ignored("audit logs of authenticated requests belong to upstream's authentication"),
    ),
];

/// Whether the lower-case `key` is `pattern` (`<object>.*` matches its repository fields).
fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(object) => key
            .strip_prefix(object)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|field| REPOSITORY_FIELDS.contains(&field)),
        None => pattern == key,
    }
}

fn treatment(key: &str) -> Option<Treatment> {
    let lower = key.to_ascii_lowercase();
    KEYS.iter()
        .find(|(keys, _)| keys.iter().any(|p| matches(p, &lower)))
        .map(|(_, t)| *t)
}

/// Whether upstream has keys below `key` (e.g. `artifacts`, `cache.s3`).
fn is_parent(key: &str) -> bool {
    let parent = format!("{}.", key.to_ascii_lowercase());
    KEYS.iter().flat_map(|(keys, _)| keys.iter()).any(|p| {
        p.starts_with(&parent) || p.strip_suffix(".*") == Some(&parent[..parent.len() - 1])
    })
}

/// Upstream keys met while loading: the warnings to log and the values to copy into ours.
#[derive(Debug, Default)]
pub(super) struct Upstream {
    /// `(key, source, reason)` of each ignored key, once per key.
    pub ignored: Vec<(String, String, &'static str)>,
    /// Values appended to list keys of ours.
    appends: Vec<(&'static [&'static str], Value)>,
    /// Fields of upstream's `containerSignature` identity met (field, value).
    identity: Vec<(&'static str, String)>,
}

impl Upstream {
    /// Takes `value` of the key `key` our configuration does not have; `Ok(Some(k))` names the
    /// first key (`key` or one below it) that upstream has not either.
    pub fn take(
        &mut self,
        key: &str,
        value: Value,
        source: &str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(t) = treatment(key) else {
            // A parent of upstream keys (`artifacts`): every key below it must be one of them.
            return match value {
                Value::Object(map) if is_parent(key) => self.take_all(key, map, source),
                _ => Ok(Some(key.to_string())),
            };
        };
        match (t, value) {
            (_, Value::Null) => {}
            (Ignored(reason), _) => {
                if !self.ignored.iter().any(|(k, _, _)| k == key) {
                    self.ignored
                        .push((key.to_string(), source.to_string(), reason));
                }
            }
            (Only { allowed, reason }, v) => {
                let text = match &v {
                    Value::String(s) => s.trim().to_string(),
                    other => other.to_string(),
                };
                if !text.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&text)) {
                    return Err(ConfigError::Invalid {
                        key: format!("{key} (from {source})"),
                        message: format!("{v} is not supported: {reason}"),
                    });
                }
            }
            (Identity(field), v) => match v {
                Value::String(s) if s.trim().is_empty() => {}
                Value::String(s) => {
                    self.identity.retain(|(f, _)| *f != field);
                    self.identity.push((field, s));
                }
                other => {
                    return Err(ConfigError::Invalid {
                        key: format!("{key} (from {source})"),
                        message: format!("{other} is not a string"),
                    });
                }
            },
            (AppendTo(path), v) => match v {
                Value::String(s) if s.trim().is_empty() => {}
                Value::String(_) => self.appends.push((path, v)),
                other => {
                    return Err(ConfigError::Invalid {
                        key: format!("{key} (from {source})"),
                        message: format!("{other} is not a file path"),
                    });
                }
            },
        }
        Ok(None)
    }

    fn take_all(
        &mut self,
        key: &str,
        map: serde_json::Map<String, Value>,
        source: &str,
    ) -> Result<Option<String>, ConfigError> {
        for (k, v) in map {
            if let Some(unknown) = self.take(&format!("{key}.{k}"), v, source)? {
                return Ok(Some(unknown));
            }
        }
        Ok(None)
    }

    /// Copies the mapped values into `tree` (shaped like our defaults).
    pub fn apply(&mut self, tree: &mut Value) {
        if !self.identity.is_empty() {
            let field = |name: &str| {
                self.identity
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, v)| v.clone())
            };
            let (issuer, issuer_re) = match (field("issuer"), field("issuerRegExp")) {
                (None, None) => (Some(super::SIDERO_ISSUER.to_string()), None),
                other => other,
            };
            let entry = serde_json::json!({
                "issuer": issuer.unwrap_or_default(),
                "issuerRegExp": issuer_re.unwrap_or_default(),
                "subjectRegExp": field("subjectRegExp")
                    .unwrap_or_else(|| super::SIDERO_SUBJECT_REGEXP.to_string()),
            });
            if let Some(ids) = tree.pointer_mut("/trust/identities") {
                *ids = Value::Array(vec![entry]);
            }
            self.identity.clear();
        }
        for (path, v) in self.appends.drain(..) {
            let pointer: String = path.iter().map(|seg| format!("/{seg}")).collect();
            if let Some(Value::Array(items)) = tree.pointer_mut(&pointer)
                && !items.contains(&v)
            {
                items.push(v);
            }
        }
    }

    /// Logs one warning per ignored key.
    pub fn warn(&self) {
        for (key, source, reason) in &self.ignored {
            tracing::warn!(
                key = %key,
                from = %source,
                "upstream image-factory key {key} does not apply to this appliance and is ignored: {reason}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_and_repository_objects_by_their_fields() {
        assert!(matches!(
            treatment("containerSignature.publicKeyFile"),
            Some(AppendTo(_))
        ));
        assert!(matches!(
            treatment("containerSignature.subjectRegExp"),
            Some(Identity("subjectRegExp"))
        ));
        assert!(matches!(treatment("cache.s3.bucket"), Some(Ignored(_))));
        assert!(matches!(treatment("cache.oci.namespace"), Some(Ignored(_))));
        assert!(treatment("cache.s3.bukcet").is_none());
        assert!(treatment("cache.oci.other").is_none());
        assert!(treatment("cache.s3").is_none());
        assert!(treatment("registryx.jobs").is_none());
        assert!(is_parent("cache.s3") && is_parent("cache.oci") && is_parent("artifacts"));
        assert!(!is_parent("cache.s3.bucket") && !is_parent("http"));
    }

    #[test]
    fn refused_values_name_the_key_and_the_reason() {
        let mut u = Upstream::default();
        let ok = u.take("authentication.enabled", Value::Bool(false), "f");
        assert!(ok.unwrap().is_none());
        let e = u
            .take("authentication.enabled", Value::String("TRUE".into()), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("authentication.enabled") && e.contains("no user authentication"),
            "{e}"
        );
    }

    #[test]
    fn parents_of_upstream_keys_still_refuse_unknown_children() {
        let mut u = Upstream::default();
        let tree = serde_json::json!({"scanner": {"databaseURL": "u"}, "nope": 1});
        let unknown = u.take("enterprise", tree, "f").unwrap();
        assert_eq!(unknown.as_deref(), Some("enterprise.nope"));
        let unknown = u.take("nope", serde_json::json!({"a": 1}), "f").unwrap();
        assert_eq!(unknown.as_deref(), Some("nope"));
        // Ignored keys are reported once each.
        let tree = serde_json::json!({"scanner": {"databaseURL": "u", "cache": {"ttl": "15m0s"}}});
        assert!(u.take("enterprise", tree.clone(), "f").unwrap().is_none());
        assert!(u.take("enterprise", tree, "g").unwrap().is_none());
        let keys: Vec<&str> = u.ignored.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "enterprise.scanner.cache.ttl",
                "enterprise.scanner.databaseURL"
            ]
        );
        // Component repositories must be upstream's.
        let e = u
            .take(
                "artifacts.core.components.imager",
                Value::String("acme/imager".into()),
                "f",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream's repository names"), "{e}");
    }
}
