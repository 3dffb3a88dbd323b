//! Parsing `/v2/<name>/<resource>/<reference>` and routing a repository name (and containerd's
//! `?ns=<upstream host>`) to what serves it.

use super::error::RegistryError;

/// The empty ("vanilla") schematic: what `ghcr.io/siderolabs/installer` is built from.
pub const VANILLA_SCHEMATIC: &str =
    "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// The upstream factory's host; a mirror for it serves our schematic images.
pub const FACTORY_HOST: &str = "factory.talos.dev";

/// The upstream host of Talos' own images.
pub const GHCR_HOST: &str = "ghcr.io";

/// What a `/v2/...` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `/v2/`: the API version check.
    Ping,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(String, String),
    /// `/v2/<name>/tags/list`.
    Tags(String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(String, String),
}

impl Request {
    /// Parses the path below `/v2`.
    pub fn parse(rest: &str) -> Result<Request, RegistryError> {
        let rest = rest.trim_matches('/');
        if rest.is_empty() {
            return Ok(Request::Ping);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.len() < 3 || segs.iter().any(|s| s.is_empty()) {
            return Err(RegistryError::UnknownPath);
        }
        let n = segs.len();
        let (reference, resource) = (segs[n - 1].to_string(), segs[n - 2]);
        let name = segs[..n - 2].join("/");
        match resource {
            "manifests" => Ok(Request::Manifest(name, reference)),
            "blobs" => Ok(Request::Blob(name, reference)),
            "referrers" => Ok(Request::Referrers(name, reference)),
            "tags" if reference == "list" => Ok(Request::Tags(name)),
            _ => Err(RegistryError::UnknownPath),
        }
    }
}

/// An installer image name (`installer`, `installer-secureboot`, `<platform>-installer`,
/// `<platform>-installer-secureboot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavour {
    /// `None` for the legacy `installer` names (metal).
    pub platform: Option<String>,
    /// Secure Boot installer.
    pub secureboot: bool,
}

impl Flavour {
    /// Parses an image name; `None` when it names no installer.
    pub fn parse(image: &str) -> Option<Flavour> {
        let (base, secureboot) = match image.strip_suffix("-secureboot") {
            Some(b) => (b, true),
            None => (image, false),
        };
        if base == "installer" {
            return Some(Flavour {
                platform: None,
                secureboot,
            });
        }
        let platform = base.strip_suffix("-installer")?;
        let valid = !platform.is_empty()
            && platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| Flavour {
            platform: Some(platform.to_string()),
            secureboot,
        })
    }

    /// The asset path of this installer for `arch` (`<platform>-installer-<arch>[-secureboot].tar`).
    pub fn asset_path(&self, arch: &str) -> String {
        let sb = if self.secureboot { "-secureboot" } else { "" };
        match &self.platform {
            None => format!("installer-{arch}{sb}.tar"),
            Some(p) => format!("{p}-installer-{arch}{sb}.tar"),
        }
    }
}

/// What serves a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Our installer images of `schematic`; `repo` is the repository key (`<image>/<schematic>`).
    Installer {
        /// Repository key.
        repo: String,
        /// The flavour.
        flavour: Flavour,
        /// Schematic ID.
        schematic: String,
    },
    /// An imported source image, by its repository below the host (`siderolabs/imager`).
    Source {
        /// Repository path.
        repository: String,
    },
}

/// Routes `name` as asked of this registry directly (`ns` absent) or as a mirror of the
/// upstream registry `ns`.
pub fn route(name: &str, ns: Option<&str>) -> Result<Target, RegistryError> {
    let unknown = || RegistryError::NameUnknown(name.to_string());
    let source = || Target::Source {
        repository: name.to_string(),
    };
    match ns {
        Some(GHCR_HOST) => {
            if name == "siderolabs/installer" {
                return Ok(Target::Installer {
                    repo: format!("installer/{VANILLA_SCHEMATIC}"),
                    flavour: Flavour {
                        platform: None,
                        secureboot: false,
                    },
                    schematic: VANILLA_SCHEMATIC.to_string(),
                });
            }
            if name.starts_with("siderolabs/") {
                return Ok(source());
            }
            Err(unknown())
        }
        None | Some(FACTORY_HOST) => {
            if name.starts_with("siderolabs/") && ns.is_none() {
                return Ok(source());
            }
            let Some((image, schematic)) = name.split_once('/') else {
                return Err(unknown());
            };
            if schematic.contains('/') || !crate::schematic::is_valid_id(schematic) {
                return Err(unknown());
            }
            let flavour = Flavour::parse(image).ok_or_else(unknown)?;
            Ok(Target::Installer {
                repo: name.to_string(),
                flavour,
                schematic: schematic.to_string(),
            })
        }
        Some(_) => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_name_resource_and_reference() {
        assert_eq!(Request::parse("").unwrap(), Request::Ping);
        assert_eq!(Request::parse("/").unwrap(), Request::Ping);
        assert_eq!(
            Request::parse("metal-installer/abc/manifests/v1.11.0").unwrap(),
            Request::Manifest("metal-installer/abc".into(), "v1.11.0".into())
        );
        assert_eq!(
            Request::parse("siderolabs/extensions/tags/list").unwrap(),
            Request::Tags("siderolabs/extensions".into())
        );
        assert_eq!(
            Request::parse("a/b/blobs/sha256:00").unwrap(),
            Request::Blob("a/b".into(), "sha256:00".into())
        );
        for bad in [
            "a/manifests",
            "a//manifests/x",
            "a/b/uploads/x",
            "a/b/tags/x",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn installer_names_map_to_asset_paths() {
        let f = |n: &str| Flavour::parse(n).map(|f| f.asset_path("amd64"));
        assert_eq!(f("installer").as_deref(), Some("installer-amd64.tar"));
        assert_eq!(
            f("installer-secureboot").as_deref(),
            Some("installer-amd64-secureboot.tar")
        );
        assert_eq!(
            f("metal-installer").as_deref(),
            Some("metal-installer-amd64.tar")
        );
        assert_eq!(
            f("digital-ocean-installer-secureboot").as_deref(),
            Some("digital-ocean-installer-amd64-secureboot.tar")
        );
        assert_eq!(f("imager"), None);
        assert_eq!(f("-installer"), None);
        assert_eq!(f("../installer"), None);
    }

    #[test]
    fn mirror_namespaces_route_or_answer_unknown() {
        let id = VANILLA_SCHEMATIC;
        let name = format!("metal-installer/{id}");
        assert!(matches!(
            route(&name, Some(FACTORY_HOST)),
            Ok(Target::Installer { .. })
        ));
        assert!(matches!(route(&name, None), Ok(Target::Installer { .. })));
        match route("siderolabs/installer", Some(GHCR_HOST)).unwrap() {
            Target::Installer { schematic, .. } => assert_eq!(schematic, id),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route("siderolabs/imager", Some(GHCR_HOST)).unwrap(),
            Target::Source {
                repository: "siderolabs/imager".into()
            }
        );
        for (n, ns) in [
            ("library/alpine", Some("docker.io")),
            ("someone/else", Some(GHCR_HOST)),
            (name.as_str(), Some("quay.io")),
            ("metal-installer/not-an-id", None),
            ("siderolabs/imager", Some(FACTORY_HOST)),
        ] {
            assert!(
                matches!(route(n, ns), Err(RegistryError::NameUnknown(_))),
                "{n} {ns:?}"
            );
        }
    }
}
