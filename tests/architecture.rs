//! The module dependency rules of `docs/architecture.md`, checked against the source.
//!
//! Every top-level module of the library has a row in the table under "## Dependency rules"
//! listing the modules it may use. This test reads every non-test source file of each
//! module, collects the `crate::<module>` paths it names (including grouped
//! `crate::{a, b}` imports), and fails when a module uses one its row does not allow, when a
//! module has no row, or when the allowed graph itself has a circle. Test code (files named
//! `tests.rs`, files under a `tests/` directory, modules declared under `#[cfg(test)]`, and
//! inline `#[cfg(test)] mod … { … }` blocks) may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The table: module -> modules it may use.
fn allowed_table(doc: &str) -> Graph {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Dependency rules"))
        .expect("docs/architecture.md has a \"## Dependency rules\" section");
    let mut table = Graph::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 3, "a table row needs 3 cells: {line}");
        let module = cells[0].trim_matches('`').to_string();
        let uses: BTreeSet<String> = cells[cells.len() - 1]
            .split(',')
            .map(|s| s.trim().trim_matches('`').to_string())
            .filter(|s| !s.is_empty() && s != "—" && s != "-")
            .collect();
        assert!(
            table.insert(module.clone(), uses).is_none(),
            "{module} has two rows"
        );
    }
    table
}

/// Source text with test-only code removed: inline `#[cfg(test)] mod x { … }` blocks.
fn strip_inline_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let next_is_block = lines
            .get(i + 1)
            .is_some_and(|l| l.trim_start().starts_with("mod ") && l.trim_end().ends_with('{'));
        if lines[i].trim() == "#[cfg(test)]" && next_is_block {
            let mut depth = 0i64;
            let mut j = i + 1;
            while j < lines.len() {
                depth += lines[j].matches('{').count() as i64;
                depth -= lines[j].matches('}').count() as i64;
                if depth <= 0 {
                    break;
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        // Comments are not code.
        let code = lines[i].split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
        i += 1;
    }
    out
}

/// Files of `dir` declared as `#[cfg(test)] mod name;` by `text`.
fn test_only_children(text: &str, dir: &Path) -> Vec<PathBuf> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for w in lines.windows(2) {
        let decl = w[1].trim();
        if w[0].trim() == "#[cfg(test)]" && decl.starts_with("mod ") && decl.ends_with(';') {
            let name = decl.trim_start_matches("mod ").trim_end_matches(';').trim();
            out.push(dir.join(format!("{name}.rs")));
            out.push(dir.join(name));
        }
    }
    out
}

fn collect(path: &Path, excluded: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
    if excluded.iter().any(|e| path.starts_with(e)) {
        return;
    }
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("readable source directory")
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        // mod.rs first, so its #[cfg(test)] declarations are known before its children.
        entries.sort_by_key(|p| p.file_name().is_none_or(|n| n != "mod.rs"));
        for e in entries {
            collect(&e, excluded, files);
        }
        return;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.ends_with(".rs")
        || name == "tests.rs"
        || path.components().any(|c| c.as_os_str() == "tests")
    {
        return;
    }
    let text = std::fs::read_to_string(path).expect("readable source file");
    let dir = if name == "mod.rs" {
        path.parent().expect("a parent").to_path_buf()
    } else {
        path.with_extension("")
    };
    excluded.extend(test_only_children(&text, &dir));
    files.push(path.to_path_buf());
}

/// The `crate::<module>` names a piece of code uses.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: the first identifier after `{` and after each
            // `,` at depth 0, up to the group's matching `}`.
            let mut depth = 0;
            let mut start = true;
            let body = group;
            for (i, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident(&body[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    // Preceded by `$`: macros; `crate` alone: the root's own items (`unix_now`).
    out.retain(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    out
}

/// What each top-level module of `src/` actually uses.
fn actual_graph(modules: &BTreeSet<String>) -> Graph {
    let src = root().join("src");
    let mut graph = Graph::new();
    for m in modules {
        let path = if src.join(m).is_dir() {
            src.join(m)
        } else {
            src.join(format!("{m}.rs"))
        };
        let mut files = Vec::new();
        collect(&path, &mut Vec::new(), &mut files);
        let mut uses = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("readable source file");
            uses.extend(crate_paths(&strip_inline_tests(&text)));
        }
        uses.retain(|u| u != m && modules.contains(u));
        graph.insert(m.clone(), uses);
    }
    graph
}

/// The library's top-level modules, from `pub mod`/`mod` lines of `src/lib.rs`.
fn lib_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")
                .and_then(|r| r.strip_suffix(';'))
                .map(str::to_string)
        })
        .collect()
}

/// A circle in `graph`, if any, as the modules along it.
fn find_circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut circle = stack[from..].to_vec();
                circle.push(n.to_string());
                return Some(circle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn module_dependencies_follow_docs_architecture() {
    let doc =
        std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let allowed = allowed_table(&doc);
    let modules = lib_modules();
    let mut problems = Vec::new();
    for m in &modules {
        if !allowed.contains_key(m) {
            problems.push(format!("module `{m}` has no row in docs/architecture.md"));
        }
    }
    for m in allowed.keys() {
        if !modules.contains(m) {
            problems.push(format!(
                "docs/architecture.md has a row for `{m}`, which src/lib.rs does not declare"
            ));
        }
    }
    if let Some(circle) = find_circle(&allowed) {
        problems.push(format!(
            "the allowed dependencies form a circle: {}",
            circle.join(" -> ")
        ));
    }
    let actual = actual_graph(&modules);
    for (m, uses) in &actual {
        let ok = allowed.get(m).cloned().unwrap_or_default();
        for u in uses.difference(&ok) {
            problems.push(format!(
                "`{m}` uses `crate::{u}`, which its row in docs/architecture.md does not allow"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_what_it_must() {
    let code = "use crate::{engine::{A, B}, guard, sealed::X};\nlet x = crate::audit::f();\n";
    let found: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["audit", "engine", "guard", "sealed"]);
    let stripped = strip_inline_tests(
        "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn f() { }\n}\nuse crate::c; // crate::d\n",
    );
    assert_eq!(
        crate_paths(&stripped).into_iter().collect::<Vec<_>>(),
        ["a", "c"]
    );
    let mut g = Graph::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(find_circle(&g), None);
    g.get_mut("c").unwrap().insert("a".into());
    assert_eq!(
        find_circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
