//! The catalog interface.

use crate::grants::{Application, ApplicationFilter, Decision, Grant, GrantFilter, NewApplication};
use crate::keys::{ApiKey, NewApiKey};
use crate::model::*;
use async_trait::async_trait;
use chrono::NaiveDate;
use datagate_core::AccessLevel;

/// What can go wrong in a catalog operation.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A concurrent change won; the caller may retry from the new state.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot be used right now (locked past the busy timeout, read-only, full,
    /// unreadable); nothing committed is lost and it may come back.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption); not the caller's fault.
    #[error("catalog backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The catalog of departments, datasets and versions.
///
/// Implementations must pass [`crate::conformance`].
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// The request-rate state this catalog shares between gateways, if it is shared (a
    /// PostgreSQL catalog); `None` for one gateway alone.
    fn shared_rates(&self) -> Option<&dyn crate::rates::SharedRates> {
        None
    }

    /// Where this catalog lets gateways publish their datasets' usage counters, if it is
    /// shared; `None` for one gateway alone.
    fn shared_usage(&self) -> Option<&dyn crate::rates::SharedUsage> {
        None
    }

    /// Where gateways sharing this catalog agree on their secrets; `None` for one gateway.
    fn shared_secrets(&self) -> Option<&dyn crate::rates::SharedSecrets> {
        None
    }

    /// Where gateways sharing this catalog keep the portal's sessions; `None` for one gateway
    /// (which keeps them in memory).
    fn shared_sessions(&self) -> Option<&dyn crate::sessions::SharedSessions> {
        None
    }

    /// Creates a department; `AlreadyExists` if the id is taken.
    async fn create_department(&self, dept: NewDepartment) -> Result<Department>;
    /// Creates or updates a department; returns it and whether anything changed.
    async fn upsert_department(&self, dept: NewDepartment) -> Result<(Department, bool)>;
    async fn get_department(&self, id: &str) -> Result<Option<Department>>;
    /// All departments, each with the number of published datasets of `visible_levels`.
    async fn list_departments(
        &self,
        visible_levels: &[AccessLevel],
    ) -> Result<Vec<DepartmentSummary>>;

    /// Registers a dataset; `NotFound` if its department does not exist, `AlreadyExists` if
    /// the name is taken in the department (an unpublished dataset keeps its name).
    async fn create_dataset(&self, ds: NewDataset) -> Result<Dataset>;
    /// Replaces a dataset's descriptive metadata and primary key; returns whether it changed.
    async fn update_dataset_metadata(
        &self,
        department: &str,
        name: &str,
        metadata: DatasetMetadata,
        primary_key: Option<Vec<String>>,
    ) -> Result<(Dataset, bool)>;
    /// Sets the description, sensitivity and mask of existing columns by name (types are
    /// fixed by data); returns whether anything changed.
    async fn update_column_annotations(
        &self,
        department: &str,
        name: &str,
        columns: Vec<Column>,
    ) -> Result<bool>;
    /// A dataset, published or not.
    async fn get_dataset(&self, department: &str, name: &str) -> Result<Option<Dataset>>;
    /// Published datasets matching the filter, in its order (by department then name unless
    /// it says otherwise), `limit` and `offset` taken from that order.
    async fn list_datasets(&self, filter: &DatasetFilter) -> Result<DatasetPage>;
    /// What [`CatalogStore::list_datasets`] would match of `filter` (its `limit`, `offset`
    /// and order aside), counted by the fields a catalog is browsed by, sorted
    /// ([`DatasetFacets::sorted`]).
    async fn dataset_facets(&self, filter: &DatasetFilter) -> Result<DatasetFacets>;
    /// Hides a dataset; its versions and files are kept.
    async fn unpublish_dataset(&self, department: &str, name: &str) -> Result<()>;
    /// Makes an unpublished dataset visible again.
    async fn republish_dataset(&self, department: &str, name: &str) -> Result<()>;

    /// Commits the next version atomically; `Conflict` if the current version is no longer
    /// `base_version`.
    async fn commit_version(
        &self,
        department: &str,
        name: &str,
        version: NewVersion,
    ) -> Result<Version>;
    async fn get_version(
        &self,
        department: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<Version>>;
    /// [`CatalogStore::get_version`] of each `(department, dataset, version)`, in order: what
    /// a catalog of thousands of datasets needs to show their schemas, which a backend answers
    /// in one trip where it can.
    async fn get_versions(&self, keys: &[(String, String, i64)]) -> Result<Vec<Option<Version>>> {
        let mut found = Vec::with_capacity(keys.len());
        for (department, name, version) in keys {
            found.push(self.get_version(department, name, *version).await?);
        }
        Ok(found)
    }
    /// All versions, newest first.
    async fn list_versions(&self, department: &str, name: &str) -> Result<Vec<Version>> {
        Ok(self
            .list_versions_page(department, name, u64::MAX, 0)
            .await?
            .0)
    }
    /// At most `limit` versions, newest first, after skipping `offset`; and how many there are
    /// in all. Only the page's versions are loaded (a dataset appended to every hour has
    /// thousands).
    async fn list_versions_page(
        &self,
        department: &str,
        name: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Version>, u64)>;
    /// Forgets all but the newest `keep` versions of a dataset; returns the file paths that no
    /// remaining version of any dataset references (the caller deletes them).
    async fn expire_versions(&self, department: &str, name: &str, keep: u64)
    -> Result<Vec<String>>;
    /// Every file path referenced by any version of any dataset.
    async fn referenced_files(&self) -> Result<Vec<String>>;

    /// Stores a key; `AlreadyExists` if the id is taken.
    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey>;
    /// A key by id, revoked or not.
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// All keys, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKey>>;
    /// Marks a key revoked; `NotFound` if there is none.
    async fn revoke_key(&self, id: &str) -> Result<()>;
    /// Moves a key to another fair-use tier; `NotFound` if there is none.
    async fn set_key_tier(&self, id: &str, tier: &str) -> Result<ApiKey>;

    /// Bytes served on `day` (UTC) per caller (`key:<id>` or `ip:<addr>`), by every gateway
    /// on this catalog.
    async fn load_usage(&self, day: NaiveDate) -> Result<Vec<(String, u64)>>;
    /// Adds bytes served on `day` to the callers' counters (saturating at `i64::MAX`) and
    /// forgets earlier days. Each gateway adds what it served since its last call, so the
    /// counters are the cluster's sums.
    async fn add_usage(&self, day: NaiveDate, bytes: Vec<(String, u64)>) -> Result<()>;

    /// Files an application (pending); `NotFound` if the dataset or key does not exist.
    async fn create_application(&self, app: NewApplication) -> Result<Application>;
    async fn get_application(&self, id: &str) -> Result<Option<Application>>;
    /// Applications matching `filter`, newest first.
    async fn list_applications(&self, filter: &ApplicationFilter) -> Result<Vec<Application>>;
    /// Approves (creating the grant) or rejects a pending application, recording `by`;
    /// `Conflict` if it was already decided, `NotFound` if there is none.
    async fn decide_application(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
    ) -> Result<(Application, Option<Grant>)>;
    async fn get_grant(&self, id: &str) -> Result<Option<Grant>>;
    /// Grants matching `filter` (revoked and expired ones included), newest first.
    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>>;
    /// A key by id with every grant made to it (as [`CatalogStore::list_grants`] for its id):
    /// what authenticating a request reads, in one round trip where the backend can.
    async fn get_key_and_grants(&self, id: &str) -> Result<Option<(ApiKey, Vec<Grant>)>> {
        let Some(key) = self.get_key(id).await? else {
            return Ok(None);
        };
        let grants = self
            .list_grants(&GrantFilter {
                key_id: Some(key.id.clone()),
                ..Default::default()
            })
            .await?;
        Ok(Some((key, grants)))
    }
    /// Revokes a grant, recording `by`; `NotFound` if there is none. Revoking twice keeps the
    /// first revocation.
    async fn revoke_grant(&self, id: &str, by: &str) -> Result<Grant>;
}
