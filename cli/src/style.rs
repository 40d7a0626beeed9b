//! Colour, only where a person reads it: on a terminal, unless `NO_COLOR`
//! is set (<https://no-color.org>) or `--color` says otherwise.

use std::io::IsTerminal;

use crate::args::ColorChoice;

/// How text is painted. [`Style::PLAIN`] paints nothing: files, pipes, tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const PLAIN: Style = Style { color: false };

    /// `--color auto` colours a terminal, and never when `NO_COLOR` is set
    /// to anything but the empty string.
    pub fn choose(choice: ColorChoice, is_terminal: bool, no_color: Option<&str>) -> Style {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && no_color.is_none_or(str::is_empty),
        };
        Style { color }
    }

    /// [`Style::choose`] for stdout and this process's environment.
    pub fn for_stdout(choice: ColorChoice) -> Style {
        Style::choose(choice, std::io::stdout().is_terminal(), std::env::var("NO_COLOR").ok().as_deref())
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn bad(self, text: &str) -> String {
        self.paint("31;1", text)
    }
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Style::choose(ColorChoice::Auto, true, None).color);
        assert!(!Style::choose(ColorChoice::Auto, false, None).color, "a pipe");
        assert!(!Style::choose(ColorChoice::Auto, true, Some("1")).color, "NO_COLOR");
        assert!(Style::choose(ColorChoice::Auto, true, Some("")).color, "an empty NO_COLOR is unset");
        assert!(Style::choose(ColorChoice::Always, false, Some("1")).color);
        assert!(!Style::choose(ColorChoice::Never, true, None).color);
        assert_eq!(Style::PLAIN.bad("x"), "x");
        assert_eq!(Style { color: true }.bad("x"), "\x1b[31;1mx\x1b[0m");
    }
}
