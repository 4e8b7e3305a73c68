//! [`ConfigError`]: what is wrong with a configuration, and where.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used.
///
/// Its message names the file (when there is one), the line and column
/// (when the problem was found while parsing), and the field path, e.g.
///
/// ```text
/// gateway.toml: line 12, column 13: routes[1].in_flight.wait: "5x" is not a duration (expected e.g. "5s", "250ms")
/// gateway.toml: scope.header: required when scope.source = "trusted-header"
/// ```
#[derive(Debug)]
pub struct ConfigError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    file: Option<PathBuf>,
    location: Option<(usize, usize)>,
    problem: Problem,
}

#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("cannot read the configuration file: {0}")]
    Io(std::io::Error),
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("unknown field \"{name}\" {place}; {expected}")]
    UnknownField {
        /// Full path, e.g. `routes[0].foo`.
        field: String,
        name: String,
        place: String,
        expected: String,
    },
}

impl ConfigError {
    /// The field the error is about, as a path such as
    /// `routes[2].in_flight.wait`; `None` for I/O and syntax errors.
    pub fn field(&self) -> Option<&str> {
        match &self.0.problem {
            Problem::Field { field, .. } | Problem::UnknownField { field, .. } => Some(field),
            Problem::Io(_) | Problem::Syntax(_) => None,
        }
    }

    /// The file the configuration came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// Line and column (1-based) in the file, when the error was found
    /// while parsing.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.0.location
    }

    /// Whether the file could not be read.
    pub fn is_io(&self) -> bool {
        matches!(self.0.problem, Problem::Io(_))
    }

    /// Whether the file is not valid TOML.
    pub fn is_syntax(&self) -> bool {
        matches!(self.0.problem, Problem::Syntax(_))
    }

    /// Whether the file has a field the configuration does not know.
    pub fn is_unknown_field(&self) -> bool {
        matches!(self.0.problem, Problem::UnknownField { .. })
    }

    pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::new(Inner {
            file: None,
            location: None,
            problem: Problem::Field {
                field: field.into(),
                message: message.into(),
            },
        })
    }

    pub(super) fn io(path: &Path, e: std::io::Error) -> Self {
        ConfigError::new(Inner {
            file: Some(path.to_owned()),
            location: None,
            problem: Problem::Io(e),
        })
    }

    pub(super) fn syntax(text: &str, e: &toml::de::Error) -> Self {
        ConfigError::new(Inner {
            file: None,
            location: e.span().map(|s| line_column(text, s.start)),
            problem: Problem::Syntax(e.message().trim_end().to_owned()),
        })
    }

    pub(super) fn from_serde(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> Self {
        // serde_path_to_error writes `routes[2].in_flight`, as TOML keys
        // read, and "." for the top level.
        let field = Some(e.path().to_string())
            .filter(|p| p != ".")
            .unwrap_or_default();
        let inner = e.inner();
        let location = inner.span().map(|s| line_column(text, s.start));
        let message = inner.message().trim_end();
        let problem = if let Some((name, rest)) = between_backticks(message, "unknown field ") {
            // The path ends with the unknown key itself.
            let parent = field
                .strip_suffix(name.as_str())
                .unwrap_or(&field)
                .trim_end_matches('.');
            let place = if parent.is_empty() {
                "at top level".to_owned()
            } else {
                format!("in {parent}")
            };
            let known = known_fields(&rest);
            let mut expected = match known.len() {
                0 => "this table takes no fields".to_owned(),
                1 => format!("expected \"{}\"", known[0]),
                _ => format!("expected one of {}", quoted_list(&known)),
            };
            if let Some(guess) = closest(&name, &known) {
                expected = format!("did you mean \"{guess}\"? {expected}");
            }
            Problem::UnknownField {
                field: field.clone(),
                name,
                place,
                expected,
            }
        } else if let Some((name, _)) = between_backticks(message, "missing field ") {
            Problem::Field {
                field: if field.is_empty() {
                    name
                } else {
                    format!("{field}.{name}")
                },
                message: "required".to_owned(),
            }
        } else if let Some((variant, rest)) = between_backticks(message, "unknown variant ") {
            let known = known_fields(&rest);
            Problem::Field {
                field: field.clone(),
                message: format!(
                    "unknown value \"{variant}\"; expected one of {}",
                    quoted_list(&known)
                ),
            }
        } else {
            Problem::Field {
                field: if field.is_empty() {
                    "(top level)".to_owned()
                } else {
                    field
                },
                // Serde's words for TOML's arrays and tables.
                message: message
                    .replace("expected a sequence", "expected an array")
                    .replace("invalid type: sequence,", "invalid type: array,")
                    .replace("invalid type: map,", "invalid type: table,"),
            }
        };
        ConfigError::new(Inner {
            file: None,
            location,
            problem,
        })
    }

    fn new(inner: Inner) -> Self {
        ConfigError(Box::new(inner))
    }

    pub(super) fn in_file(mut self, path: &Path) -> Self {
        self.0.file = Some(path.to_owned());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.0.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some((line, column)) = self.0.location {
            write!(f, "line {line}, column {column}: ")?;
        }
        write!(f, "{}", self.0.problem)
    }
}

// The I/O error is part of the message, so it is not also a `source`:
// chains printed with `{:#}` would repeat it.
impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// For serde's "`prefix``name``rest`" messages: the name and the rest.
fn between_backticks(message: &str, prefix: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some((rest[..end].to_owned(), rest[end + 1..].to_owned()))
}

/// The backticked names in serde's ", expected one of `a`, `b`" tail.
fn known_fields(rest: &str) -> Vec<String> {
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known name a typo most likely meant, if any is close.
fn closest(name: &str, known: &[String]) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        assert_eq!(line_column("a = 1\nbc = x", 11), (2, 6));
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("é = x", 4), (1, 4));
    }

    #[test]
    fn typos_get_a_suggestion_and_strangers_do_not() {
        let known = ["retention".to_owned(), "lease".to_owned()];
        assert_eq!(closest("retension", &known).as_deref(), Some("retention"));
        assert_eq!(closest("colour", &known), None);
    }
}
