//! Inclusive XML canonicalization (Canonical XML 1.1, W3C REC 2008-05-02, without comments)
//! over a `roxmltree` document, for the two node sets an enveloped XML-DSig needs:
//!
//! - the whole document minus one element (the `Signature`, by the enveloped-signature
//!   transform), and
//! - the subtree of one element (`SignedInfo`), with every namespace in scope rendered on it.
//!
//! Canonical XML 1.1 differs from 1.0 only in how `xml:id` and `xml:base` are inherited by the
//! apex of a document subset. The callers never canonicalize a subset whose ancestors carry
//! `xml:*` attributes (they refuse such RIMs), so that case does not arise here; within the
//! output, `xml:*` attributes are ordinary attributes.
//!
//! The rules, from the spec (§2.3, §4): UTF-8 output; no XML declaration or DTD; empty
//! elements as start-end pairs; namespace declarations first (default first, then by prefix),
//! then attributes by (namespace URI, local name); a namespace declaration only where it
//! differs from the nearest output ancestor's; `xmlns=""` where an element leaves a default
//! namespace its parent had; text escaped as `&amp; &lt; &gt; &#xD;`, attribute values as
//! `&amp; &lt; &quot; &#x9; &#xA; &#xD;`; processing instructions kept, comments dropped; line
//! ends and attribute values already normalized by the parser.

use roxmltree::{Node, NodeId, NodeType};

/// The prefix and local name of an element as written in the source (roxmltree resolves
/// names to URIs; canonical form keeps the prefix, and two prefixes may share one URI).
fn source_qname<'a>(node: &Node<'_, 'a>) -> &'a str {
    let input = node.document().input_text();
    let rest = input.get(node.range().start + 1..).unwrap_or_default();
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or_default()
}

fn escape_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

fn escape_attribute(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// In-scope namespaces of an element as (prefix, URI), prefix "" for the default, without
/// the implicit `xml` binding, sorted by prefix.
fn in_scope(node: &Node<'_, '_>) -> Vec<(String, String)> {
    let mut namespaces: Vec<(String, String)> = node
        .namespaces()
        .filter(|ns| ns.name() != Some("xml"))
        .map(|ns| {
            (
                ns.name().unwrap_or_default().to_owned(),
                ns.uri().to_owned(),
            )
        })
        .collect();
    namespaces.sort();
    namespaces.dedup_by(|a, b| a.0 == b.0);
    namespaces
}

struct Canonicalizer {
    exclude: Option<NodeId>,
    out: String,
    /// The in-scope namespaces rendered on each open output element.
    stack: Vec<Vec<(String, String)>>,
}

impl Canonicalizer {
    fn element(&mut self, node: Node<'_, '_>) {
        let qname = source_qname(&node);
        self.out.push('<');
        self.out.push_str(qname);
        let scope = in_scope(&node);
        let parent = self.stack.last();
        // Namespace axis (§4.5 / C14N 1.0 §2.3): render what the output parent does not
        // already have in scope with the same URI.
        for (prefix, uri) in &scope {
            let inherited =
                parent.is_some_and(|p| p.iter().any(|(pp, pu)| pp == prefix && pu == uri));
            if inherited || (prefix.is_empty() && uri.is_empty()) {
                continue;
            }
            if prefix.is_empty() {
                self.out.push_str(" xmlns=\"");
            } else {
                self.out.push_str(" xmlns:");
                self.out.push_str(prefix);
                self.out.push_str("=\"");
            }
            escape_attribute(uri, &mut self.out);
            self.out.push('"');
        }
        // An element without a default namespace under a parent with one: xmlns="".
        let has_default = scope.iter().any(|(p, u)| p.is_empty() && !u.is_empty());
        let parent_default =
            parent.is_some_and(|p| p.iter().any(|(pp, pu)| pp.is_empty() && !pu.is_empty()));
        if !has_default && parent_default {
            self.out.push_str(" xmlns=\"\"");
        }
        // Attributes, by (namespace URI, local name); no-namespace ones sort first.
        let input = node.document().input_text();
        let mut attributes: Vec<(&str, &str, &str, &str)> = node
            .attributes()
            .map(|a| {
                let qname = input.get(a.range_qname()).unwrap_or_else(|| a.name());
                (
                    a.namespace().unwrap_or_default(),
                    a.name(),
                    qname,
                    a.value(),
                )
            })
            .collect();
        attributes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, qname, value) in attributes {
            self.out.push(' ');
            self.out.push_str(qname);
            self.out.push_str("=\"");
            escape_attribute(value, &mut self.out);
            self.out.push('"');
        }
        self.out.push('>');
        self.stack.push(scope);
        for child in node.children() {
            self.node(child);
        }
        self.stack.pop();
        self.out.push_str("</");
        self.out.push_str(qname);
        self.out.push('>');
    }

    fn pi(&mut self, node: Node<'_, '_>) {
        if let Some(pi) = node.pi() {
            self.out.push_str("<?");
            self.out.push_str(pi.target);
            if let Some(value) = pi.value {
                self.out.push(' ');
                self.out.push_str(value);
            }
            self.out.push_str("?>");
        }
    }

    fn node(&mut self, node: Node<'_, '_>) {
        if Some(node.id()) == self.exclude {
            return;
        }
        match node.node_type() {
            NodeType::Element => self.element(node),
            NodeType::Text => escape_text(node.text().unwrap_or_default(), &mut self.out),
            NodeType::PI => self.pi(node),
            NodeType::Comment | NodeType::Root => {}
        }
    }

    fn document(&mut self, root: Node<'_, '_>) {
        let mut seen_element = false;
        for child in root.children() {
            match child.node_type() {
                NodeType::Element => {
                    self.element(child);
                    seen_element = true;
                }
                NodeType::PI => {
                    if seen_element {
                        self.out.push('\n');
                    }
                    self.pi(child);
                    if !seen_element {
                        self.out.push('\n');
                    }
                }
                _ => {}
            }
        }
    }
}

