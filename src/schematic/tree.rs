//! The YAML node tree of a schematic document: the first document of the input, with aliases
//! resolved to shared nodes, scalar styles, explicit tags and source lines kept for decoding.
//!
//! Every node also knows what decoding it costs once its aliases are expanded
//! ([`Expansion`]), so the decoder can budget alias expansion before it copies anything.

use std::collections::HashMap;
use std::ops::Deref;
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use super::SchematicError;

/// Upper bound on collection nesting, alias expansion included.
const MAX_DEPTH: usize = 512;

/// One occurrence of a node in the tree: the node itself where it is written, or an alias
/// (`*name`) of an anchored node, which shares the anchored node's content.
#[derive(Clone)]
pub(super) struct YNode {
    /// Whether this occurrence is an alias.
    pub(super) alias: bool,
    body: Rc<YBody>,
}

/// A parsed YAML node with its 1-based source line and optional explicit tag.
pub(super) struct YBody {
    pub(super) line: usize,
    pub(super) tag: Option<String>,
    pub(super) kind: YKind,
    /// What decoding this node costs with every alias inside it expanded.
    pub(super) expansion: Expansion,
}

pub(super) enum YKind {
    Scalar(String, ScalarStyle),
    Seq(Vec<YNode>),
    Map(Vec<(YNode, YNode)>),
}

/// The size of a node with its aliases expanded (saturating; a few aliases nested in each
/// other can describe more nodes than memory holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Expansion {
    /// Nodes: scalars, collections, mapping keys and values.
    pub(super) nodes: u64,
    /// Bytes of scalar text and tags.
    pub(super) bytes: u64,
    /// Collection nesting levels (0 for a scalar).
    pub(super) depth: usize,
}

impl Expansion {
    fn scalar(text: &str, tag: &Option<String>) -> Expansion {
        Expansion {
            nodes: 1,
            bytes: (text.len() + tag.as_ref().map_or(0, String::len)) as u64,
            depth: 0,
        }
    }

    /// Adds a child of a collection.
    fn add_child(&mut self, child: Expansion) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.depth = self.depth.max(child.depth + 1);
    }
}

impl Deref for YNode {
    type Target = YBody;

    fn deref(&self) -> &YBody {
        &self.body
    }
}

impl YNode {
    fn new(body: YBody) -> YNode {
        YNode {
            alias: false,
            body: Rc::new(body),
        }
    }

    /// An alias of `self`.
    fn aliased(&self) -> YNode {
        YNode {
            alias: true,
            body: self.body.clone(),
        }
    }

    /// Identifies the node's content: equal for a node and its aliases.
    pub(super) fn content_id(&self) -> *const YBody {
        Rc::as_ptr(&self.body)
    }
}

pub(super) fn err(msg: impl Into<String>) -> SchematicError {
    SchematicError(msg.into())
}

fn short_tag(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// An open collection.
struct Frame {
    line: usize,
    tag: Option<String>,
    anchor: usize,
    expansion: Expansion,
    items: Items,
}

enum Items {
    Seq(Vec<YNode>),
    Map {
        entries: Vec<(YNode, YNode)>,
        key: Option<YNode>,
    },
}

impl Frame {
    fn new(line: usize, tag: Option<String>, anchor: usize, items: Items) -> Frame {
        let expansion = Expansion {
            nodes: 1,
            bytes: tag.as_ref().map_or(0, String::len) as u64,
            depth: 1,
        };
        Frame {
            line,
            tag,
            anchor,
            expansion,
            items,
        }
    }
}

/// Opens a collection, refusing nesting deeper than [`MAX_DEPTH`].
fn open(stack: &mut Vec<Frame>, frame: Frame) -> Result<(), SchematicError> {
    if stack.len() >= MAX_DEPTH {
        return Err(err(format!(
            "yaml: line {}: exceeded max depth of {MAX_DEPTH}",
            frame.line
        )));
    }
    stack.push(frame);
    Ok(())
}

/// Parses the first YAML document of `text` into a node tree (`None` when there is none).
pub(super) fn load(text: &str) -> Result<Option<YNode>, SchematicError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, YNode> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut in_document = false;
    loop {
        let Some(next) = parser.next_event() else {
            return Ok(None);
        };
        let (event, span) =
            next.map_err(|e| err(format!("yaml: line {}: {}", e.marker().line(), e.info())))?;
        let line = span.start.line();
        let node = match event {
            Event::StreamStart | Event::Nothing => continue,
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(_) => {
                in_document = true;
                continue;
            }
            Event::DocumentEnd => continue,
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .map(YNode::aliased)
                    .ok_or_else(|| err(format!("yaml: line {line}: unknown anchor referenced")))?;
                // The expansion must not nest deeper than a document may be written.
                if stack.len() + node.expansion.depth > MAX_DEPTH {
                    return Err(err(format!(
                        "yaml: line {line}: exceeded max depth of {MAX_DEPTH}"
                    )));
                }
                node
            }
            Event::Scalar(value, style, anchor, tag) => {
                let tag = tag.map(|t| short_tag(&t));
                let node = YNode::new(YBody {
                    line,
                    expansion: Expansion::scalar(&value, &tag),
                    tag,
                    kind: YKind::Scalar(value.into_owned(), style),
                });
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = tag.map(|t| short_tag(&t));
                open(
                    &mut stack,
                    Frame::new(line, tag, anchor, Items::Seq(Vec::new())),
                )?;
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                let tag = tag.map(|t| short_tag(&t));
                let items = Items::Map {
                    entries: Vec::new(),
                    key: None,
                };
                open(&mut stack, Frame::new(line, tag, anchor, items))?;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else {
                    return Err(err("yaml: unbalanced collection end"));
                };
                let kind = match frame.items {
                    Items::Seq(items) => YKind::Seq(items),
                    Items::Map { entries, .. } => YKind::Map(entries),
                };
                let node = YNode::new(YBody {
                    line: frame.line,
                    tag: frame.tag,
                    kind,
                    expansion: frame.expansion,
                });
                if frame.anchor > 0 {
                    anchors.insert(frame.anchor, node.clone());
                }
                node
            }
        };
        if !in_document {
            return Err(err("yaml: content outside of a document"));
        }
        let Some(parent) = stack.last_mut() else {
            return Ok(Some(node));
        };
        parent.expansion.add_child(node.expansion);
        match &mut parent.items {
            Items::Seq(items) => items.push(node),
            Items::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}
