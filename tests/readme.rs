//! Every Rust snippet of README.md is in `examples/readme.rs` word for word
//! (each line trimmed: the example indents them inside functions), so the
//! README's code is compiled with the example and cannot rot.

const README: &str = include_str!("../README.md");
const EXAMPLE: &str = include_str!("../examples/readme.rs");

/// The ```rust blocks of a markdown text, as their lines.
fn rust_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```rust") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => block.push(line),
            _ => {}
        }
    }
    blocks
}

fn trimmed<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    lines
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_readme_snippet_is_compiled_by_the_readme_example() {
    let example = trimmed(EXAMPLE.lines());
    let blocks = rust_blocks(README);
    assert!(blocks.len() >= 8, "found {} rust blocks", blocks.len());
    for block in blocks {
        let want = trimmed(block.iter().copied());
        let found = example
            .windows(want.len())
            .any(|window| window == want.as_slice());
        assert!(
            found,
            "this README snippet is not in examples/readme.rs word for word; \
             copy it there (in the context it needs) so it is compiled:\n{}",
            block.join("\n")
        );
    }
}

#[test]
fn the_block_finder_sees_rust_blocks_only() {
    let md = "text\n```rust\nlet a = 1;\n```\n```sh\nls\n```\n```rust,ignore\nx\n```\n";
    assert_eq!(rust_blocks(md), [vec!["let a = 1;"], vec!["x"]]);
}
