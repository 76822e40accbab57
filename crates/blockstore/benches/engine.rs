//! Engine benchmark (written next).
fn main() {}
