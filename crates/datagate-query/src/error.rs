//! What can go wrong with a query, in the terms a client is answered in.
//!
//! DataFusion's errors are sorted here once ([`QueryError::from_datafusion`]): what the query
//! itself got wrong is [`QueryError::Invalid`] (with the position when known), a memory-pool
//! refusal is [`QueryError::MemoryLimit`], and only storage and internal failures are
//! [`QueryError::Internal`], whose text is logged, never sent.

use datafusion::error::DataFusionError;
use datagate_catalog::CatalogError;

/// Where in the SQL (or `where` text) a problem is, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A malformed or refused query (400).
    #[error("{message}")]
    Invalid {
        message: String,
        position: Option<Position>,
        /// The request parameter at fault (`where`, `order`, `select`, ...), when there is one.
        parameter: Option<&'static str>,
    },
    /// An unknown or invisible dataset or version (404).
    #[error("{0}")]
    NotFound(String),
    /// A dataset the caller sees but may not read (403).
    #[error("{0}")]
    Forbidden(String),
    /// The query needed more memory than its limit (422).
    #[error("the query needs more memory than its limit of {limit} bytes: {detail}")]
    MemoryLimit { limit: u64, detail: String },
    /// The query ran past its time limit (504).
    #[error("the query ran past its time limit of {0} ms")]
    Timeout(u64),
    /// The query is beyond a cost or size budget: refused before it runs, or stopped before an
    /// allocation beyond its caps (422).
    #[error("{0}")]
    OverLimit(String),
    /// The gateway is shutting down and stopped the query (503).
    #[error("the gateway is shutting down; the query was stopped")]
    ShuttingDown,
    /// The engine panicked while running the query (caught: only this request fails). Size
    /// overflows inside Arrow are the query's doing (422); anything else is a server bug (500).
    #[error("the query failed inside the engine: {message}")]
    Panicked { message: String, overflow: bool },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The warehouse cannot be read right now (files missing, unreadable, the store down): 503,
    /// nothing is lost; the text is for the logs.
    #[error("{0}")]
    StorageUnavailable(String),
    /// A distributed query's worker stopped answering mid-query (killed, unreachable): 503,
    /// worth a retry, which runs on the workers still up (or in the gateway); the text is for
    /// the logs.
    #[error("{0}")]
    WorkerLost(String),
    /// Storage or internal failures; the text is for the logs.
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            position: None,
            parameter: None,
        }
    }

    pub fn invalid_at(message: impl Into<String>, position: Option<Position>) -> Self {
        Self::Invalid {
            message: message.into(),
            position,
            parameter: None,
        }
    }

    /// A caught panic, sorted by its message.
    pub fn panicked(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = crate::executor::panic_message(payload.as_ref());
        tracing::error!(panic = %message, "query panicked; the request fails, the gateway goes on");
        metrics::counter!("datagate_query_panics_total").increment(1);
        let lower = message.to_ascii_lowercase();
        let overflow = ["overflow", "capacity", "too large", "exceeds"]
            .iter()
            .any(|w| lower.contains(w));
        Self::Panicked { message, overflow }
    }

    /// Names the request parameter an `Invalid` error is about.
    pub fn in_parameter(self, name: &'static str) -> Self {
        match self {
            Self::Invalid {
                message, position, ..
            } => Self::Invalid {
                message: format!("{name}: {message}"),
                position,
                parameter: Some(name),
            },
            other => other,
        }
    }

    /// Sorts a DataFusion error; `memory_limit` is quoted when the memory pool refused.
    pub fn from_datafusion(e: DataFusionError, memory_limit: u64) -> Self {
        let position = e
            .diagnostic()
            .and_then(|d| d.span)
            .filter(|s| s.start.line > 0)
            .map(|s| Position {
                line: s.start.line,
                column: s.start.column,
            });
        if worker_lost(&e) {
            metrics::counter!("datagate_worker_failures_total").increment(1);
            return Self::WorkerLost(e.to_string());
        }
        let root = e.find_root();
        if storage_unavailable(root) {
            return Self::StorageUnavailable(e.to_string());
        }
        // The analyzer's type coercion reports some types that do not fit (a boolean BETWEEN
        // numbers) as internal errors: they are the query's types.
        if let DataFusionError::Internal(m) = root
            && in_context(&e, "type_coercion")
        {
            return Self::invalid_at(clean(m), position);
        }
        match root {
            DataFusionError::ResourcesExhausted(m) => Self::MemoryLimit {
                limit: memory_limit,
                detail: first_line(m),
            },
            DataFusionError::SQL(parser_error, _) => {
                let message = parser_error.to_string();
                let position = position.or_else(|| parser_position(&message));
                Self::invalid_at(clean(&message), position)
            }
            DataFusionError::Plan(m)
            | DataFusionError::NotImplemented(m)
            | DataFusionError::Configuration(m)
            | DataFusionError::Execution(m) => Self::invalid_at(clean(m), position),
            DataFusionError::SchemaError(s, _) => Self::invalid_at(clean(&s.to_string()), position),
            // Arrow errors at run time come from the query's own expressions (a bad cast, a
            // division by zero, an overflow).
            DataFusionError::ArrowError(a, _) => match a.as_ref() {
                arrow::error::ArrowError::ExternalError(inner) if inner.is::<regex::Error>() => {
                    Self::invalid_at(format!("invalid regular expression: {inner}"), position)
                }
                arrow::error::ArrowError::IoError(..)
                | arrow::error::ArrowError::ExternalError(_) => Self::Internal(e.to_string()),
                other => Self::invalid_at(clean(&other.to_string()), position),
            },
            DataFusionError::ParquetError(p) if let Some(m) = failed_filter(p) => {
                Self::invalid_at(m, position)
            }
            // A pattern that does not compile is the query's fault, whichever rule met it.
            DataFusionError::External(inner)
                if inner.is::<regex::Error>() || inner.is::<regex_syntax::Error>() =>
            {
                Self::invalid_at(format!("invalid regular expression: {inner}"), position)
            }
            DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>() {
                Some(QueryError::OverLimit(m)) => Self::OverLimit(m.clone()),
                Some(QueryError::Catalog(c)) => Self::Internal(c.to_string()),
                Some(q) => Self::Internal(q.to_string()),
                None => Self::Internal(e.to_string()),
            },
            _ => Self::Internal(e.to_string()),
        }
    }

    /// Whether the client is at fault (a 4xx), as opposed to the server.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::Internal(_)
                | Self::StorageUnavailable(_)
                | Self::WorkerLost(_)
                | Self::Catalog(CatalogError::Backend(_) | CatalogError::Unavailable(_))
                | Self::Panicked {
                    overflow: false,
                    ..
                }
        )
    }
}

