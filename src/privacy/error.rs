//! Errors from the privacy library.

/// Everything that can go wrong in sampling, mechanisms and accounting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// The operating system's entropy source failed, so no CSPRNG can be seeded.
    #[error("cannot seed the DP random generator from the OS: {reason}")]
    Entropy {
        /// What getrandom reported.
        reason: String,
    },
    /// A parameter is outside the range the function accepts.
    #[error("invalid privacy parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value, as given.
        value: f64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An input value (a score) is NaN or infinite.
    #[error("input {index} is not a finite number")]
    NonFiniteInput {
        /// Its position in the input.
        index: usize,
    },
    /// An input value is too large to be placed on the output grid.
    #[error("input {index} is too large for the output grid")]
    OffGrid {
        /// Its position in the input.
        index: usize,
    },
    /// The input is empty where at least one value is needed.
    #[error("the input is empty")]
    EmptyInput,
    /// Exact integer arithmetic would overflow for these parameters.
    #[error("parameters too large for exact sampling ({what})")]
    Overflow {
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// A search (calibration, bisection) found no parameter meeting the target.
    #[error("no parameter meets the target: {reason}")]
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// Shorthand for results in this module.
pub type Result<T> = std::result::Result<T, PrivacyError>;

/// Rejects NaN, infinities and values outside `(lo, hi)` or `[lo, hi]`.
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    inclusive: bool,
) -> Result<f64> {
    let ok = value.is_finite()
        && if inclusive {
            value >= lo && value <= hi
        } else {
            value > lo && value < hi
        };
    if ok {
        Ok(value)
    } else {
        Err(PrivacyError::InvalidParameter {
            name,
            value,
            reason: if inclusive {
                "must be finite and within the closed range allowed"
            } else {
                "must be finite and within the open range allowed"
            },
        })
    }
}