/// Canonical form of the whole document, leaving out the subtree of `exclude`.
pub(crate) fn document_without(doc: &roxmltree::Document<'_>, exclude: Option<NodeId>) -> String {
    let mut c = Canonicalizer {
        exclude,
        out: String::with_capacity(doc.input_text().len()),
        stack: Vec::new(),
    };
    c.document(doc.root());
    c.out
}

/// Canonical form of the subtree of `element`, as the apex of a document subset.
pub(crate) fn subtree(element: Node<'_, '_>) -> String {
    let mut c = Canonicalizer {
        exclude: None,
        out: String::new(),
        stack: Vec::new(),
    };
    c.element(element);
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        document_without(&doc, None)
    }

    // Examples adapted from Canonical XML 1.1 §3.
    #[test]
    fn empty_elements_attribute_order_and_redundant_namespaces() {
        assert_eq!(
            c14n(
                r#"<doc><e1   /><e2   ></e2><e3   name = "elem3"   id="elem3"   /><e5 a:attr="out" b:attr="sorted" attr2="all" attr="I'm" xmlns:b="http://www.ietf.org" xmlns:a="http://www.w3.org" xmlns="http://example.org"/><e6 xmlns="" xmlns:a="http://www.w3.org"><e7 xmlns="http://www.ietf.org"><e8 xmlns="" xmlns:a="http://www.w3.org"><e9 xmlns="" xmlns:a="http://www.ietf.org"/></e8></e7></e6></doc>"#
            ),
            r#"<doc><e1></e1><e2></e2><e3 id="elem3" name="elem3"></e3><e5 xmlns="http://example.org" xmlns:a="http://www.w3.org" xmlns:b="http://www.ietf.org" attr="I'm" attr2="all" b:attr="sorted" a:attr="out"></e5><e6 xmlns:a="http://www.w3.org"><e7 xmlns="http://www.ietf.org"><e8 xmlns=""><e9 xmlns:a="http://www.ietf.org"></e9></e8></e7></e6></doc>"#
        );
    }

    #[test]
    fn character_escaping_and_pis() {
        assert_eq!(
            c14n(
                "<?xml version=\"1.0\"?>\n<?pi-before x?>\n<!-- gone -->\n<doc a=\"&quot;&#x9;&#xA;&lt;&amp;\">&lt;&gt;&amp;&#xD; <![CDATA[<x>]]><!-- gone --></doc>\n<?pi-after?>"
            ),
            "<?pi-before x?>\n<doc a=\"&quot;&#x9;&#xA;&lt;&amp;\">&lt;&gt;&amp;&#xD; &lt;x&gt;</doc>\n<?pi-after?>"
        );
    }

    #[test]
    fn apex_of_a_subset_renders_inherited_namespaces() {
        let xml =
            r#"<r xmlns="urn:d" xmlns:p="urn:p"><p:s xmlns:q="urn:q"><p:t q:a="1"/></p:s></r>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let s = doc
            .descendants()
            .find(|n| n.has_tag_name(("urn:p", "s")))
            .unwrap();
        assert_eq!(
            subtree(s),
            r#"<p:s xmlns="urn:d" xmlns:p="urn:p" xmlns:q="urn:q"><p:t q:a="1"></p:t></p:s>"#
        );
    }

    #[test]
    fn excluded_subtree_leaves_its_surrounding_text() {
        let xml = "<r>\n  <a/>\n<s><x/></s></r>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        let s = doc.descendants().find(|n| n.has_tag_name("s")).unwrap();
        assert_eq!(document_without(&doc, Some(s.id())), "<r>\n  <a></a>\n</r>");
    }
}
