//! Who may do what: one table of (role × action), consulted by every handler through
//! [`Caller::authorize`](crate::caller::Caller::authorize).
//!
//! Reading data is not in this table: whether a dataset is visible and readable depends on its
//! open level and the caller's grants, and is decided by [`datagate_query::policy`] when the
//! request's session catalog is built (404 for what the caller may not see, 403 for what it
//! sees but may not read).

use datagate_catalog::Role;

/// An action a request asks for. Department-bound actions name the department they touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Browse departments, datasets, versions, DCAT; `GET /me`.
    ReadCatalog,
    /// `POST /departments`.
    CreateDepartment,
    /// Register, edit, upload to, unpublish a dataset of the department.
    ManageDataset { department: &'a str },
    /// `POST/GET/DELETE /keys`.
    ManageKeys,
    /// Apply for a conditional dataset.
    Apply,
    /// List applications and grants (each role sees its own share).
    ListApplications,
    /// Approve or reject an application, revoke a grant, of the department's datasets.
    DecideApplication { department: &'a str },
    /// Read the audit trail.
    ReadAudit,
}

impl Action<'_> {
    /// What the action is, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Action::ReadCatalog => "read the catalog",
            Action::CreateDepartment => "create departments",
            Action::ManageDataset { .. } => "manage this department's datasets",
            Action::ManageKeys => "manage API keys",
            Action::Apply => "apply for datasets (consumer keys apply)",
            Action::ListApplications => "list applications and grants",
            Action::DecideApplication { .. } => "decide this department's applications",
            Action::ReadAudit => "read the audit trail",
        }
    }
}

/// The table: whether `role` (with `department` for publishers; `None` role = anonymous) may
/// perform `action`.
pub fn allowed(role: Option<Role>, department: Option<&str>, action: Action<'_>) -> bool {
    use Action as A;
    let own = |d: &str| role == Some(Role::Publisher) && department == Some(d);
    match (role, action) {
        (_, A::ReadCatalog) => true,
        (Some(Role::Admin), _) => true,
        (_, A::ManageDataset { department: d }) | (_, A::DecideApplication { department: d }) => {
            own(d)
        }
        (Some(Role::Consumer), A::Apply) => true,
        (Some(Role::Consumer | Role::Publisher), A::ListApplications) => true,
        (Some(Role::Auditor), A::ReadAudit) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role against every action, in both department relations, spelled out.
    #[test]
    fn the_table_walked_exhaustively() {
        use Action as A;
        #[derive(Clone, Copy, Debug)]
        enum Who {
            Anonymous,
            Consumer,
            PublisherOwn,
            PublisherOther,
            Auditor,
            Admin,
        }
        let whos = [
            Who::Anonymous,
            Who::Consumer,
            Who::PublisherOwn,
            Who::PublisherOther,
            Who::Auditor,
            Who::Admin,
        ];
        let actions = [
            A::ReadCatalog,
            A::CreateDepartment,
            A::ManageDataset {
                department: "justice",
            },
            A::ManageKeys,
            A::Apply,
            A::ListApplications,
            A::DecideApplication {
                department: "justice",
            },
            A::ReadAudit,
        ];
        // Rows: actions in the order above; columns: whos in the order above.
        let expected: [[bool; 6]; 8] = [
            // anon  consumer own    other  auditor admin
            [true, true, true, true, true, true], // read catalog
            [false, false, false, false, false, true], // create department
            [false, false, true, false, false, true], // manage dataset
            [false, false, false, false, false, true], // manage keys
            [false, true, false, false, false, true], // apply
            [false, true, true, true, false, true], // list applications
            [false, false, true, false, false, true], // decide application
            [false, false, false, false, true, true], // read audit
        ];
        for (ai, action) in actions.iter().enumerate() {
            for (wi, who) in whos.iter().enumerate() {
                let (role, dept) = match who {
                    Who::Anonymous => (None, None),
                    Who::Consumer => (Some(Role::Consumer), None),
                    Who::PublisherOwn => (Some(Role::Publisher), Some("justice")),
                    Who::PublisherOther => (Some(Role::Publisher), Some("market")),
                    Who::Auditor => (Some(Role::Auditor), None),
                    Who::Admin => (Some(Role::Admin), None),
                };
                assert_eq!(
                    allowed(role, dept, *action),
                    expected[ai][wi],
                    "{who:?} × {action:?}"
                );
            }
        }
    }
}
