//! [`DbError`]: what a handler using [`DbConn`](crate::DbConn) or
//! [`DbTx`](crate::DbTx) can fail with, and the answer for each.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{
    error::PoolError,
    extract::{LeaseRejection, PrepareFailed},
    problem::Problem,
};

/// What a handler using [`DbConn`](crate::DbConn) or [`DbTx`](crate::DbTx)
/// can fail with: a lease refused, or a query failed. Handlers return
/// `Result<_, DbError>` and use `?` on both.
///
/// | error | status |
/// |---|---|
/// | [`DbError::Pool`] | as [`PoolError`] (503 with `Retry-After`, or 500) |
/// | `NotFound` from diesel | 404 |
/// | unique violation | 409 |
/// | a statement the server cancelled at the pool's `query_timeout` | 504 |
/// | the connection lost during the query (server gone, socket closed) | 503 with `Retry-After` |
/// | a commit the server refused | 500 `commit-failed`, "nothing was stored" |
/// | the connection lost while committing | 500 `commit-outcome-unknown`: the server may have stored it |
/// | an option the backend does not support | 500 naming it |
/// | any other diesel error | 500 |
///
/// The body never holds SQL, values or credentials: the detail goes to the
/// log (`tracing`, level `error` for 500s).
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use axum_pools::DbError;
///
/// let response = DbError::from(diesel::result::Error::NotFound).into_response();
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No connection could be leased.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A query (or `BEGIN`) failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// `COMMIT` failed: the server refused it and the transaction's changes
    /// were not stored, or the connection was lost while committing and
    /// whether they were is unknown ([`commit_outcome_unknown`](Self::commit_outcome_unknown)).
    #[error("the transaction could not be committed: {0}")]
    Commit(#[source] diesel::result::Error),
    /// A transaction option the backend does not support.
    #[error("{backend} does not support {option}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The option and what to do instead.
        option: &'static str,
    },
}

impl DbError {
    /// The HTTP status this error answers with.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// let e = axum_pools::DbError::from(diesel::result::Error::RollbackTransaction);
    /// assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Pool(e) => e.status(),
            Self::Query(Error::NotFound) => StatusCode::NOT_FOUND,
            Self::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                StatusCode::CONFLICT
            }
            Self::Query(e) if cancelled_at_statement_timeout(e) => StatusCode::GATEWAY_TIMEOUT,
            Self::Query(e) if connection_lost(e) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The connection was lost (server gone, socket closed or cut at
/// `query_timeout`), so what the server did with the last statement is
/// unknown.
fn connection_lost(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        e,
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        )
    )
}

impl DbError {
    /// A [`Commit`](Self::Commit) whose connection was lost while
    /// committing: the server may have stored the transaction or not, so a
    /// client should check before it tries again.
    ///
    /// ```
    /// use diesel::result::{DatabaseErrorKind, Error};
    ///
    /// let lost = Error::DatabaseError(DatabaseErrorKind::ClosedConnection, Box::new("closed".to_owned()));
    /// assert!(axum_pools::DbError::Commit(lost).commit_outcome_unknown());
    /// let refused = Error::DatabaseError(DatabaseErrorKind::SerializationFailure, Box::new("conflict".to_owned()));
    /// assert!(!axum_pools::DbError::Commit(refused).commit_outcome_unknown());
    /// ```
    #[must_use]
    pub fn commit_outcome_unknown(&self) -> bool {
        matches!(self, Self::Commit(e) if connection_lost(e))
    }

