//! Defaults of flag groups: a group's `Default` is clap's parse of an empty command line, so
//! each default is written once, in the flag's attribute, and serde, recipe files and the
//! command line all see the same value.

/// The values the flags of `T` take when none is given.
pub(crate) fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every flag of a settings group has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// Implements `Default` for flag groups through [`defaults`].
macro_rules! defaults_from_flags {
    ($($t:ty),* $(,)?) => {$(
        impl Default for $t {
            /// The flags' defaults.
            fn default() -> Self {
                $crate::flags::defaults()
            }
        }
    )*};
}
pub(crate) use defaults_from_flags;
