//! The YAML reader shared by cloud-config and Butane: `yaml-rust2`'s event
//! parser into a small tree that keeps what the configs users write rely on
//! and `yaml-rust2`'s own loader (YAML 1.2 core schema) loses:
//!
//! - an unquoted `0644` is the octal integer 420, as YAML 1.1 (PyYAML,
//!   cloud-init, coreos-cloudinit) and Go's yaml.v3 (Butane) read it;
//! - a `!!binary` scalar is base64, decoded here to bytes ([`Value::Binary`]);
//! - `yes`/`no`/`on`/`off` stay strings but read as booleans where a boolean
//!   is expected ([`as_bool`]), as YAML 1.1 and yaml.v3 decode them;
//! - every node keeps its line, for messages.
//!
//! Aliases are expanded with a budget, so an alias bomb is an error and not
//! an out-of-memory boot.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::ConfigError;

/// Most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 1 << 20;

/// Deepest nesting of collections (the tree is dropped and walked
/// recursively; real configs nest a handful of levels).
const MAX_DEPTH: usize = 128;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, empty.
    Null,
    /// `true`/`false` (any case variant YAML 1.2 knows).
    Bool(bool),
    /// An integer (decimal, `0x`, `0o`, or YAML 1.1 leading-zero octal).
    Int(i64),
    /// A float, as written.
    Real(String),
    /// A string.
    Str(String),
    /// A `!!binary` scalar, decoded.
    Binary(Vec<u8>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// A value and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line.
    pub line: usize,
}

/// Load the documents of a YAML stream.
pub fn load(text: &str) -> Result<Vec<Node>, ConfigError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one by one rather than through `Parser::load`,
    // which recurses per nesting level: a deeply nested document stops at
    // MAX_DEPTH here instead of overflowing the stack.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            let m = e.marker();
            err(
                format!("line {} column {}", m.line(), m.col() + 1),
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let end = ev == Event::StreamEnd;
        b.on_event(ev, mark);
        if let Some(e) = b.error.take() {
            return Err(e);
        }
        if end {
            return Ok(b.docs);
        }
    }
}

/// Load a stream that must hold at most one document; an empty or null
/// document is `None`.
pub fn load_one(text: &str) -> Result<Option<Node>, ConfigError> {
    let docs = load(text)?;
    match docs.len() {
        0 => Ok(None),
        1 => Ok(docs.into_iter().next().filter(|d| !is_null(d))),
        n => Err(err(
            "line 1",
            format!("expected one YAML document, found {n}"),
        )),
    }
}

#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    /// Open collections: the node, its anchor, and for maps a pending key.
    stack: Vec<(Node, usize, Option<Node>)>,
    anchors: Vec<(usize, Node, usize)>,
    nodes: usize,
    error: Option<ConfigError>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.event(ev, mark) {
            self.error = Some(e);
        }
    }
}

