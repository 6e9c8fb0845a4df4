//! The size carve allocates for a CSI capacity range.

use crate::csi;

/// Size when a request names none.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// A capacity range carve cannot satisfy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "capacity_range must not be negative (required_bytes {required}, limit_bytes {limit})"
    )]
    Negative { required: i64, limit: i64 },
    #[error("required_bytes {required} exceeds limit_bytes {limit}")]
    RequiredOverLimit { required: u64, limit: u64 },
    #[error("{0} bytes is larger than LVM can address")]
    TooLarge(u64),
    #[error("no multiple of the {granule}-byte allocation unit lies between required_bytes {required} and limit_bytes {limit}")]
    NoFit {
        granule: u64,
        required: u64,
        limit: u64,
    },
}

impl crate::error::RpcError for SizeError {
    fn code(&self) -> tonic::Code {
        match self {
            SizeError::Negative { .. } | SizeError::RequiredOverLimit { .. } => {
                tonic::Code::InvalidArgument
            }
            SizeError::TooLarge(_) | SizeError::NoFit { .. } => tonic::Code::OutOfRange,
        }
    }
}

/// The request rounded up to the class's granule, or the largest granule
/// multiple under the limit.
pub fn choose_size(range: Option<&csi::CapacityRange>, granule: u64) -> Result<u64, SizeError> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(SizeError::Negative { required, limit });
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(SizeError::RequiredOverLimit { required, limit });
    }
    let base = match (required, limit) {
        (0, 0) => DEFAULT_SIZE,
        (0, l) => DEFAULT_SIZE.min(l),
        (r, _) => r,
    };
    let size = base
        .div_ceil(granule)
        .checked_mul(granule)
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or(SizeError::TooLarge(base))?;
    if limit > 0 && size > limit {
        let down = limit - limit % granule;
        if down >= required.max(1) {
            return Ok(down);
        }
        return Err(SizeError::NoFit {
            granule,
            required,
            limit,
        });
    }
    Ok(size)
}

/// Whether a volume of `size` bytes satisfies `range`.
pub fn fits_range(size: u64, range: Option<&csi::CapacityRange>) -> bool {
    range.is_none_or(|r| {
        size >= r.required_bytes.max(0) as u64
            && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn range(required: i64, limit: i64) -> Option<csi::CapacityRange> {
        Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    #[test]
    fn rounds_up_to_the_granule_or_down_under_the_limit() {
        assert_eq!(choose_size(None, 4 * MI), Ok(DEFAULT_SIZE));
        assert_eq!(
            choose_size(range(5 * MI as i64, 0).as_ref(), 4 * MI),
            Ok(8 * MI)
        );
        assert_eq!(
            choose_size(range(5 * MI as i64, 7 * MI as i64).as_ref(), 4 * MI),
            Err(SizeError::NoFit {
                granule: 4 * MI,
                required: 5 * MI,
                limit: 7 * MI
            })
        );
        assert_eq!(
            choose_size(range(0, 6 * MI as i64).as_ref(), 4 * MI),
            Ok(4 * MI)
        );
        assert!(matches!(
            choose_size(range(-1, 0).as_ref(), 1),
            Err(SizeError::Negative { .. })
        ));
        assert!(matches!(
            choose_size(range(i64::MAX, 0).as_ref(), 4 * MI),
            Err(SizeError::TooLarge(_))
        ));
        assert!(fits_range(
            8 * MI,
            range(5 * MI as i64, 8 * MI as i64).as_ref()
        ));
        assert!(!fits_range(
            9 * MI,
            range(5 * MI as i64, 8 * MI as i64).as_ref()
        ));
    }
}
