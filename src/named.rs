//! The library's closed choices (backend, precision, upsampling, channel order, label ids) and how
//! they are spelled: one name per value, shared by command-line flags, device profiles, model
//! metadata and reports. The command line turns [`Named`] into its possible values (with each
//! value's help line); the library itself depends on no UI crate.

use std::fmt;

/// A value out of a closed set, spelled by name.
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// What the set is called in messages ("backend", "upsampling mode").
    const WHAT: &'static str;
    /// Every value, in the order lists show them.
    const ALL: &'static [Self];
    /// The name that flags, files and reports use.
    fn name(self) -> &'static str;
    /// One line that says what the value means (`--help`).
    fn help(self) -> &'static str;

    /// Every name, in [`Named::ALL`]'s order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }
}

/// A name that is none of a set's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// [`Named::WHAT`] of the set.
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The names allowed.
    pub allowed: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}; use one of {}", self.what, self.given, self.allowed.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// The value called `name` (exactly: names are lower case).
pub fn parse<T: Named>(name: &str) -> Result<T, UnknownName> {
    T::ALL.iter().copied().find(|v| v.name() == name).ok_or_else(|| UnknownName {
        what: T::WHAT,
        given: name.to_string(),
        allowed: T::names(),
    })
}

/// `FromStr` and `Display` by [`Named`] for the enums listed (`semask_edge::impl_named_text!(T)`).
#[macro_export]
macro_rules! impl_named_text {
    ($($t:ty),* $(,)?) => {$(
        impl std::str::FromStr for $t {
            type Err = $crate::named::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::named::parse(s)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::named::Named::name(*self))
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::backend::tensorrt::Int8Mode;
    use crate::calibration::Precision;
    use crate::postprocess::Upsample;
    use crate::preprocess::ChannelOrder;
    use crate::sink::images::LabelIds;

    /// Names are unique, lower case, and parse back to their value.
    fn round_trip<T: Named + fmt::Debug + std::str::FromStr<Err = UnknownName> + fmt::Display>() {
        let names = T::names();
        for (i, &v) in T::ALL.iter().enumerate() {
            assert_eq!(parse::<T>(v.name()).unwrap(), v);
            assert_eq!(v.name().parse::<T>().unwrap(), v);
            assert_eq!(v.to_string(), v.name());
            assert_eq!(v.name(), v.name().to_ascii_lowercase());
            assert!(!v.help().is_empty());
            assert!(!names[..i].contains(&v.name()), "{} twice", v.name());
        }
        let err = parse::<T>("no-such-value").unwrap_err();
        assert_eq!(err.allowed, names);
        assert!(err.to_string().contains(T::WHAT), "{err}");
    }

    #[test]
    fn every_choice_round_trips_by_name() {
        round_trip::<BackendKind>();
        round_trip::<Precision>();
        round_trip::<Upsample>();
        round_trip::<ChannelOrder>();
        round_trip::<LabelIds>();
        round_trip::<Int8Mode>();
    }

    #[test]
    fn unknown_names_list_the_allowed_ones() {
        let err = parse::<Upsample>("bilinear").unwrap_err();
        assert_eq!(err.to_string(), "unknown upsampling mode \"bilinear\"; use one of fast, exact");
    }
}