    /// Status, problem slug, title and the detail that may be sent (no
    /// SQL, no values).
    fn problem(&self) -> (StatusCode, &'static str, &'static str, String) {
        let status = self.status();
        let (slug, title, detail) = match self {
            Self::Pool(e) => (e.slug(), "Pool error", e.to_string()),
            Self::Query(_) if status == StatusCode::NOT_FOUND => {
                ("not-found", "Not found", "no matching row".to_owned())
            }
            Self::Query(_) if status == StatusCode::GATEWAY_TIMEOUT => (
                "query-timeout",
                "Query timed out",
                "the database cancelled a query that ran longer than the pool's query_timeout"
                    .to_owned(),
            ),
            Self::Query(_) if status == StatusCode::SERVICE_UNAVAILABLE => (
                "backend-unavailable",
                "Backend unavailable",
                "the connection to the database was lost during the query; retry later".to_owned(),
            ),
            Self::Query(_) if status == StatusCode::CONFLICT => (
                "conflict",
                "Conflict",
                "a row with the same unique values already exists".to_owned(),
            ),
            Self::Query(_) => (
                "database-error",
                "Database error",
                "the database query failed".to_owned(),
            ),
            Self::Commit(_) if self.commit_outcome_unknown() => (
                "commit-outcome-unknown",
                "Transaction outcome unknown",
                "the connection to the database was lost while committing; the transaction may or may not have been stored".to_owned(),
            ),
            Self::Commit(_) => (
                "commit-failed",
                "Transaction not committed",
                "the transaction could not be committed; nothing was stored".to_owned(),
            ),
            Self::Unsupported { .. } => ("unsupported", "Unsupported option", self.to_string()),
        };
        (status, slug, title, detail)
    }
}

/// A statement the server cancelled at the statement timeout the pool set
/// from its `query_timeout`, by the server's own words (Postgres, SQLSTATE
/// 57014, which diesel does not expose; MariaDB; MySQL). A server whose
/// `lc_messages` is not English is not recognised: its answer stays 500.
fn cancelled_at_statement_timeout(e: &diesel::result::Error) -> bool {
    let diesel::result::Error::DatabaseError(_, info) = e else {
        return false;
    };
    let message = info.message();
    [
        "canceling statement due to statement timeout",
        "max_statement_time exceeded",
        "maximum statement execution time exceeded",
    ]
    .iter()
    .any(|words| message.contains(words))
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        if let Self::Pool(e) = self {
            return e.into_response();
        }
        let (status, slug, title, detail) = self.problem();
        // The error carries no pool: the one this request leased from last.
        let pool = crate::layer::leased_pool();
        let pool = pool.as_deref().unwrap_or("unknown");
        if status.is_server_error() {
            tracing::error!(pool, error = %self, "database error answered {status}");
        } else {
            tracing::debug!(pool, error = %self, "database error answered {status}");
        }
        Problem::new(status, slug, title, detail).into_response()
    }
}

/// A `DbTx` that could not begin rejects the request as the error would
/// answer.
impl From<DbError> for LeaseRejection {
    fn from(e: DbError) -> Self {
        if let DbError::Pool(e) = e {
            return Self::Pool(e);
        }
        let (status, slug, title, detail) = e.problem();
        Self::Prepare(PrepareFailed::new(status, slug, title, detail).caused_by(None, e))
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::*;

    #[test]
    fn a_connection_lost_mid_query_answers_503_and_a_cancelled_statement_504() {
        let lost = |kind| {
            DbError::from(Error::DatabaseError(
                kind,
                Box::new("connection closed".to_owned()),
            ))
        };
        for kind in [
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            let response = lost(kind).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
            // A `DbTx` whose BEGIN lost its connection rejects the same way.
            let response = LeaseRejection::from(lost(kind)).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let cancelled = DbError::from(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to statement timeout".to_owned()),
        ));
        assert_eq!(cancelled.status(), StatusCode::GATEWAY_TIMEOUT);
        let other = DbError::from(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("syntax error".to_owned()),
        ));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_commit_the_server_refused_stored_nothing_one_whose_connection_was_lost_may_have() {
        let commit =
            |kind| DbError::Commit(Error::DatabaseError(kind, Box::new("commit".to_owned())));
        let (status, slug, _, detail) = commit(DatabaseErrorKind::SerializationFailure).problem();
        assert_eq!(
            (status, slug),
            (StatusCode::INTERNAL_SERVER_ERROR, "commit-failed")
        );
        assert!(detail.contains("nothing was stored"), "{detail}");
        for kind in [
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            let (status, slug, _, detail) = commit(kind).problem();
            assert_eq!(
                (status, slug),
                (StatusCode::INTERNAL_SERVER_ERROR, "commit-outcome-unknown")
            );
            assert!(detail.contains("may or may not"), "{detail}");
        }
    }
}
