//! Helpers for tests.

/// Whether `text` is one line of JSON naming every key in `keys`.
pub fn json_line_has_keys(text: &str, keys: &[&str]) -> bool {
    !text.contains('\n')
        && text.starts_with('{')
        && text.ends_with('}')
        && keys.iter().all(|k| text.contains(&format!("\"{k}\":")))
}
