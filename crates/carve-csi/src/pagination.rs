//! Stable pagination for ListVolumes and ListSnapshots. Entries are sorted by
//! ID and a token names the last ID a page returned, so a token stays valid
//! when entries are added or that very entry is deleted. Tokens carry a prefix
//! and hex encoding so a token carve never issued is recognised (ABORTED).

const TOKEN_PREFIX: &str = "carve1.";

pub fn encode_token(after_id: &str) -> String {
    let hex: String = after_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

pub fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix(TOKEN_PREFIX)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A page request carve cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("max_entries must not be negative")]
    Negative,
    #[error("starting_token {0:?} was not issued by carve")]
    UnknownToken(String),
}

impl crate::error::RpcError for PageError {
    fn code(&self) -> tonic::Code {
        match self {
            PageError::Negative => tonic::Code::InvalidArgument,
            // The CSI spec's answer to a token the plugin does not know.
            PageError::UnknownToken(_) => tonic::Code::Aborted,
        }
    }
}

/// Refuses a negative `max_entries` or a token carve did not issue; returns
/// the ID the page starts after.
pub fn check(max_entries: i32, starting_token: &str) -> Result<Option<String>, PageError> {
    if max_entries < 0 {
        return Err(PageError::Negative);
    }
    if starting_token.is_empty() {
        return Ok(None);
    }
    decode_token(starting_token)
        .map(Some)
        .ok_or_else(|| PageError::UnknownToken(starting_token.to_string()))
}

/// One page of `items` (any order; sorted here by `id`) after the request's
/// token, at most `max_entries` long (0 = all), and the next token ("" at the end).
pub fn page<T>(
    mut items: Vec<T>,
    id: impl Fn(&T) -> &str,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String), PageError> {
    let after = check(max_entries, starting_token)?;
    items.sort_by(|a, b| id(a).cmp(id(b)));
    let start = after.map_or(0, |a| items.partition_point(|x| id(x) <= a.as_str()));
    let max = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let rest = items.split_off(start);
    let more = rest.len() > max;
    let page: Vec<T> = rest.into_iter().take(max).collect();
    let next = if more {
        page.last().map(|x| encode_token(id(x))).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token("vg/cs-a");
        assert_eq!(decode_token(&t).as_deref(), Some("vg/cs-a"));
        assert!(decode_token("garbage").is_none());
        assert!(decode_token("carve1.zz").is_none());
        assert!(decode_token("carve1.").is_none());
    }

    #[test]
    fn pages_are_stable_across_deletion_of_the_last_entry() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (p1, t1) = page(ids(&["c", "a", "b", "d"]), |s| s.as_str(), 2, "").unwrap();
        assert_eq!(p1, ids(&["a", "b"]));
        // "b" (the token's entry) is gone and "bb" appeared: the next page goes on after "b".
        let (p2, t2) = page(ids(&["a", "bb", "c", "d"]), |s| s.as_str(), 2, &t1).unwrap();
        assert_eq!(p2, ids(&["bb", "c"]));
        let (p3, t3) = page(ids(&["a", "bb", "c", "d"]), |s| s.as_str(), 2, &t2).unwrap();
        assert_eq!((p3, t3), (ids(&["d"]), String::new()));
        assert!(matches!(
            page(ids(&["a"]), |s| s.as_str(), 0, "bogus"),
            Err(PageError::UnknownToken(_))
        ));
        assert!(matches!(
            page(ids(&["a"]), |s| s.as_str(), -1, ""),
            Err(PageError::Negative)
        ));
    }
}
