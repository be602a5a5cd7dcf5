//! The `unires` command-line program.
fn main() {}
