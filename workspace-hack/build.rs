// Empty: it exists so that cargo resolves this crate's [build-dependencies], which put the
// service's features on the host's side too (see Cargo.toml).
fn main() {}
