//! The `tandem` daemon and CLI.
fn main() {}
