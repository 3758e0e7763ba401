//! For build scripts: which features cargo enabled for the crate being built.

/// The enabled features (implied ones included), lower-case with dashes, sorted,
/// `default` left out. Cargo sets `CARGO_FEATURE_<NAME>` for each.
pub fn enabled_features() -> Vec<String> {
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .filter(|f| f != "default")
        .collect();
    features.sort();
    features
}
