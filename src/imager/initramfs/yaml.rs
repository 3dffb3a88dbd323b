//! The two fixed go-yaml (v3) documents of this module: an extension `manifest.yaml` and
//! `extensions.yaml` (imager spec §3.6.1, api spec §6.4), written with [`crate::gocompat::yaml`].

use serde::Deserialize;

use crate::gocompat::yaml::{Flavour, Node, document};
/// Extension metadata (Talos `extensions.Metadata`), field order as serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// `name`.
    pub name: String,
    /// `version` (free-form).
    pub version: String,
    /// `author`.
    pub author: String,
    /// `description`.
    pub description: String,
    /// `compatibility`.
    pub compatibility: Compatibility,
    /// `extraInfo` (written only when non-empty).
    #[serde(rename = "extraInfo")]
    pub extra_info: String,
}

/// `compatibility` of [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Compatibility {
    /// `talos`.
    pub talos: Constraint,
}

/// `compatibility.talos` of [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Constraint {
    /// `version`: a blang semver range, possibly empty.
    pub version: String,
}

/// An extension manifest (`manifest.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// `version`: only `v1alpha1` is accepted.
    pub version: String,
    /// `metadata`.
    pub metadata: Metadata,
}

/// The fields of `m` as a go-yaml mapping (`extraInfo` only when non-empty).
fn metadata(m: &Metadata) -> Node<'_> {
    let mut fields = vec![
        ("name", Node::Str(&m.name)),
        ("version", Node::Str(&m.version)),
        ("author", Node::Str(&m.author)),
        ("description", Node::Str(&m.description)),
        (
            "compatibility",
            Node::map(vec![(
                "talos",
                Node::map(vec![("version", Node::Str(&m.compatibility.talos.version))]),
            )]),
        ),
    ];
    if !m.extra_info.is_empty() {
        fields.push(("extraInfo", Node::Str(&m.extra_info)));
    }
    Node::map(fields)
}

/// An extension `manifest.yaml` as go-yaml v3 (indent 4) writes it.
pub fn manifest_yaml(m: &Manifest) -> String {
    document(
        &Node::map(vec![
            ("version", Node::Str(&m.version)),
            ("metadata", metadata(&m.metadata)),
        ]),
        Flavour::V3,
    )
}

/// `extensions.yaml`: `layers` of `(image, metadata)` in processing order.
pub fn extensions_yaml(layers: &[(String, Metadata)]) -> String {
    let items = layers
        .iter()
        .map(|(image, m)| Node::map(vec![("image", Node::Str(image)), ("metadata", metadata(m))]))
        .collect();
    document(&Node::map(vec![("layers", Node::Seq(items))]), Flavour::V3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_yaml_layout() {
        let m = Metadata {
            name: "iscsi-tools".into(),
            version: "v0.2.0".into(),
            author: "Sidero Labs".into(),
            description: "[core] This system extension provides iscsi-tools.\n".into(),
            compatibility: Compatibility {
                talos: Constraint {
                    version: ">= v1.1.0".into(),
                },
            },
            extra_info: String::new(),
        };
        let dep = Metadata {
            name: "modules.dep".into(),
            version: "6.1.0-56-amd64".into(),
            author: "Talos Machinery".into(),
            description: "Combined modules.dep for all extensions".into(),
            ..Metadata::default()
        };
        let y = extensions_yaml(&[("0.sqsh".into(), m), ("modules.dep.sqsh".into(), dep)]);
        assert_eq!(
            y,
            "layers:
    - image: 0.sqsh
      metadata:
        name: iscsi-tools
        version: v0.2.0
        author: Sidero Labs
        description: |
            [core] This system extension provides iscsi-tools.
        compatibility:
            talos:
                version: '>= v1.1.0'
    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: 6.1.0-56-amd64
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: \"\"
"
        );
        let back: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(
            back["layers"][1]["metadata"]["compatibility"]["talos"]["version"],
            ""
        );
    }

    #[test]
    fn manifest_and_empty_layers() {
        let m = Manifest {
            version: "v1alpha1".into(),
            metadata: Metadata {
                name: "schematic".into(),
                version: "v1".into(),
                extra_info: "customization: {}\n".into(),
                ..Metadata::default()
            },
        };
        assert_eq!(
            manifest_yaml(&m),
            "version: v1alpha1
metadata:
    name: schematic
    version: v1
    author: \"\"
    description: \"\"
    compatibility:
        talos:
            version: \"\"
    extraInfo: |
        customization: {}
"
        );
        assert_eq!(extensions_yaml(&[]), "layers: []\n");
    }
}
