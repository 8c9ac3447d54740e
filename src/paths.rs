//! Path validation and resolution: the one place that decides what a path means.

/// Longest path accepted, in bytes (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Longest path component accepted, in bytes (Linux NAME_MAX): the protocol refuses longer
/// names up front on every backend, instead of letting each file system answer differently.
pub const MAX_NAME: usize = 255;

/// Resolves `path` against `cwd` into a normalised absolute path, lexically (`.` and `..`
/// are folded; `..` never climbs above `/`). Rejects empty paths, NUL bytes, over-long paths
/// and over-long components with a message.
pub fn resolve(cwd: &str, path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.contains('\0') || cwd.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long; at most {MAX_PATH} are accepted",
            path.len()
        ));
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p if p.len() > MAX_NAME => {
                return Err(format!(
                    "a path component is {} bytes long; at most {MAX_NAME} are accepted",
                    p.len()
                ));
            }
            p => parts.push(p),
        }
    }
    let out = format!("/{}", parts.join("/"));
    if out.len() > MAX_PATH {
        return Err(format!("the resolved path is longer than {MAX_PATH} bytes"));
    }
    Ok(out)
}

/// The parent directory of a normalised absolute path (`/` for `/` and top-level entries).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a normalised absolute path (empty for `/`).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// True when normalised `path` is `root` or lies below it.
pub fn is_within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || root.is_empty() || path.starts_with(&format!("{root}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resolves_relative_and_dots() {
        assert_eq!(resolve("/workspace", "a/b").unwrap(), "/workspace/a/b");
        assert_eq!(resolve("/workspace", "../etc/./x").unwrap(), "/etc/x");
        assert_eq!(resolve("/w", "/../../x").unwrap(), "/x");
        assert_eq!(resolve("/w", "-rf").unwrap(), "/w/-rf");
        assert_eq!(resolve("/", ".").unwrap(), "/");
        assert!(resolve("/w", "").is_err());
        assert!(resolve("/w", "a\0b").is_err());
        assert!(resolve("/w", &"a".repeat(5000)).is_err());
        assert!(resolve("/w", &"a".repeat(255)).is_ok());
        assert!(resolve("/w", &format!("{}/b", "a".repeat(256))).is_err());
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(file_name("/a/b c"), "b c");
        assert!(is_within("/workspace/x", "/workspace"));
        assert!(!is_within("/workspacex", "/workspace"));
    }

    proptest! {
        #[test]
        fn resolved_paths_are_absolute_and_normal(cwd in "(/[a-z.]{1,4}){0,4}", p in "[a-z./ -]{1,30}") {
            if let Ok(r) = resolve(if cwd.is_empty() { "/" } else { &cwd }, &p) {
                prop_assert!(r.starts_with('/'));
                prop_assert!(!r.split('/').any(|c| c == ".." || c == "."));
                prop_assert!(!r.contains("//"));
            }
        }
    }
}
