//! Text that others wrote, made safe for a terminal.
//!
//! A service's output (and its config's paths and commands, which end up in
//! state reasons) is written by whoever owns the config, and root reads it
//! with `kepler logs`. Escape sequences in it would reach root's terminal:
//! they can retitle the window, rewrite what is on screen, set the clipboard
//! or, on some terminals, answer back as if typed. On a terminal every
//! control character (C0, DEL and C1, which covers ESC, CSI and OSC) is
//! therefore shown as an escape, `\x1b` or `\u{9b}`: what the service sent
//! stays readable, and nothing of it is interpreted. Only tab and newline
//! pass: neither starts a sequence, and a log line never holds a newline
//! (lines are split there), while messages use it to break lines. Pipes and files get
//! the text as before, as `ls` does with `-q`; `--raw` gives the exact bytes.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

/// How another party's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMode {
    /// Lossily as UTF-8, control characters shown as escapes.
    Terminal,
    /// Lossily as UTF-8 (for pipes and files).
    Plain,
    /// The bytes exactly as they were written (`--raw`).
    Raw,
}

impl TextMode {
    /// [`TextMode::Raw`] when asked for, else by whether stdout is a terminal.
    pub fn for_stdout(raw: bool) -> TextMode {
        if raw {
            TextMode::Raw
        } else if io::stdout().is_terminal() {
            TextMode::Terminal
        } else {
            TextMode::Plain
        }
    }

    /// For text that has to be a `String` (tables, messages): lossy in both
    /// non-terminal modes.
    pub fn for_stderr() -> TextMode {
        if io::stderr().is_terminal() {
            TextMode::Terminal
        } else {
            TextMode::Plain
        }
    }

    /// `text` as this mode shows it.
    pub fn show(self, text: &str) -> Cow<'_, str> {
        if self != TextMode::Terminal || !text.chars().any(is_unsafe) {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len() + 16);
        write_visible(&mut out, text).expect("writing to a Vec cannot fail");
        Cow::Owned(String::from_utf8(out).expect("escapes are ASCII"))
    }
}

/// Writes `bytes` as `mode` says.
pub fn write_text(out: &mut impl Write, bytes: &[u8], mode: TextMode) -> io::Result<()> {
    match mode {
        TextMode::Raw => out.write_all(bytes),
        TextMode::Plain => match std::str::from_utf8(bytes) {
            Ok(_) => out.write_all(bytes),
            Err(_) => out.write_all(String::from_utf8_lossy(bytes).as_bytes()),
        },
        TextMode::Terminal => match std::str::from_utf8(bytes) {
            // The common line: printable ASCII and tabs, written as it is.
            Ok(_)
                if bytes
                    .iter()
                    .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') =>
            {
                out.write_all(bytes)
            }
            Ok(text) => write_visible(out, text),
            Err(_) => write_visible(out, &String::from_utf8_lossy(bytes)),
        },
    }
}

/// A control character other than tab and newline: C0, DEL or C1.
fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\t' && c != '\n'
}

/// Writes `text` with every unsafe character replaced by its escape.
fn write_visible(out: &mut impl Write, text: &str) -> io::Result<()> {
    let mut clean_from = 0;
    for (at, c) in text.char_indices().filter(|&(_, c)| is_unsafe(c)) {
        out.write_all(&text.as_bytes()[clean_from..at])?;
        let code = c as u32;
        if code < 0x80 {
            write!(out, "\\x{code:02x}")?;
        } else {
            write!(out, "\\u{{{code:x}}}")?;
        }
        clean_from = at + c.len_utf8();
    }
    out.write_all(&text.as_bytes()[clean_from..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bytes: &[u8], mode: TextMode) -> Vec<u8> {
        let mut out = Vec::new();
        write_text(&mut out, bytes, mode).unwrap();
        out
    }

    #[test]
    fn on_a_terminal_escape_sequences_are_shown_not_sent() {
        let attack = b"\x1b]0;owned\x07\x1b[2J\tdone\r";
        assert_eq!(
            shown(attack, TextMode::Terminal),
            b"\\x1b]0;owned\\x07\\x1b[2J\tdone\\x0d".to_vec()
        );
    }

    #[test]
    fn c1_controls_and_del_are_shown_too() {
        assert_eq!(
            shown("a\u{9b}2Jb\x7f".as_bytes(), TextMode::Terminal),
            b"a\\u{9b}2Jb\\x7f".to_vec()
        );
    }

    #[test]
    fn printable_unicode_and_tabs_pass_unchanged() {
        let text = "caf\u{e9} \u{2014} \u{1f680}\tok".as_bytes();
        assert_eq!(shown(text, TextMode::Terminal), text.to_vec());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_lossily_except_raw() {
        assert_eq!(
            shown(b"caf\xe9\x1b", TextMode::Terminal),
            "caf\u{fffd}\\x1b".as_bytes().to_vec()
        );
        assert_eq!(
            shown(b"caf\xe9\x1b", TextMode::Plain),
            "caf\u{fffd}\x1b".as_bytes().to_vec()
        );
        assert_eq!(
            shown(b"caf\xe9\x1b", TextMode::Raw),
            b"caf\xe9\x1b".to_vec()
        );
    }

    #[test]
    fn messages_keep_their_line_breaks() {
        assert_eq!(
            TextMode::Terminal.show("a.yaml:1: one\nb.yaml:2: \x1b[2Jtwo"),
            "a.yaml:1: one\nb.yaml:2: \\x1b[2Jtwo"
        );
    }

    #[test]
    fn show_borrows_what_needs_no_change() {
        assert!(matches!(TextMode::Terminal.show("plain"), Cow::Borrowed(_)));
        assert_eq!(TextMode::Terminal.show("a\x1bb"), "a\\x1bb");
        assert_eq!(TextMode::Plain.show("a\x1bb"), "a\x1bb");
    }
}
