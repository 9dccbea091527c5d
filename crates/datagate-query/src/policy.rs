//! Who may see and read what (API.md §4), decided in this one place.
//!
//! The HTTP layer turns a request's key into a [`Principal`]; the catalog API asks it which
//! entries to list, and the per-request query catalog asks it which datasets to hold, so a
//! dataset a caller may not read is simply absent from every query path.

use datagate_catalog::{Dataset, Role};
use datagate_core::AccessLevel;

/// The principal of one request: a key's role and department, or anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key id; `None` for the anonymous principal.
    pub key_id: Option<String>,
    pub role: Option<Role>,
    /// The department a publisher key is bound to.
    pub department: Option<String>,
    /// `(department, dataset)` of the conditional datasets an active grant opens to this key.
    pub grants: Vec<(String, String)>,
}

impl Principal {
    pub const ANONYMOUS: Principal = Principal {
        key_id: None,
        role: None,
        department: None,
        grants: Vec::new(),
    };

    /// Whether this principal may see the engine's internals: warehouse file paths in
    /// `EXPLAIN`, engine settings (admins only).
    pub fn sees_internals(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// The open levels whose catalog entries this principal sees.
    pub fn visible_levels(&self) -> Vec<AccessLevel> {
        match self.role {
            Some(Role::Admin | Role::Publisher | Role::Auditor) => AccessLevel::ALL.to_vec(),
            Some(Role::Consumer) | None => vec![AccessLevel::Open, AccessLevel::Conditional],
        }
    }

    /// Whether the catalog entry of a dataset at `level` is visible.
    pub fn sees_entry(&self, level: AccessLevel) -> bool {
        self.visible_levels().contains(&level)
    }

    /// Whether this principal administers `department`'s datasets: admins, and its publishers.
    pub fn manages(&self, department: &str) -> bool {
        match self.role {
            Some(Role::Admin) => true,
            Some(Role::Publisher) => self.department.as_deref() == Some(department),
            _ => false,
        }
    }

    /// Whether `private` columns of `department`'s datasets exist for this principal.
    pub fn sees_private(&self, department: &str) -> bool {
        self.manages(department)
    }

    /// Whether this principal may read the data of `dataset` (API.md §4): open data is for
    /// everyone; conditional data for keys holding an active grant, its own department and
    /// admins; shared data for publishers of any department and admins.
    pub fn reads(&self, dataset: &Dataset) -> bool {
        if dataset.unpublished_at.is_some() {
            return false;
        }
        match dataset.metadata.access_level {
            AccessLevel::Open => true,
            AccessLevel::Conditional => {
                self.manages(&dataset.department)
                    || self
                        .grants
                        .iter()
                        .any(|(d, n)| *d == dataset.department && *n == dataset.name)
            }
            AccessLevel::Shared => matches!(self.role, Some(Role::Admin | Role::Publisher)),
        }
    }

    /// A short tag naming how this principal sees data (what it may read and which columns
    /// come masked); two principals with the same tag get the same bytes for the same query.
    pub fn view_tag(&self) -> String {
        match (self.role, &self.department) {
            (None, _) => "anonymous".into(),
            (Some(Role::Publisher), Some(d)) => format!("publisher:{d}"),
            (Some(r), _) => r.as_str().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, department: Option<&str>) -> Principal {
        Principal {
            key_id: Some("k".into()),
            role: Some(role),
            department: department.map(str::to_string),
            grants: Vec::new(),
        }
    }

    #[test]
    fn catalog_visibility_follows_the_access_table() {
        assert!(!Principal::ANONYMOUS.sees_entry(AccessLevel::Shared));
        assert!(Principal::ANONYMOUS.sees_entry(AccessLevel::Conditional));
        assert!(!key(Role::Consumer, None).sees_entry(AccessLevel::Shared));
        for r in [Role::Admin, Role::Publisher, Role::Auditor] {
            assert!(key(r, Some("market")).sees_entry(AccessLevel::Shared));
        }
    }

    #[test]
    fn publishers_manage_only_their_department() {
        let p = key(Role::Publisher, Some("market"));
        assert!(p.manages("market"));
        assert!(!p.manages("justice"));
        assert!(key(Role::Admin, None).manages("justice"));
        assert!(!key(Role::Auditor, None).manages("justice"));
        assert_ne!(
            p.view_tag(),
            key(Role::Publisher, Some("justice")).view_tag()
        );
    }
}
