//! The one way handlers read a query string.
//!
//! # The rule for repeated keys
//! Every key is read one of two ways, and the handler says which:
//!
//! - [`QueryParams::list`] — a list (`?role=a&role=b,c`): every occurrence counts, and each
//!   may also be comma-separated; blanks are dropped. Repeating the key is how a list is sent.
//! - [`QueryParams::single`] — one value (`?limit=10`): a key that appears more than once is
//!   refused with [`QueryError::Repeated`], never resolved by picking one of the values.
//!
//! Before this module three helpers disagreed: the pages took the first value of a repeated
//! key, the admin API took the last, and `DELETE /v1/sessions?scope=` read `scope` as a list.
//! No test relied on any of them. Refusing is the one rule that cannot be wrong.
//!
//! # Security
//! A proxy, a cache or a log may read a repeated key differently from us (first wins in one,
//! last in another: HTTP parameter pollution); refusing the ambiguity means the value we act
//! on is the only value there was. It is also what a typed `serde` query (axum's `Query`)
//! does with a repeated field, so the API document and the handlers agree.

use std::convert::Infallible;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::problem::Problem;

/// A request's query string, decoded once (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct QueryParams {
    pairs: Vec<(String, String)>,
}

/// Why a query value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum QueryError {
    /// A key meant to appear once appeared more than once.
    Repeated(String),
    /// A key that must be a number was not one.
    NotANumber(String),
}

impl From<QueryError> for Problem {
    fn from(error: QueryError) -> Problem {
        match error {
            QueryError::Repeated(key) => {
                Problem::bad_request(format!("{key} may appear only once in the query"))
            }
            QueryError::NotANumber(key) => Problem::bad_request(format!("{key} must be a number")),
        }
    }
}

impl QueryParams {
    /// Decodes a raw query string (`None` or empty: no parameters).
    pub(super) fn parse(query: Option<&str>) -> QueryParams {
        QueryParams {
            pairs: form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// Every value of a list key: all occurrences, each split on commas, trimmed, blanks
    /// dropped.
    pub(super) fn list(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The value of a key meant to appear once: `None` when absent, an error when repeated.
    pub(super) fn single<'a>(&'a self, key: &str) -> Result<Option<&'a str>, QueryError> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            None => Ok(first),
            Some(_) => Err(QueryError::Repeated(key.to_owned())),
        }
    }

    /// The value of a single key parsed as a number (or any [`FromStr`] type).
    pub(super) fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, QueryError> {
        self.single(key)?
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| QueryError::NotANumber(key.to_owned()))
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(QueryParams::parse(parts.uri.query()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keys_are_repeatable_and_comma_separated() {
        let q = QueryParams::parse(Some("role=a&role=b,c&permission=x"));
        assert_eq!(q.list("role"), vec!["a", "b", "c"]);
        let q = QueryParams::parse(Some("role=a&role=b,%20c,&permission=x"));
        assert_eq!(q.list("role"), vec!["a", "b", "c"]);
        assert_eq!(q.list("permission"), vec!["x"]);
        assert!(QueryParams::parse(None).list("role").is_empty());
    }

    #[test]
    fn single_keys_are_decoded_and_absent_is_none() {
        let q = QueryParams::parse(Some("rd=https%3A%2F%2Fa.example%2Fx&error=a+b&empty="));
        assert_eq!(q.single("rd"), Ok(Some("https://a.example/x")));
        assert_eq!(q.single("error"), Ok(Some("a b")));
        assert_eq!(q.single("empty"), Ok(Some("")));
        assert_eq!(q.single("missing"), Ok(None));
    }

    /// Parameter pollution: neither the first nor the last of a repeated key is taken.
    #[test]
    fn a_repeated_single_key_is_refused() {
        let q = QueryParams::parse(Some("rd=%2Fsafe&rd=https%3A%2F%2Fevil.example&limit=1"));
        assert_eq!(q.single("rd"), Err(QueryError::Repeated("rd".into())));
        assert_eq!(
            q.number::<usize>("rd"),
            Err(QueryError::Repeated("rd".into()))
        );
        let problem = Problem::from(QueryError::Repeated("rd".into()));
        assert_eq!(problem.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn numbers_parse_or_are_refused() {
        let q = QueryParams::parse(Some("limit=5&since=x"));
        assert_eq!(q.number::<usize>("limit"), Ok(Some(5)));
        assert_eq!(q.number::<usize>("until"), Ok(None));
        assert_eq!(
            q.number::<i64>("since"),
            Err(QueryError::NotANumber("since".into()))
        );
    }
}
