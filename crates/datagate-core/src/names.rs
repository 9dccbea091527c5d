//! Department and dataset names (API.md §2).
//!
//! A department id and a dataset name match `^[a-z][a-z0-9_]{0,62}$`, so they are valid unquoted
//! SQL identifiers, path segments and file-name components at once.

use std::fmt;

/// A name that does not match `^[a-z][a-z0-9_]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {name:?}: must match ^[a-z][a-z0-9_]{{0,62}}$")]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
}

/// Checks a department id or dataset name; `what` names it in the error.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_string(),
        })
    }
}

/// The longest column name, in characters (Snowflake's limit; the column headers of government
/// exports run to a few dozen).
pub const MAX_COLUMN_NAME_CHARS: usize = 256;

/// Why `name` cannot name a column, or `None`: it is blank, longer than
/// [`MAX_COLUMN_NAME_CHARS`], or holds a control character (a line break or NUL, which CSV
/// headers, SQL identifiers and PostgreSQL text cannot carry as written). Any other text,
/// Chinese and spaces inside included, may name a column (quoted in SQL).
pub fn column_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("a column name is empty".into());
    }
    let shown = || {
        let head: String = name.chars().take(40).collect();
        if head.len() < name.len() {
            format!("{head:?}…")
        } else {
            format!("{head:?}")
        }
    };
    if name.chars().count() > MAX_COLUMN_NAME_CHARS {
        return Some(format!(
            "column name {} is longer than {MAX_COLUMN_NAME_CHARS} characters",
            shown()
        ));
    }
    if name.chars().any(char::is_control) {
        return Some(format!("column name {} holds a control character", shown()));
    }
    None
}

/// A dataset addressed as `department/dataset` (paths) or `department.dataset` (SQL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetRef {
    pub department: String,
    pub name: String,
}

impl DatasetRef {
    /// Builds a reference after validating both parts.
    pub fn new(department: &str, name: &str) -> Result<Self, NameError> {
        validate_name("department id", department)?;
        validate_name("dataset name", name)?;
        Ok(Self {
            department: department.to_string(),
            name: name.to_string(),
        })
    }

    /// Parses `department/dataset`.
    pub fn parse_path(s: &str) -> Result<Self, NameError> {
        match s.split_once('/') {
            Some((d, n)) => Self::new(d, n),
            None => Err(NameError {
                what: "dataset reference (department/dataset)",
                name: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.department, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "market", "air_quality_2024", &"a".repeat(63)] {
            assert!(validate_name("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1abc",
            "_x",
            "a-b",
            "a.b",
            "市场",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(validate_name("x", bad).is_err(), "{bad}");
        }
        for ok in [
            "id",
            "统一社会信用代码",
            "fare (CNY)",
            &"名".repeat(MAX_COLUMN_NAME_CHARS),
        ] {
            assert_eq!(column_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "  ",
            "a\nb",
            "a\0",
            "tab\there",
            &"x".repeat(MAX_COLUMN_NAME_CHARS + 1),
        ] {
            assert!(column_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn parses_paths() {
        let r = DatasetRef::parse_path("market/entities").unwrap();
        assert_eq!(r.to_string(), "market/entities");
        assert!(DatasetRef::parse_path("market").is_err());
        assert!(DatasetRef::parse_path("market/../x").is_err());
    }

    proptest! {
        #[test]
        fn validation_matches_the_regex(s in "\\PC{0,70}") {
            let expected = {
                let b = s.as_bytes();
                !b.is_empty() && b.len() <= 63 && b[0].is_ascii_lowercase()
                    && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
            };
            prop_assert_eq!(validate_name("x", &s).is_ok(), expected);
        }
    }
}