impl Builder {
    fn event(&mut self, ev: Event, mark: Marker) -> Result<(), ConfigError> {
        let line = mark.line();
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
            Event::DocumentEnd => {
                if self.stack.is_empty() {
                    // an empty document has no node
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                return Err(err(
                    format!("line {line}"),
                    format!("collections nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            Event::SequenceStart(aid, _) => self.stack.push((
                Node {
                    value: Value::Seq(Vec::new()),
                    line,
                },
                aid,
                None,
            )),
            Event::MappingStart(aid, _) => self.stack.push((
                Node {
                    value: Value::Map(Vec::new()),
                    line,
                },
                aid,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((node, aid, pending)) = self.stack.pop() else {
                    return Ok(());
                };
                if pending.is_some() {
                    return Err(err(format!("line {line}"), "mapping key without a value"));
                }
                self.insert(node, aid)?;
            }
            Event::Scalar(v, style, aid, tag) => {
                let value = scalar(v, style, tag.as_ref(), line)?;
                self.insert(Node { value, line }, aid)?;
            }
            Event::Alias(id) => {
                let Some((_, node, size)) = self.anchors.iter().find(|(a, _, _)| *a == id) else {
                    return Err(err(format!("line {line}"), "unknown alias"));
                };
                let (node, size) = (node.clone(), *size);
                self.count(size, line)?;
                self.insert_counted(node, 0)?;
            }
        }
        Ok(())
    }

    fn count(&mut self, n: usize, line: usize) -> Result<(), ConfigError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(err(
                format!("line {line}"),
                format!("document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            ));
        }
        Ok(())
    }

    fn insert(&mut self, node: Node, aid: usize) -> Result<(), ConfigError> {
        self.count(1, node.line)?;
        self.insert_counted(node, aid)
    }

    fn insert_counted(&mut self, node: Node, aid: usize) -> Result<(), ConfigError> {
        if aid > 0 {
            let size = size(&node);
            self.anchors.push((aid, node.clone(), size));
        }
        let Some((parent, _, pending)) = self.stack.last_mut() else {
            self.docs.push(node);
            return Ok(());
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if entries.iter().any(|(k, _)| k.value == key.value) {
                        let name = match &key.value {
                            Value::Str(s) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        return Err(err(
                            format!("line {}", key.line),
                            format!("duplicate key {name:?} in a mapping"),
                        ));
                    }
                    entries.push((key, node));
                }
            },
            // only collections are pushed on the stack
            _ => {}
        }
        Ok(())
    }
}

fn size(n: &Node) -> usize {
    match &n.value {
        Value::Seq(s) => 1 + s.iter().map(size).sum::<usize>(),
        Value::Map(m) => 1 + m.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
        _ => 1,
    }
}

fn scalar(
    v: String,
    style: TScalarStyle,
    tag: Option<&Tag>,
    line: usize,
) -> Result<Value, ConfigError> {
    let core = tag.and_then(|t| {
        if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
            Some(t.suffix.as_str())
        } else {
            None
        }
    });
    let bad = |what: &str| {
        err(
            format!("line {line}"),
            format!("{v:?} is not a valid {what}"),
        )
    };
    match core {
        Some("binary") => {
            let clean: Vec<u8> = v.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            return crate::dataurl::base64(&clean)
                .map(Value::Binary)
                .map_err(|e| err(format!("line {line}"), format!("!!binary: {e}")));
        }
        Some("str") => return Ok(Value::Str(v)),
        Some("int") => return int(&v).map(Value::Int).ok_or_else(|| bad("!!int")),
        Some("bool") => return bool_word(&v).map(Value::Bool).ok_or_else(|| bad("!!bool")),
        Some("float") => return Ok(Value::Real(v)),
        Some("null") => return Ok(Value::Null),
        _ => {}
    }
    if style != TScalarStyle::Plain || tag.is_some() {
        return Ok(Value::Str(v));
    }
    Ok(match v.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        s => match int(s) {
            Some(i) => Value::Int(i),
            None if is_float(s) => Value::Real(v),
            None => Value::Str(v),
        },
    })
}

/// An integer the way YAML 1.1 and yaml.v3 read a plain scalar: decimal,
/// `0x` hex, `0o` or leading-zero octal, `0b` binary, an optional sign.
fn int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let body = body.replace('_', "");
    if body.is_empty() || !body.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let n = if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse().ok()?
    };
    Some(if neg { n.checked_neg()? } else { n })
}

fn is_float(s: &str) -> bool {
    matches!(
        s,
        ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | ".nan"
            | ".NaN"
            | ".NAN"
    ) || (s.bytes().any(|b| b.is_ascii_digit()) && s.parse::<f64>().is_ok())
}

fn bool_word(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A message at a YAML key path.
pub fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// True for `~`, `null` or an empty value.
pub fn is_null(v: &Node) -> bool {
    matches!(v.value, Value::Null)
}

/// What a value is, for messages.
pub fn kind(v: &Node) -> &'static str {
    match v.value {
        Value::Real(_) => "a number",
        Value::Int(_) => "an integer",
        Value::Str(_) => "a string",
        Value::Binary(_) => "binary data",
        Value::Bool(_) => "a boolean",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
        Value::Null => "null",
    }
}

fn name_or_root(at: &str) -> &str {
    if at.is_empty() {
        "(document)"
    } else {
        at
    }
}

/// A mapping's entries.
pub fn as_map<'a>(v: &'a Node, at: &str) -> Result<&'a [(Node, Node)], ConfigError> {
    match &v.value {
        Value::Map(h) => Ok(h),
        _ => Err(err(
            name_or_root(at),
            format!("expected a mapping, found {}", kind(v)),
        )),
    }
}