/// Whether `e`, or what caused it, is an object missing from the store or an I/O fault.
pub(crate) fn storage_fault(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        ) {
            return true;
        }
        cause = c.source();
    }
    datagate_core::fault::StorageFault::of(e).is_some()
}

impl QueryError {
    /// A Parquet read that failed: the warehouse's fault (503) when a file is missing or
    /// unreadable, else internal.
    pub fn from_parquet(e: parquet::errors::ParquetError) -> Self {
        if storage_fault(&e) {
            Self::StorageUnavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// Whether `e` comes from the link to a worker failing (the worker gone, the connection
/// broken, a call refused), not from the query: errors a worker's plan raised come back as the
/// DataFusion errors they were, while a failed call surfaces as a gRPC status or a transport
/// error, or as the connection message of `datafusion-distributed`.
fn worker_lost(e: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<tonic::Status>() || c.is::<tonic::transport::Error>() {
            return true;
        }
        if let Some(DataFusionError::Execution(m)) = c.downcast_ref::<DataFusionError>()
            && m.contains("Distributed DataFusion worker")
        {
            return true;
        }
        cause = match c.downcast_ref::<DataFusionError>() {
            // `source()` of these is the inner error itself.
            Some(DataFusionError::External(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::Shared(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::Context(_, inner)) => Some(inner.as_ref()),
            _ => c.source(),
        };
    }
    false
}

/// Whether `e` is the warehouse failing (a file missing or unreadable), not the query.
fn storage_unavailable(e: &DataFusionError) -> bool {
    use datagate_core::fault::StorageFault;
    let faulty = storage_fault;
    match e {
        DataFusionError::ObjectStore(os) => faulty(os.as_ref()),
        DataFusionError::IoError(io) => StorageFault::of_io(io).is_some(),
        DataFusionError::ParquetError(p) => faulty(p.as_ref()),
        DataFusionError::External(inner) => faulty(inner.as_ref()),
        _ => false,
    }
}

/// Whether `e` was raised inside the step DataFusion names `step` (an analyzer or optimizer
/// rule adds its name as the error's context).
fn in_context(e: &DataFusionError, step: &str) -> bool {
    let mut e = e;
    loop {
        match e {
            DataFusionError::Context(name, inner) => {
                if name == step {
                    return true;
                }
                e = inner;
            }
            DataFusionError::Shared(inner) => e = inner,
            _ => return false,
        }
    }
}

/// What DataFusion's Parquet row filter says when the filter it evaluates inside the reader
/// fails: the query's own predicate failing on a row (a text column compared with a number),
/// which above the scan is the query's fault like any run-time error of its expressions.
const FILTER_FAILED: &str = "Error evaluating filter predicate: ";

/// The message of a pushed-down filter that failed, from the error the Parquet reader wraps
/// it in (`ComputeError("Error evaluating filter predicate: {DataFusionError:?}")`): the first
/// quoted text of that debug form, or all of it.
fn failed_filter(p: &parquet::errors::ParquetError) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(p);
    while let Some(c) = cause {
        if let Some(arrow::error::ArrowError::ComputeError(m)) =
            c.downcast_ref::<arrow::error::ArrowError>()
            && let Some(inner) = m.strip_prefix(FILTER_FAILED)
        {
            return Some(first_quoted(inner).unwrap_or_else(|| inner.to_string()));
        }
        cause = match c.downcast_ref::<parquet::errors::ParquetError>() {
            Some(parquet::errors::ParquetError::External(inner)) => Some(inner.as_ref()),
            _ => c.source(),
        };
    }
    None
}

/// The first double-quoted string of a debug text, unescaped.
fn first_quoted(debug: &str) -> Option<String> {
    let mut chars = debug[debug.find('"')? + 1..].chars();
    let mut out = String::new();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            ch => out.push(ch),
        }
    }
    None
}

/// The first line of a memory-pool message, without its (internal) consumer listing.
fn first_line(m: &str) -> String {
    let line = m.lines().next().unwrap_or_default();
    line.split(" with top memory consumers")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

/// DataFusion's messages, without the internal-bug boilerplate or backtraces.
fn clean(m: &str) -> String {
    let m = m
        .split(DataFusionError::BACK_TRACE_SEP)
        .next()
        .unwrap_or_default();
    // DataFusion prints an internal error with a request to file a bug with DataFusion, also
    // when one is quoted inside a planning error over the query's own types (`date_trunc` of
    // a number): for a client of the gateway that is noise, and the mistake is theirs.
    let m = m
        .replace(&format!(".\n{DATAFUSION_BUG_REPORT}"), "")
        .replace(DATAFUSION_BUG_REPORT, "");
    // A hint to build DataFusion with another feature speaks to whoever builds the engine; to
    // a client the thing is simply not there (arrays are left out on purpose: README, "Hostile
    // queries").
    let m = match m.find(" Hint: Please try with `") {
        Some(at) if m[at..].contains("DataFusion feature enabled") => format!(
            "{}: not available in this gateway",
            m[..at].trim_end().trim_end_matches('.')
        ),
        _ => m,
    };
    // A decimal average that does not fit its answer's type (the argument's precision plus
    // four, at most 38, and four more fractional digits): say so, and how to have it anyway.
    let m = match m.trim() {
        "Arithmetic Overflow in AvgAccumulator" => "Arithmetic overflow: the average does not fit \
            its decimal type, which keeps four more fractional digits than the argument's within \
            38 digits; cast the argument to DOUBLE for an approximate average"
            .to_string(),
        _ => m,
    };
    // The way out DataFusion offers for a name's case is a setting, which clients cannot
    // change (`SET` is refused): the quotes it also names are the way.
    let m = m.replace(
        " or disable the datafusion.sql_parser.enable_ident_normalization configuration",
        "",
    );
    let m = m.trim();
    m.strip_prefix("Internal error: ").unwrap_or(m).to_string()
}

/// What DataFusion appends to an internal error's message (`DataFusionError::Internal`'s
/// `Display`).
const DATAFUSION_BUG_REPORT: &str = "This issue was likely caused by a bug in DataFusion's code. \
    Please help us to resolve this by filing a bug report in our issue tracker: \
    https://github.com/apache/datafusion/issues";

/// sqlparser writes positions as `... at Line: 1, Column: 8`.
fn parser_position(message: &str) -> Option<Position> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(',')?;
    let column = rest.trim().strip_prefix("Column: ")?;
    let column: String = column.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(Position {
        line: line.trim().parse().ok()?,
        column: column.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_down_filter_that_fails_is_the_querys_fault() {
        let inner = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::CastError(
                "Cannot cast string 'BL\"1' to value of Int64 type".into(),
            )),
            Some(String::new()),
        );
        let wrapped = DataFusionError::ParquetError(Box::new(
            parquet::errors::ParquetError::External(Box::new(
                arrow::error::ArrowError::ComputeError(format!("{FILTER_FAILED}{inner:?}")),
            )),
        ));
        let e = QueryError::from_datafusion(wrapped, 0);
        assert!(e.is_client_error(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "Cannot cast string 'BL\"1' to value of Int64 type"
        );
        // Any other Parquet error stays the server's.
        let other = DataFusionError::ParquetError(Box::new(
            parquet::errors::ParquetError::General("corrupt page".into()),
        ));
        assert!(!QueryError::from_datafusion(other, 0).is_client_error());
    }

    #[test]
    fn client_messages_carry_no_request_to_file_a_datafusion_bug() {
        // The shape of a planning error quoting an internal one (date_trunc of a number).
        let quoted = DataFusionError::Internal("Function 'date_trunc' failed to match".into());
        let plan = DataFusionError::Plan(format!(
            "{quoted}. No function matches 'date_trunc(Utf8, Int64)'."
        ));
        let e = QueryError::from_datafusion(plan, 0);
        assert!(e.is_client_error());
        assert_eq!(
            e.to_string(),
            "Function 'date_trunc' failed to match. No function matches 'date_trunc(Utf8, Int64)'."
        );
    }

    #[tokio::test]
    async fn a_names_case_is_mended_with_quotes_not_a_setting() {
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (\"Name\" TEXT)").await.unwrap();
        let e = ctx.sql("SELECT Name FROM t").await.unwrap_err();
        assert!(e.to_string().contains("enable_ident_normalization"), "{e}");
        let e = QueryError::from_datafusion(e, 0).to_string();
        assert!(!e.contains("configuration"), "{e}");
        assert!(e.contains("You can use double quotes"), "{e}");
    }

    #[tokio::test]
    async fn a_decimal_average_beyond_its_type_says_how_to_have_it() {
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        let e = ctx
            .sql(
                "SELECT avg(a) FROM (VALUES (CAST('85070591730234615865843651857942052865' \
                 AS DECIMAL(38,0)))) t(a)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        let e = QueryError::from_datafusion(e, 0);
        assert!(e.is_client_error());
        assert!(e.to_string().contains("cast the argument to DOUBLE"), "{e}");
    }

    #[test]
    fn types_the_analyzer_cannot_coerce_are_the_querys() {
        let coercion = DataFusionError::Internal(
            "Failed to coerce types Boolean and Float64 in BETWEEN expression".into(),
        )
        .context("type_coercion");
        let e = QueryError::from_datafusion(coercion, 0);
        assert!(e.is_client_error(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "Failed to coerce types Boolean and Float64 in BETWEEN expression"
        );
        let elsewhere = DataFusionError::Internal("a bug".into()).context("another_rule");
        assert!(!QueryError::from_datafusion(elsewhere, 0).is_client_error());
    }

    #[test]
    fn parser_positions_are_read_from_messages() {
        assert_eq!(
            parser_position(
                "sql parser error: Expected: end of statement, found: x at Line: 3, Column: 17"
            ),
            Some(Position {
                line: 3,
                column: 17
            })
        );
        assert_eq!(parser_position("no position here"), None);
    }

    #[test]
    fn memory_refusals_and_plan_errors_are_sorted() {
        let e = DataFusionError::ResourcesExhausted("Failed to allocate".into()).context("x");
        assert!(matches!(
            QueryError::from_datafusion(e, 10),
            QueryError::MemoryLimit { limit: 10, .. }
        ));
        let e = DataFusionError::Plan("table 'x' not found".into());
        assert!(matches!(
            QueryError::from_datafusion(e, 10),
            QueryError::Invalid { .. }
        ));
        let syntax = regex_syntax::Parser::new().parse("(").unwrap_err();
        let e = DataFusionError::External(Box::new(syntax)).context("Invalid regex");
        assert!(QueryError::from_datafusion(e, 10).is_client_error());
        // Built at run time: clippy refuses an invalid regex literal, which this one is on purpose.
        let unclosed = String::from("(");
        let bad = regex::Regex::new(&unclosed).unwrap_err();
        let e = DataFusionError::External(Box::new(bad.clone())).context("Invalid regex");
        assert!(QueryError::from_datafusion(e, 10).is_client_error());
        let e = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::ExternalError(Box::new(bad))),
            None,
        )
        .context("Invalid regex");
        assert!(QueryError::from_datafusion(e, 10).is_client_error());
        let e = DataFusionError::IoError(std::io::Error::other("disk"));
        assert!(!QueryError::from_datafusion(e, 10).is_client_error());
    }
}
