//! The house's shape, checked: no module imports in a cycle, no host
//! source file grows past the size ARCHITECTURE.md allows, and the crate
//! graph keeps its direction (the gateway never depends on the bus).
//!
//! Imports are read as text, as a reviewer reads them: every `use` and
//! every `crate::…`/`super::…` path names the module it reaches. A parent
//! reaching into its own children (declaring and re-exporting them) is
//! structure, not an import, and is left out; any other pair of modules
//! reaching each other, directly or round a loop, is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a host source file may be, but for the exceptions below.
const MAX_LINES: usize = 600;

/// Files allowed past [`MAX_LINES`], each argued in ARCHITECTURE.md.
const LONG_FILES: &[&str] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                out.extend(sources(&p));
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The host's crates: (name, `src` directory).
fn crates() -> Vec<(String, PathBuf)> {
    let root = root();
    let mut out = vec![("roomlet".to_owned(), root.join("host/src"))];
    let crates = root.join("host/crates");
    let mut names: Vec<_> = std::fs::read_dir(&crates)
        .expect("host/crates")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        out.push((format!("roomlet-{name}"), p.join("src")));
    }
    out
}

/// A file's module path within its crate: `[]` for the root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "lib.rs" | "main.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The code of a file without comments and string contents, so a path in
/// a doc comment or a message is not taken for an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
                out.push('"');
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// Every path a `use` tree names, its braces expanded.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        let Some(open) = t.find('{') else {
            out.push(format!("{prefix}{t}"));
            return;
        };
        let head = &t[..open];
        let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    go(&format!("{prefix}{head}"), &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if start < inner.len() {
            go(&format!("{prefix}{head}"), &inner[start..], out);
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// The crate-relative module paths a file's code names. `here` is the
/// file's module; an inline `mod name { … }` block is a module under it,
/// so `super::` inside one means the file's module.
fn reached(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // Inline modules open at this brace depth: (name, depth inside).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut pending_use = String::new();
    for line in code.lines() {
        let mut module = here.to_vec();
        module.extend(inline.iter().map(|(n, _)| n.clone()));
        let mut paths = Vec::new();
        // `use` trees, possibly over several lines.
        let mut rest = line;
        if !pending_use.is_empty() {
            match rest.find(';') {
                Some(end) => {
                    pending_use.push_str(&rest[..end]);
                    paths.extend(expand(&pending_use));
                    pending_use.clear();
                    rest = &rest[end + 1..];
                }
                None => {
                    pending_use.push_str(rest);
                    rest = "";
                }
            }
        }
        while let Some(i) = rest.find("use ") {
            let before = rest[..i].chars().next_back();
            let after = &rest[i + 4..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                rest = after;
                continue;
            }
            match after.find(';') {
                Some(end) => {
                    paths.extend(expand(&after[..end]));
                    rest = &after[end + 1..];
                }
                None => {
                    pending_use.push_str(after);
                    rest = "";
                }
            }
        }
        for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                paths.push(word.to_owned());
            }
        }
        for p in paths {
            out.extend(resolve(&p, &module));
        }
        // Inline modules and braces, after the line's paths.
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w == "mod"
                && let Some(name) = words.get(i + 1)
                && words.get(i + 2).is_some_and(|b| b.starts_with('{'))
            {
                inline.push((name.to_string(), depth + 1));
            }
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    while inline.last().is_some_and(|(_, d)| depth < *d) {
                        inline.pop();
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `path` (from `crate`, `super` or `self`) as a crate-relative path, from
/// module `here`.
fn resolve(path: &str, here: &[String]) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segs.first() {
        Some(&"crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some(&"super") | Some(&"self") => here.to_vec(),
        _ => return None,
    };
    while let Some(&s) = segs.first() {
        match s {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.remove(0);
    }
    base.extend(segs.iter().map(|s| s.to_string()));
    Some(base)
}

/// Module → modules it imports from, over every host crate.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (krate, src) in crates() {
        let files = sources(&src);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
        for f in &files {
            let here = module_of(&src, f);
            let text = std::fs::read_to_string(f).expect("readable source");
            let mut deps = BTreeSet::new();
            for mut target in reached(&code_only(&text), &here) {
                // The longest prefix that is a module of this crate.
                while !target.is_empty() && !modules.contains(&target) {
                    target.pop();
                }
                let is_descendant = target.len() > here.len() && target.starts_with(&here);
                if target != here && !is_descendant {
                    deps.insert(format!("{krate}::{}", target.join("::")));
                }
            }
            graph.insert(format!("{krate}::{}", here.join("::")), deps);
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_module_imports_in_a_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 30, "too few modules read: {}", graph.len());
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other (directly or round a loop): {found:#?}"
    );
}

/// The checker itself finds a cycle where there is one, and ignores a
/// parent reaching into its own child.
#[test]
fn the_cycle_check_sees_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    g.insert("d".into(), ["a".to_owned()].into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    // `x.rs`: `super` is the crate root; inside `mod inner { }` it is `x`.
    let here = vec!["x".to_owned()];
    let code = code_only(
        "use super::y::{Z, w::V};\n// use crate::nope;\nlet s = \"crate::nor\";\nmod inner {\n    use super::q;\n}\n",
    );
    let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        reached(&code, &here),
        vec![
            path(&["y", "Z"]),
            path(&["y", "w", "V"]),
            path(&["y"]),
            path(&["x", "q"]),
            path(&["x", "q"]),
        ]
    );
}

#[test]
fn no_host_source_file_is_longer_than_the_limit() {
    let root = root();
    let mut long = Vec::new();
    for f in sources(&root.join("host")) {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let lines = std::fs::read_to_string(&f).map_or(0, |t| t.lines().count());
        if lines > MAX_LINES && !LONG_FILES.contains(&rel.as_str()) {
            long.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them, or argue them in ARCHITECTURE.md and LONG_FILES): {long:#?}"
    );
}

/// The gateway sees rooms through its Topology seam: it must not depend on
/// the bus (or the node), whatever it would save.
#[test]
fn the_crate_graph_keeps_its_direction() {
    let manifest = |name: &str| {
        std::fs::read_to_string(root().join("host/crates").join(name).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("host/crates/{name}/Cargo.toml: {e}"))
    };
    let forbidden: &[(&str, &[&str])] = &[
        ("protocol", &["roomlet-runtime", "wasmtime", "roomlet-"]),
        ("telemetry", &["roomlet-"]),
        (
            "runtime",
            &["roomlet-rooms", "roomlet-gateway", "roomlet-bus"],
        ),
        ("rooms", &["roomlet-gateway", "roomlet-bus"]),
        ("gateway", &["roomlet-bus"]),
    ];
    for (krate, not) in forbidden {
        let deps = manifest(krate);
        let deps = deps
            .split("[dependencies]")
            .nth(1)
            .unwrap_or_default()
            .split("\n[")
            .next()
            .unwrap_or_default();
        for dep in *not {
            let named = deps.lines().any(|l| {
                let name = l.split('=').next().unwrap_or_default().trim();
                name.starts_with(dep) && !(dep.ends_with('-') && name.starts_with("roomlet-module"))
            });
            assert!(!named, "roomlet-{krate} must not depend on {dep}*");
        }
    }
}
