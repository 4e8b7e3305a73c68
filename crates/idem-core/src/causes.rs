//! An error and why, on one line.

use std::error::Error;
use std::fmt;

/// Displays an error followed by its causes (`source()` after
/// `source()`), `: `-separated, as anyhow's `{:#}` does: for the places
/// that must say why in one string (a problem's `detail`, the health
/// report, a test's assertion). A cause whose text the line already holds
/// is not repeated (some errors quote their cause in their own message).
///
/// ```
/// use idem_core::causes::Causes;
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// #[derive(Debug)]
/// struct Connect(std::io::Error);
/// impl std::fmt::Display for Connect {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot connect")
///     }
/// }
/// impl std::error::Error for Connect {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
/// assert_eq!(Causes(&Connect(refused)).to_string(), "cannot connect: refused");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Causes<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}
