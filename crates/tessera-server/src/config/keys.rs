//! The one definition of the configuration keys: [`config_keys!`] turns the list of keys (name,
//! type, default, help) into the [`Config`](super::Config) struct, its `Default` and
//! [`Config::KEYS`](super::Config::KEYS); the environment names, the README table and
//! `tessera config defaults` are all derived from that list.

use std::fmt::Write as _;

/// The prefix of tessera's own environment variables.
pub const ENV_PREFIX: &str = "TESSERA_";

/// One configuration key, as defined (see [`Config::KEYS`](super::Config::KEYS)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The TOML name.
    pub name: &'static str,
    /// The help text, one item per doc-comment line.
    pub help: &'static [&'static str],
}

impl Key {
    /// Its environment variable: `TESSERA_` plus the name in capitals.
    pub fn env_name(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }

    /// The help text as one paragraph.
    pub fn summary(&self) -> String {
        let lines: Vec<&str> = self.help.iter().map(|line| line.trim()).collect();
        lines.join(" ")
    }
}

/// Defines the configuration struct from one list of keys: each field's doc comment is its
/// help text, its `= default` its default, its serde attributes how it is read.
macro_rules! config_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde($($serde:tt)*)])*
                $key:ident: $ty:ty = $default:expr
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])*
                pub $key: $ty,
            )+
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($key: $default,)+
                }
            }
        }

        impl $name {
            /// Every configuration key, in the order of the struct, with its help text.
            pub const KEYS: &'static [$crate::config::keys::Key] = &[
                $($crate::config::keys::Key {
                    name: stringify!($key),
                    help: &[$($doc),+],
                },)+
            ];
        }
    };
}

pub(crate) use config_keys;

impl super::Config {
    /// The key of this name, if there is one.
    pub fn key(name: &str) -> Option<&'static Key> {
        Self::KEYS.iter().find(|key| key.name == name)
    }

    /// Every key's default as a TOML value; keys unset by default are absent.
    pub(super) fn default_values() -> toml::Table {
        // The defaults are plain values that always serialize; an empty table would only
        // make every key look unset by default.
        toml::Table::try_from(super::Config::default()).unwrap_or_default()
    }

    /// A commented TOML file of every key with its default (`tessera config defaults`): each
    /// key's help, its environment variable, and `key = default`, or a commented-out line
    /// for a key unset by default. Loading it gives [`Config::default`](super::Config).
    pub fn defaults_toml() -> String {
        let defaults = Self::default_values();
        let mut out = String::from(
            "# tessera configuration: every key with its default value.\n\
             # Each key can also be set by its environment variable (shown) and, for some\n\
             # `serve` options, by a flag. Precedence: this file < environment < flags.\n",
        );
        for key in Self::KEYS {
            out.push('\n');
            for line in key.help {
                let _ = writeln!(out, "#{}", line.trim_end());
            }
            let _ = writeln!(out, "# Environment: {}", key.env_name());
            match defaults.get(key.name) {
                Some(value) => {
                    let _ = writeln!(out, "{} = {value}", key.name);
                }
                None => {
                    let _ = writeln!(out, "# {} = (unset by default)", key.name);
                }
            }
        }
        out
    }

    /// The Markdown table of every key, its environment variable, default and meaning, as
    /// the README shows it (a test keeps the README equal to it).
    pub fn docs_table() -> String {
        let defaults = Self::default_values();
        let mut out =
            String::from("| key | environment | default | meaning |\n|---|---|---|---|\n");
        for key in Self::KEYS {
            let default = defaults
                .get(key.name)
                .map_or_else(|| "unset".to_owned(), |value| format!("`{value}`"));
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                key.name,
                key.env_name(),
                default.replace('|', "\\|"),
                key.summary().replace('|', "\\|"),
            );
        }
        out
    }
}

/// The closest of `candidates` to a misspelt `name`, when it is close enough to be what was
/// meant (at most a third of its letters differ).
pub(super) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance: the fewest single-character insertions, deletions and
/// substitutions that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row[j]`: distance between the part of `a` read so far and `b[..j]`.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("idle_timout", "idle_timeout"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("leeway", "leeway"), 0);
    }

    #[test]
    fn misspelt_keys_get_the_key_meant_and_strangers_none() {
        let names = || Config::KEYS.iter().map(|key| key.name);
        assert_eq!(did_you_mean("idle_timout", names()), Some("idle_timeout"));
        assert_eq!(did_you_mean("IDLE_TIMEOUT", names()), Some("idle_timeout"));
        assert_eq!(did_you_mean("listn", names()), Some("listen"));
        assert_eq!(did_you_mean("sesions", names()), Some("sessions"));
        assert_eq!(did_you_mean("colour_scheme", names()), None);
        assert_eq!(did_you_mean("x", names()), None);
    }

    #[test]
    fn every_key_has_help_and_a_distinct_environment_variable() {
        let mut envs: Vec<String> = Config::KEYS.iter().map(Key::env_name).collect();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), Config::KEYS.len());
        for key in Config::KEYS {
            assert!(!key.summary().is_empty(), "{}", key.name);
            assert_eq!(Config::key(key.name), Some(key));
        }
        assert_eq!(
            Config::key("idle_timeout").unwrap().env_name(),
            "TESSERA_IDLE_TIMEOUT"
        );
    }

    /// The README's table of keys is the one generated from the definition.
    #[test]
    fn the_readme_table_of_keys_is_generated_from_the_definition() {
        let readme = include_str!("../../../../README.md");
        let begin = "<!-- config-keys: generated by Config::docs_table; do not edit -->\n";
        let end = "<!-- end of config-keys -->";
        let start = readme
            .find(begin)
            .expect("the README marks its table of keys")
            + begin.len();
        let stop = start
            + readme[start..]
                .find(end)
                .expect("the table's end is marked");
        let table = Config::docs_table();
        assert!(
            readme[start..stop] == table,
            "README.md's table of configuration keys is out of date; replace it with:\n{table}"
        );
    }
}
