//! The module graph, read from the sources: imports between top-level modules go one way
//! (no module imports a module that imports it back, directly or around a loop), and only
//! the command line uses the experiments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name as `crate::<module>`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "lib" && name != "main" {
            modules.insert(name);
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap();
                for part in code.split("crate::").skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name != top && modules.contains(&name) {
                        graph.entry(top.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = module_graph();
    assert!(
        graph.contains_key("run") && graph.contains_key("cli"),
        "{graph:?}"
    );
    // Depth-first search for a path from each module back to itself.
    for start in graph.keys() {
        let mut todo: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = todo.pop() {
            let last = *path.last().unwrap();
            for next in graph.get(last).into_iter().flatten() {
                assert!(
                    next != start,
                    "import cycle: {} -> {next}",
                    path.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                );
                if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    todo.push(longer);
                }
            }
        }
    }
}

#[test]
fn only_the_command_line_uses_the_experiments_and_nothing_below_the_run_uses_it() {
    let graph = module_graph();
    for (module, uses) in &graph {
        if uses.contains("experiment") {
            assert_eq!(module, "cli", "{module} imports experiment");
        }
        for below in [
            "train", "eval", "model", "backend", "data", "shape", "settings",
        ] {
            if module == below {
                assert!(!uses.contains("run"), "{module} imports run");
                assert!(!uses.contains("cli"), "{module} imports cli");
            }
        }
    }
}
