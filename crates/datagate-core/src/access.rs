//! Open levels of datasets and sensitivity of columns (API.md §4).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The open level (开放属性) of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// 无条件开放: everyone may read it, anonymous callers too.
    Open,
    /// 有条件开放: listed for everyone, readable on an approved application.
    Conditional,
    /// 共享 (不予开放): shared among departments only.
    Shared,
}

impl AccessLevel {
    pub const ALL: [AccessLevel; 3] = [Self::Open, Self::Conditional, Self::Shared];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Conditional => "conditional",
            Self::Shared => "shared",
        }
    }

    /// The DCAT-US 1.1 `accessLevel` this open level corresponds to.
    pub fn dcat_access_level(self) -> &'static str {
        match self {
            Self::Open => "public",
            Self::Conditional => "restricted public",
            Self::Shared => "non-public",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown open level, sensitivity or mask name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct UnknownVariant {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for AccessLevel {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "conditional" => Ok(Self::Conditional),
            "shared" => Ok(Self::Shared),
            _ => Err(UnknownVariant {
                what: "access level",
                value: s.to_string(),
                expected: "open, conditional, shared",
            }),
        }
    }
}

/// How sensitive a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Served as published.
    #[default]
    Public,
    /// Served through the column's [`Mask`] to everyone outside the owning department.
    Masked,
    /// Never served outside the owning department and admins; absent from their schema.
    Private,
}

impl Sensitivity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Masked => "masked",
            Self::Private => "private",
        }
    }
}

impl FromStr for Sensitivity {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "masked" => Ok(Self::Masked),
            "private" => Ok(Self::Private),
            _ => Err(UnknownVariant {
                what: "sensitivity",
                value: s.to_string(),
                expected: "public, masked, private",
            }),
        }
    }
}

/// The mask a `masked` column is served through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// Keyed HMAC, stable per dataset so joins still work.
    Hash,
    /// Replaced by `***`.
    Redact,
    /// Chinese de-identification conventions (names `张*`, mobiles `138****1234`, ID numbers 6+4).
    Partial,
    /// Dates and timestamps truncated to the year.
    Year,
    /// Always NULL.
    Null,
}

impl Mask {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Redact => "redact",
            Self::Partial => "partial",
            Self::Year => "year",
            Self::Null => "null",
        }
    }
}

impl FromStr for Mask {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hash" => Ok(Self::Hash),
            "redact" => Ok(Self::Redact),
            "partial" => Ok(Self::Partial),
            "year" => Ok(Self::Year),
            "null" => Ok(Self::Null),
            _ => Err(UnknownVariant {
                what: "mask",
                value: s.to_string(),
                expected: "hash, redact, partial, year, null",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for l in AccessLevel::ALL {
            assert_eq!(l.as_str().parse::<AccessLevel>().unwrap(), l);
        }
        for s in [
            Sensitivity::Public,
            Sensitivity::Masked,
            Sensitivity::Private,
        ] {
            assert_eq!(s.as_str().parse::<Sensitivity>().unwrap(), s);
        }
        for m in [
            Mask::Hash,
            Mask::Redact,
            Mask::Partial,
            Mask::Year,
            Mask::Null,
        ] {
            assert_eq!(m.as_str().parse::<Mask>().unwrap(), m);
        }
        assert!("public".parse::<AccessLevel>().is_err());
    }
}
