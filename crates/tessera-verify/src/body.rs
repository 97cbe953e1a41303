//! Reading tessera's answers within a bound.

/// Reads the body of `response`, or `Ok(None)` once it exceeds `max` bytes: a hostile or
/// broken server cannot make the verifier buffer an unbounded body.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
