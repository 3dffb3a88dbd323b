//! The YAML node tree of a schematic document: the first document of the input, with aliases
//! resolved to shared nodes, scalar styles, explicit tags and source lines kept for decoding.

use std::collections::HashMap;
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use super::SchematicError;

/// Upper bound on collection nesting.
const MAX_DEPTH: usize = 512;

/// A parsed YAML node with its 1-based source line and optional explicit tag.
pub(super) struct YNode {
    pub(super) line: usize,
    pub(super) tag: Option<String>,
    pub(super) kind: YKind,
}

pub(super) enum YKind {
    Scalar(String, ScalarStyle),
    Seq(Vec<Rc<YNode>>),
    Map(Vec<(Rc<YNode>, Rc<YNode>)>),
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

enum Frame {
    Seq {
        line: usize,
        tag: Option<String>,
        anchor: usize,
        items: Vec<Rc<YNode>>,
    },
    Map {
        line: usize,
        tag: Option<String>,
        anchor: usize,
        entries: Vec<(Rc<YNode>, Rc<YNode>)>,
        key: Option<Rc<YNode>>,
    },
}

/// Parses the first YAML document of `text` into a node tree (`None` when there is none).
pub(super) fn load(text: &str) -> Result<Option<Rc<YNode>>, SchematicError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, Rc<YNode>> = HashMap::new();
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
            Event::Alias(id) => anchors
                .get(&id)
                .cloned()
                .ok_or_else(|| err(format!("yaml: line {line}: unknown anchor referenced")))?,
            Event::Scalar(value, style, anchor, tag) => {
                let node = Rc::new(YNode {
                    line,
                    tag: tag.map(|t| short_tag(&t)),
                    kind: YKind::Scalar(value.into_owned(), style),
                });
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::SequenceStart(anchor, tag) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(format!(
                        "yaml: line {line}: exceeded max depth of {MAX_DEPTH}"
                    )));
                }
                stack.push(Frame::Seq {
                    line,
                    tag: tag.map(|t| short_tag(&t)),
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(format!(
                        "yaml: line {line}: exceeded max depth of {MAX_DEPTH}"
                    )));
                }
                stack.push(Frame::Map {
                    line,
                    tag: tag.map(|t| short_tag(&t)),
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        line,
                        tag,
                        anchor,
                        items,
                    }) => (
                        YNode {
                            line,
                            tag,
                            kind: YKind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        line,
                        tag,
                        anchor,
                        entries,
                        ..
                    }) => (
                        YNode {
                            line,
                            tag,
                            kind: YKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(err("yaml: unbalanced collection end")),
                };
                let node = Rc::new(node);
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
        };
        if !in_document {
            return Err(err("yaml: content outside of a document"));
        }
        match stack.last_mut() {
            None => return Ok(Some(node)),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}
