//! `?` placeholders, as ADBC's DB-API and JDBC write them (`paramstyle = "qmark"`),
//! turned into DataFusion's `$1`, `$2`, ... in order of appearance, at the token level
//! (so a `?` inside a string literal or a quoted name is left alone). `?N` is `$N`.
//! A query mixing `?` with `$N` or `?N` is refused: which parameter a bare `?` would
//! be is then ambiguous.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Error, Result};

/// Renames the `?` placeholders of `tokens` in place.
pub fn positional(tokens: &mut [TokenWithSpan]) -> Result<()> {
    let (mut bare, mut numbered) = (0usize, false);
    for t in tokens.iter_mut() {
        let Token::Placeholder(p) = &mut t.token else {
            continue;
        };
        if p == "?" {
            bare += 1;
            *p = format!("${bare}");
        } else if let Some(n) = p.strip_prefix('?') {
            numbered = true;
            *p = format!("${n}");
        } else {
            numbered = true;
        }
    }
    if bare > 0 && numbered {
        return Err(Error::invalid(
            "a query uses either `?` placeholders (bound in order) or numbered ones \
             (`$1`, `?1`), not both",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn rewrite(sql: &str) -> Result<String> {
        let mut tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        positional(&mut tokens)?;
        Ok(tokens.iter().map(|t| t.token.to_string()).collect())
    }

    #[test]
    fn question_marks_become_numbers_outside_literals() {
        assert_eq!(
            rewrite("SELECT * FROM kline WHERE symbol = ? AND ts > ?").unwrap(),
            "SELECT * FROM kline WHERE symbol = $1 AND ts > $2"
        );
        assert_eq!(
            rewrite("SELECT '?', \"a?\" FROM t WHERE x = ?").unwrap(),
            "SELECT '?', \"a?\" FROM t WHERE x = $1"
        );
        assert_eq!(rewrite("SELECT ?2, ?1").unwrap(), "SELECT $2, $1");
        assert_eq!(rewrite("SELECT $1").unwrap(), "SELECT $1");
        assert!(rewrite("SELECT ?, $1").is_err());
        assert!(rewrite("SELECT ?, ?1").is_err());
    }
}
