//! Env vars as every side must accept them: the kernel's `execve` takes each as a
//! `KEY=VALUE\0` string, so a NUL anywhere, an `=` or nothing in the key, or an entry larger
//! than the kernel takes would make every later command fail. Checked where they enter (the
//! API's create, the agent's `/init`, a command's or an execution's envs) instead.

use std::collections::BTreeMap;

/// Most env vars in one set.
pub const MAX_VARS: usize = 1024;
/// Largest `KEY=VALUE` entry (the kernel's own limit, MAX_ARG_STRLEN, is 128 KiB).
pub const MAX_ENTRY_BYTES: usize = 32 << 10;
/// Largest set, summed over its entries (well below the kernel's ARG_MAX share for envp).
pub const MAX_TOTAL_BYTES: usize = 256 << 10;

/// Why a set of env vars cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("env var name is empty")]
    EmptyKey,
    #[error("env var name {0:?} contains '='")]
    KeyHasEquals(String),
    #[error("env var name {0:?} contains a NUL byte")]
    KeyHasNul(String),
    #[error("env var {0:?} contains a NUL byte in its value")]
    ValueHasNul(String),
    #[error("env var {0:?} is larger than {MAX_ENTRY_BYTES} bytes")]
    TooLarge(String),
    #[error("too many env vars: {0} (at most {MAX_VARS})")]
    TooMany(usize),
    #[error("env vars total more than {MAX_TOTAL_BYTES} bytes")]
    TotalTooLarge,
}

/// Checks one `key=value` pair.
pub fn check_var(key: &str, value: &str) -> Result<(), EnvError> {
    if key.is_empty() {
        return Err(EnvError::EmptyKey);
    }
    if key.contains('\0') {
        return Err(EnvError::KeyHasNul(key.to_string()));
    }
    if key.contains('=') {
        return Err(EnvError::KeyHasEquals(key.to_string()));
    }
    if value.contains('\0') {
        return Err(EnvError::ValueHasNul(key.to_string()));
    }
    if key.len() + 1 + value.len() > MAX_ENTRY_BYTES {
        return Err(EnvError::TooLarge(key.to_string()));
    }
    Ok(())
}

/// Checks a whole set.
pub fn check(vars: &BTreeMap<String, String>) -> Result<(), EnvError> {
    if vars.len() > MAX_VARS {
        return Err(EnvError::TooMany(vars.len()));
    }
    let mut total = 0;
    for (k, v) in vars {
        check_var(k, v)?;
        total += k.len() + v.len() + 2;
    }
    if total > MAX_TOTAL_BYTES {
        return Err(EnvError::TotalTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str) -> BTreeMap<String, String> {
        [(k.to_string(), v.to_string())].into()
    }

    #[test]
    fn refuses_what_execve_cannot_take() {
        assert_eq!(check(&one("A", "ok=fine")), Ok(()));
        assert_eq!(check(&one("", "x")), Err(EnvError::EmptyKey));
        assert!(matches!(
            check(&one("A=B", "x")),
            Err(EnvError::KeyHasEquals(_))
        ));
        assert!(matches!(
            check(&one("A\0", "x")),
            Err(EnvError::KeyHasNul(_))
        ));
        assert!(matches!(
            check(&one("A", "x\0y")),
            Err(EnvError::ValueHasNul(_))
        ));
        let big = "x".repeat(MAX_ENTRY_BYTES);
        assert!(matches!(check(&one("A", &big)), Err(EnvError::TooLarge(_))));
        let many = (0..=MAX_VARS)
            .map(|i| (format!("K{i}"), String::new()))
            .collect();
        assert_eq!(check(&many), Err(EnvError::TooMany(MAX_VARS + 1)));
        let wide = (0..16)
            .map(|i| (format!("K{i}"), "y".repeat(20 << 10)))
            .collect();
        assert_eq!(check(&wide), Err(EnvError::TotalTooLarge));
        assert!(check(&one("A", "x\0y"))
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }
}
