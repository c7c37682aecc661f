//! Lists of words in a value, split the way systemd's `config_parse_strv`
//! splits them (`extract_first_word` with `EXTRACT_UNQUOTE |
//! EXTRACT_RETAIN_ESCAPE`): words are separated by blanks; `"…"` and `'…'`
//! quote blanks (also in the middle of a word, `a"b c"` is `ab c`) and are
//! removed; a `\` keeps itself and the character after it (unit names
//! carry `\x2d`-style escapes). A quote left open or a `\` at the very end
//! is an error, as in systemd.
//!
//! Which keys take such lists is each key's semantics (systemd.syntax(7)
//! leaves it to them); `[Install]`'s lists do ([`crate::install`]).

/// Why a value does not split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    /// A `"` or `'` without its closing partner.
    #[error("unterminated {0} quote")]
    Unterminated(char),
    /// A `\` with nothing after it.
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// Split a value into words.
pub fn split(value: &str) -> Result<Vec<String>, WordsError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                let next = chars.next().ok_or(WordsError::TrailingBackslash)?;
                word.push('\\');
                word.push(next);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(WordsError::Unterminated(q));
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split("  a.target   b.target ").unwrap(),
            ["a.target", "b.target"]
        );
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert_eq!(split("\"a b\" 'c d'").unwrap(), ["a b", "c d"]);
        assert_eq!(split("a\"b c\"d").unwrap(), ["ab cd"]);
        assert_eq!(split("\"\"").unwrap(), [""]);
        assert_eq!(
            split("dev-vda\\x2d1.device").unwrap(),
            ["dev-vda\\x2d1.device"]
        );
        assert_eq!(split("a\\ b").unwrap(), ["a\\ b"]);
        assert_eq!(
            split("\"a").unwrap_err().to_string(),
            "unterminated \" quote"
        );
        assert_eq!(split("a 'b").unwrap_err(), WordsError::Unterminated('\''));
        assert_eq!(split("a\\").unwrap_err(), WordsError::TrailingBackslash);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = split(&s);
        }
    }
}
