//! The view catalog against what users read: the README's table of views and `chatflow query`'s
//! help list every view of the catalog with its columns, and nothing else.

use std::collections::BTreeMap;

use dataflows::CATALOG;

use crate::support::chatflow;

/// The README's table rows `| \`view\` | columns | meaning |`, by view.
fn readme_views() -> BTreeMap<String, Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut views = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 && cells[0].is_empty() && cells[1].starts_with('`') && cells[1].ends_with('`') {
            let name = cells[1].trim_matches('`').to_owned();
            let columns = cells[2].split(',').map(|c| c.trim().to_owned()).collect();
            assert!(views.insert(name.clone(), columns).is_none(), "README lists {name} twice");
        }
    }
    views
}

#[test]
fn the_readme_table_matches_the_catalog() {
    let readme = readme_views();
    let catalog: BTreeMap<String, Vec<String>> =
        CATALOG.iter().map(|v| (v.name.to_owned(), v.column_names().iter().map(|c| c.to_string()).collect())).collect();
    assert_eq!(readme, catalog, "README.md's table of views differs from dataflows::views::CATALOG");
}

#[test]
fn query_help_lists_every_view_and_refuses_others() {
    let help = chatflow().args(["query", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for v in CATALOG {
        assert!(help.contains(v.name), "`chatflow query --help` does not list {}:\n{help}", v.name);
    }
    let wrong = chatflow().args(["query", "word_count"]).output().unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("word_counts"), "the error names the views: {stderr}");
}
