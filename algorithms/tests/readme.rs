//! The README stays true to the registry: it lists every registered strategy kind, and its "Adding a
//! strategy" section shows the compiled example strategy verbatim.

use fedsim_algorithms::strategy::registry;

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).expect("README.md next to the workspace manifest")
}

#[test]
fn the_strategy_table_lists_every_registered_kind() {
    let readme = readme();
    // The first cells of the table rows, e.g. "| `fedadagrad`, `fedadam`, `fedyogi` |".
    let first_cells: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .collect();
    for e in registry::all() {
        let name = format!("`{}`", e.kind);
        assert!(
            first_cells
                .iter()
                .any(|cell| cell.split(',').any(|k| k.trim() == name)),
            "README.md's [strategy] table does not list kind `{}` ({})",
            e.kind,
            e.summary
        );
    }
}

#[test]
fn the_adding_a_strategy_example_is_the_compiled_file() {
    let readme = readme();
    let source = include_str!("../src/strategy/example_mean.rs");
    let start = source
        .find("/// `[strategy] kind = \"example_mean\"`.")
        .expect("the config's doc comment");
    let end = source.find("#[cfg(test)]").expect("the unit tests");
    let excerpt = source[start..end].trim_end();
    assert!(
        readme.contains(excerpt),
        "README.md's \"Adding a strategy\" code differs from algorithms/src/strategy/example_mean.rs; \
         copy the file (from the config's doc comment to the tests) into the README"
    );
    assert!(readme.contains("example_mean => [example_mean::ExampleMeanConfig],"));
    let registration = include_str!("../src/strategy/mod.rs");
    assert!(registration.contains("example_mean => [example_mean::ExampleMeanConfig],"));
}