/// A sequence's items; null is an empty list.
pub fn as_seq<'a>(v: &'a Node, at: &str) -> Result<&'a [Node], ConfigError> {
    match &v.value {
        Value::Seq(a) => Ok(a),
        Value::Null => Ok(&[]),
        _ => Err(err(at, format!("expected a list, found {}", kind(v)))),
    }
}

/// A string.
pub fn as_str<'a>(v: &'a Node, at: &str) -> Result<&'a str, ConfigError> {
    match &v.value {
        Value::Str(s) => Ok(s),
        _ => Err(err(at, format!("expected a string, found {}", kind(v)))),
    }
}

/// A boolean; YAML 1.1's `yes`/`no`/`on`/`off` count.
pub fn as_bool(v: &Node, at: &str) -> Result<bool, ConfigError> {
    match &v.value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if bool_word(s).is_some() => Ok(bool_word(s).unwrap_or(false)),
        _ => Err(err(
            at,
            format!("expected true or false, found {}", kind(v)),
        )),
    }
}

/// A list of strings.
pub fn strs(v: &Node, at: &str) -> Result<Vec<String>, ConfigError> {
    as_seq(v, at)?
        .iter()
        .enumerate()
        .map(|(i, x)| as_str(x, &format!("{at}[{i}]")).map(str::to_string))
        .collect()
}

/// A mapping key, which must be a string.
pub fn key_str<'a>(k: &'a Node, at: &str) -> Result<&'a str, ConfigError> {
    match &k.value {
        Value::Str(s) => Ok(s),
        _ => Err(err(
            name_or_root(at),
            format!("expected string keys, found {}", kind(k)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Value {
        let n = load_one(&format!("k: {s}\n")).unwrap().unwrap();
        as_map(&n, "").unwrap()[0].1.value.clone()
    }

    #[test]
    fn yaml_1_1_scalars() {
        assert_eq!(one("0644"), Value::Int(0o644));
        assert_eq!(one("0o644"), Value::Int(0o644));
        assert_eq!(one("420"), Value::Int(420));
        assert_eq!(one("0"), Value::Int(0));
        assert_eq!(one("'0644'"), Value::Str("0644".into()));
        assert_eq!(one("0x1f"), Value::Int(31));
        assert_eq!(one("-12"), Value::Int(-12));
        assert_eq!(one("089"), Value::Real("089".into()));
        assert_eq!(one("1.5"), Value::Real("1.5".into()));
        assert_eq!(one("yes"), Value::Str("yes".into()));
        assert_eq!(one("~"), Value::Null);
        assert_eq!(one("!!binary aGVsbG8="), Value::Binary(b"hello".to_vec()));
        assert_eq!(one("!!str 0644"), Value::Str("0644".into()));
    }

    #[test]
    fn binary_block_and_lines() {
        let n = load_one("a: 1\nb: !!binary |\n  aGVs\n  bG8=\n")
            .unwrap()
            .unwrap();
        let m = as_map(&n, "").unwrap();
        assert_eq!(m[1].1.value, Value::Binary(b"hello".to_vec()));
        assert_eq!(m[1].0.line, 2);
        assert!(load("a: !!binary '%%%'\n")
            .unwrap_err()
            .to_string()
            .starts_with("line 1: !!binary"));
    }

    #[test]
    fn duplicate_keys_and_bombs() {
        assert_eq!(
            load("a: 1\na: 2\n").unwrap_err().to_string(),
            "line 2: duplicate key \"a\" in a mapping"
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(load(&bomb).unwrap_err().message.contains("alias bomb"));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = "- ".repeat(100_000) + "x\n";
        assert!(load(&deep).unwrap_err().message.contains("nested deeper"));
        let flow = "[".repeat(200) + &"]".repeat(200);
        assert!(load(&flow).is_err());
    }

    #[test]
    fn yes_no_as_bool() {
        let n = load_one("a: yes\nb: off\nc: maybe\n").unwrap().unwrap();
        let m = as_map(&n, "").unwrap();
        assert!(as_bool(&m[0].1, "a").unwrap());
        assert!(!as_bool(&m[1].1, "b").unwrap());
        assert!(as_bool(&m[2].1, "c").is_err());
    }
}
