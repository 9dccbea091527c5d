//! Every error a Flight SQL client can see, as a gRPC status: the same decisions as the HTTP
//! problem types, in gRPC's codes — `InvalidArgument` (with the line and column of a refused
//! or bad statement), `NotFound` (an unseen dataset exactly like a nonexistent one),
//! `PermissionDenied`, `Unauthenticated`, `ResourceExhausted` (with `retry-after` in the
//! metadata), `DeadlineExceeded`, `Unavailable`; `Internal` only for the gateway's own faults.

use datagate_access::Denied;
use datagate_access::fair_use::{Refused, RefusedKind};
use datagate_query::QueryError;
use datagate_query::execute::{FailureKind, StreamError};
use tonic::Status;
use tonic::metadata::MetadataValue;

/// A query error as a status.
pub fn query(e: QueryError) -> Status {
    use QueryError as E;
    match e {
        E::Invalid {
            message,
            position,
            parameter,
        } => {
            let mut text = message;
            if let Some(p) = position {
                text = format!("{text} (at line {}, column {})", p.line, p.column);
            }
            if let Some(name) = parameter {
                text = format!("{text} (parameter {name})");
            }
            Status::invalid_argument(text)
        }
        E::NotFound(m) => Status::not_found(m),
        E::Forbidden(m) => Status::permission_denied(m),
        e @ (E::MemoryLimit { .. } | E::OverLimit(_)) => Status::resource_exhausted(e.to_string()),
        e @ E::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        e @ E::ShuttingDown => Status::unavailable(e.to_string()),
        E::Panicked {
            overflow: true,
            message,
        } => Status::resource_exhausted(format!(
            "the query produced a value or batch too large for the engine ({}); narrow it",
            message.lines().next().unwrap_or_default()
        )),
        E::Catalog(c) => catalog(c),
        E::StorageUnavailable(m) => {
            tracing::error!(error = %m, "the warehouse is unavailable");
            Status::unavailable("the warehouse cannot be read right now; try again later")
        }
        E::WorkerLost(m) => {
            tracing::error!(error = %m, "a query worker failed mid-query");
            Status::unavailable("a query worker stopped answering while the query ran; retry")
        }
        e @ (E::Panicked { .. } | E::Internal(_)) => {
            tracing::error!(error = %e, "flight query failed");
            Status::internal(e.to_string())
        }
    }
}

/// A catalog error as a status.
pub fn catalog(e: datagate_catalog::CatalogError) -> Status {
    use datagate_catalog::CatalogError as C;
    match e {
        C::NotFound(m) => Status::not_found(format!("{m} not found")),
        C::AlreadyExists(m) => Status::already_exists(format!("{m} already exists")),
        C::Conflict(m) => Status::aborted(m),
        C::Invalid(m) => Status::invalid_argument(m),
        C::Backend(m) | C::Unavailable(m) => {
            tracing::error!(error = %m, "catalog failed");
            Status::unavailable(format!("the catalog cannot be read: {m}"))
        }
    }
}

/// A refused caller.
pub fn denied(e: Denied) -> Status {
    match e {
        Denied::Unauthenticated(m) => Status::unauthenticated(m),
        Denied::Forbidden(m) => Status::permission_denied(m),
        Denied::Catalog(c) => catalog(c),
    }
}

/// A fair-use refusal: `ResourceExhausted` for the caller's limits, `Unavailable` when the
/// gateway is full; `retry-after` (seconds) and the violated policy in the metadata.
pub fn refused(r: &Refused) -> Status {
    let mut status = match r.kind {
        RefusedKind::Overloaded => Status::unavailable(r.detail.clone()),
        _ => Status::resource_exhausted(r.detail.clone()),
    };
    let md = status.metadata_mut();
    md.insert("retry-after", MetadataValue::from(r.retry_after_secs));
    if let Some(policy) = &r.policy
        && let Ok(v) = MetadataValue::try_from(policy.as_str())
    {
        md.insert("x-violated-policy", v);
    }
    status
}

/// The error that ended a stream after its first batch.
pub fn mid_stream(e: StreamError) -> Status {
    match e.kind {
        FailureKind::Timeout => Status::deadline_exceeded(e.message),
        FailureKind::OverLimit => Status::resource_exhausted(e.message),
        FailureKind::Invalid => Status::invalid_argument(e.message),
        FailureKind::Unavailable => Status::unavailable(e.message),
        FailureKind::Internal => Status::internal(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_stream_ends_with_the_code_of_its_failure() {
        let cases = [
            (QueryError::Timeout(5), Code::DeadlineExceeded),
            (
                QueryError::MemoryLimit {
                    limit: 1,
                    detail: "sort".into(),
                },
                Code::ResourceExhausted,
            ),
            (
                QueryError::OverLimit("too wide".into()),
                Code::ResourceExhausted,
            ),
            (QueryError::Internal("disk".into()), Code::Internal),
            (
                QueryError::invalid_at("Cannot cast string 'x' to value of Int32 type", None),
                Code::InvalidArgument,
            ),
            (
                QueryError::WorkerLost("w1 closed".into()),
                Code::Unavailable,
            ),
            (
                QueryError::StorageUnavailable("no such file".into()),
                Code::Unavailable,
            ),
            (QueryError::ShuttingDown, Code::Unavailable),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = mid_stream(StreamError::from(error));
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
