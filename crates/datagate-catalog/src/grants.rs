//! Applications for conditional datasets and the grants they become (API.md §5 "Applications
//! and grants"). A consumer applies with a purpose; the owning department (or an admin) approves
//! — the application becomes a grant, optionally expiring — or rejects it with a reason; a grant
//! can be revoked. Each transition records who made it and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationStatus {
    Pending,
    Approved,
    Rejected,
}

impl ApplicationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

impl FromStr for ApplicationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            other => Err(format!(
                "unknown status {other:?}; use pending, approved or rejected"
            )),
        }
    }
}

/// A consumer's application to read a conditional dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub id: String,
    pub department: String,
    pub dataset: String,
    /// The applying key's id.
    pub applicant: String,
    pub purpose: String,
    pub status: ApplicationStatus,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Why it was rejected.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewApplication {
    pub department: String,
    pub dataset: String,
    pub applicant: String,
    pub purpose: String,
}

/// How an application is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Approve { expires_at: Option<DateTime<Utc>> },
    Reject { reason: String },
}

/// A key's right to read one conditional dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub application_id: String,
    pub key_id: String,
    pub department: String,
    pub dataset: String,
    pub created_at: DateTime<Utc>,
    /// Who approved it.
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl Grant {
    /// Whether the grant gives access at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Which applications to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplicationFilter {
    pub applicant: Option<String>,
    pub department: Option<String>,
    pub status: Option<ApplicationStatus>,
}

/// Which grants to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantFilter {
    pub key_id: Option<String>,
    pub department: Option<String>,
}
