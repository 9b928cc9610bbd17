//! Enums with a fixed name per variant (statuses, event kinds): their text
//! form is their `as_str`, and parsing accepts exactly those names.

/// Implements `Display` and `FromStr` (error: [`UnknownStatus`](crate::task::UnknownStatus))
/// for enums that have `ALL` and `as_str`.
macro_rules! named_enum {
    ($($ty:ty),+) => {$(
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // `pad`, so that widths and alignment (`{:<20}`) apply.
                f.pad(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::task::UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::task::UnknownStatus::new(s))
            }
        }
    )+};
}

pub(crate) use named_enum;
