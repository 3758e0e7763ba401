//! The one-line banner a program prints about itself.

/// "NAME VERSION".
pub fn banner(name: &str, version: &str) -> String {
    format!("{name} {version}")
}
