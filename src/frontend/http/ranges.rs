//! Conditional and range request headers for asset downloads (RFC 9110 §13–§14): one
//! `bytes` range, `If-Range`, `If-None-Match`.

use axum::http::{HeaderMap, header};

/// What to send for a request against an asset of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// 304: the client's copy is current.
    NotModified,
    /// 200 with the whole body.
    Full,
    /// 206 with bytes `start..end` (end exclusive).
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Whether an `If-None-Match` / `If-Range` entity-tag list names `etag` (weak comparison
/// for `If-None-Match` as the RFC asks; `*` matches anything).
fn etag_listed(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// Parses one `bytes=` range spec against `size`: `Some(Ok(range))`, `Some(Err(()))` when
/// syntactically valid but unsatisfiable, `None` when absent, malformed or multi-range (the
/// whole body is sent then, as the RFC allows).
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size - n.min(size), size)));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        size
    } else {
        let last: u64 = last.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(size)
    };
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

/// Decides between 304, 200, 206 and 416 for an asset with `etag` and `last_modified`.
pub fn select(headers: &HeaderMap, size: u64, etag: &str, last_modified: &str) -> Selection {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(v) = get(header::IF_NONE_MATCH)
        && etag_listed(v, etag)
    {
        return Selection::NotModified;
    }
    let Some(range) = get(header::RANGE) else {
        return Selection::Full;
    };
    if let Some(v) = get(header::IF_RANGE) {
        // Strong comparison: the validator must be our ETag or our exact date.
        let v = v.trim();
        if v != etag && v != last_modified {
            return Selection::Full;
        }
    }
    match parse_range(range, size) {
        None => Selection::Full,
        Some(Ok((start, end))) => Selection::Partial(start, end),
        Some(Err(())) => Selection::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ETAG: &str = "\"abc\"";
    const DATE: &str = "Sat, 01 Jun 2019 21:34:52 GMT";

    fn sel(pairs: &[(header::HeaderName, &str)], size: u64) -> Selection {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        select(&h, size, ETAG, DATE)
    }

    #[test]
    fn byte_ranges() {
        use Selection::*;
        let r = |v: &str| sel(&[(header::RANGE, v)], 1000);
        assert_eq!(r("bytes=0-99"), Partial(0, 100));
        assert_eq!(r("bytes=900-"), Partial(900, 1000));
        assert_eq!(r("bytes=-100"), Partial(900, 1000));
        assert_eq!(r("bytes=-5000"), Partial(0, 1000));
        assert_eq!(r("bytes=990-2000"), Partial(990, 1000));
        assert_eq!(r("bytes=999-999"), Partial(999, 1000));
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        // Malformed or multiple ranges: the whole body.
        assert_eq!(r("bytes=5-1"), Full);
        assert_eq!(r("bytes=0-1,5-6"), Full);
        assert_eq!(r("items=0-1"), Full);
        assert_eq!(r("bytes=a-b"), Full);
        assert_eq!(r("bytes=+1-2"), Full);
        assert_eq!(sel(&[], 1000), Full);
        assert_eq!(sel(&[(header::RANGE, "bytes=0-")], 0), Unsatisfiable);
    }

    #[test]
    fn conditionals() {
        use Selection::*;
        assert_eq!(sel(&[(header::IF_NONE_MATCH, ETAG)], 10), NotModified);
        assert_eq!(
            sel(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")], 10),
            NotModified
        );
        assert_eq!(sel(&[(header::IF_NONE_MATCH, "*")], 10), NotModified);
        assert_eq!(sel(&[(header::IF_NONE_MATCH, "\"x\"")], 10), Full);
        let ranged = |validator: &str| {
            sel(
                &[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, validator)],
                10,
            )
        };
        assert_eq!(ranged(ETAG), Partial(0, 2));
        assert_eq!(ranged(DATE), Partial(0, 2));
        assert_eq!(ranged("\"old\""), Full);
        assert_eq!(ranged("W/\"abc\""), Full);
    }
}
