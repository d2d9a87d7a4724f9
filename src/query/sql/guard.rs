//! The shape of a query, bounded before DataFusion sees it, and the thread it is
//! planned on.
//!
//! DataFusion's SQL planner, optimizer and expression code recurse over the query's
//! tree, and so do the derived `Clone`, `Drop` and `Hash` of its nodes. A flat chain
//! such as `1+1+...+1`, `a OR b OR ...` or `SELECT 1 UNION ALL SELECT 1 ...` parses
//! without recursion but builds a tree as deep as the chain is long, and 2,000 terms
//! were enough to overflow a runtime worker's stack and abort the process. So a query
//! passes three gates, each cheap and each with a clear 400:
//!
//! 1. [`count_operators`]: the operators and keywords of its text (identifiers,
//!    literals, commas and parentheses are free) are at most `sql.max_query_operators`.
//!    Every level of a chain needs one, so this bounds the depth of any tree the
//!    parser can build (with the parser's own limit of 50 nested parentheses) before
//!    one is built.
//! 2. The parser's recursion limit (DataFusion's `sql_parser.recursion_limit`, 50):
//!    nested parentheses and subqueries.
//! 3. [`check_shape`]: the parsed statement nests at most `sql.max_query_depth` levels
//!    (an operator of a chain, a function around its argument, a query in a query, a
//!    set operation's operand, a common table expression, a table joined in a FROM
//!    all count one) and holds at most `sql.max_query_nodes` expressions.
//!
//! Everything from parsing to the physical plan then runs on a thread of its own with
//! a [`PLANNER_STACK_BYTES`] stack ([`on_planner`]), sized for the deepest tree gate 1
//! lets the parser build (which is what a refused statement's drop walks) and for
//! DataFusion's planning of the deepest statement gate 3 lets through. Execution runs
//! on the runtime's workers, whose stack (`fastk serve` sets it to
//! [`WORKER_STACK_BYTES`]) holds the evaluation of an expression `sql.max_query_depth`
//! deep.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, Select, SetExpr, Value, ValueWithSpan, Visit, Visitor,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::config::SqlConfig;
use crate::error::{Error, Result};

/// The stack of the thread a query is parsed and planned on. Measured (tests below):
/// dropping the deepest tree `sql.max_query_operators` at its maximum lets the parser
/// build takes well under a quarter of it, and planning a query at the largest
/// `sql.max_query_depth` the configuration accepts a small part. The memory is
/// reserved, not used: a thread touches only the pages its recursion reaches.
pub const PLANNER_STACK_BYTES: usize = 256 << 20;

/// The stack of the runtime's worker and blocking threads in `fastk serve`: a query's
/// operators and expressions are evaluated there, recursing once per level of the
/// plan and of each expression.
pub const WORKER_STACK_BYTES: usize = 16 << 20;

/// Whether a token costs nothing toward `sql.max_query_operators`: the operands and
/// punctuation of lists, never a link of a chain.
fn is_free(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.keyword == Keyword::NoKeyword,
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => true,
        _ => false,
    }
}

/// Gate 1: refuses a text with more than `sql.max_query_operators` operators and
/// keywords.
pub fn count_operators(cfg: &SqlConfig, tokens: &[TokenWithSpan]) -> Result<usize> {
    let n = tokens.iter().filter(|t| !is_free(&t.token)).count();
    if n > cfg.max_query_operators {
        return Err(Error::invalid(format!(
            "the query has {n} operators and keywords; sql.max_query_operators is {}: \
             split it, or put long lists of values in IN (...) or in parameters",
            cfg.max_query_operators
        )));
    }
    Ok(n)
}

/// How far a statement nests, and how many expressions it holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub depth: usize,
    pub nodes: usize,
    /// Bytes of the longest literal: a constant is copied into every row of a batch.
    pub max_literal_bytes: usize,
}

impl Shape {
    /// Rows per batch for this query: DataFusion's 8,192, fewer when a long literal
    /// copied into every row of a batch would pass `max_bytes` (a 1 MiB string in
    /// 8,192 rows is 8 GiB, made in one allocation).
    pub fn batch_rows(&self, max_bytes: usize) -> usize {
        (max_bytes / self.max_literal_bytes.max(1)).clamp(1, 8192)
    }
}

/// Gate 3: walks `statement` and refuses it past `sql.max_query_depth` or
/// `sql.max_query_nodes`. The walk recurses, but stops one level past the limit, so
/// its own depth is bounded by the limit, not by the statement.
pub fn check_shape(cfg: &SqlConfig, statement: &DfStatement) -> Result<Shape> {
    let mut v = ShapeVisitor {
        max_depth: cfg.max_query_depth,
        max_nodes: cfg.max_query_nodes,
        depth: 0,
        shape: Shape::default(),
    };
    let flow = match statement {
        DfStatement::Statement(s) => s.visit(&mut v),
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) => s.visit(&mut v),
            // EXPLAIN of a DataFusion extension statement (COPY, CREATE EXTERNAL
            // TABLE): refused as a write by the planner; nothing deep to walk.
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Continue(()) => {
            debug_assert_eq!(v.depth, 0, "every level entered was left");
            Ok(v.shape)
        }
        ControlFlow::Break(e) => Err(e),
    }
}

struct ShapeVisitor {
    max_depth: usize,
    max_nodes: usize,
    depth: usize,
    shape: Shape,
}

impl ShapeVisitor {
    fn enter(&mut self, levels: usize) -> ControlFlow<Error> {
        self.depth += levels;
        self.shape.depth = self.shape.depth.max(self.depth);
        if self.depth > self.max_depth {
            return ControlFlow::Break(Error::invalid(format!(
                "the query nests deeper than sql.max_query_depth ({}) levels: a chain of \
                 operators (a + b + ..., x OR y OR ...), UNION / INTERSECT / EXCEPT, common \
                 table expressions or joined tables counts one level per link; split it, or \
                 use IN (...) for long lists of alternatives",
                self.max_depth
            )));
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self, levels: usize) -> ControlFlow<Error> {
        debug_assert!(
            self.depth >= levels,
            "a level was left that was not entered"
        );
        self.depth -= levels;
        ControlFlow::Continue(())
    }
}

/// The levels an expression adds beyond its own: its access chain (`a[1][2]`,
/// `s.f.g`), which DataFusion plans as nested calls.
fn expr_levels(e: &Expr) -> usize {
    1 + match e {
        Expr::CompoundFieldAccess { access_chain, .. } => access_chain.len(),
        Expr::CompoundIdentifier(parts) => parts.len().saturating_sub(1),
        _ => 0,
    }
}

/// The levels a query adds: itself, its common table expressions (each may read the
/// one before) and the longest path of set operations in its body, walked without
/// recursion (the chain is as long as the text allows until gate 3 says no).
fn query_levels(q: &Query) -> usize {
    let ctes = q.with.as_ref().map_or(0, |w| w.cte_tables.len());
    let mut deepest = 0usize;
    let mut stack: Vec<(&SetExpr, usize)> = vec![(q.body.as_ref(), 0)];
    while let Some((s, d)) = stack.pop() {
        deepest = deepest.max(d);
        if let SetExpr::SetOperation { left, right, .. } = s {
            stack.push((left, d + 1));
            stack.push((right, d + 1));
        }
    }
    1 + ctes + deepest
}

/// The levels a SELECT's FROM adds: every table in it, joined left to right.
fn select_levels(s: &Select) -> usize {
    s.from.iter().map(|t| 1 + t.joins.len()).sum()
}

impl Visitor for ShapeVisitor {
    type Break = Error;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Error> {
        self.enter(query_levels(q))
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<Error> {
        self.leave(query_levels(q))
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<Error> {
        self.enter(select_levels(s))
    }

    fn post_visit_select(&mut self, s: &Select) -> ControlFlow<Error> {
        self.leave(select_levels(s))
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Error> {
        self.shape.nodes += 1;
        if self.shape.nodes > self.max_nodes {
            return ControlFlow::Break(Error::invalid(format!(
                "the query has more than sql.max_query_nodes ({}) expressions; split it",
                self.max_nodes
            )));
        }
        self.enter(expr_levels(e))
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<Error> {
        self.leave(expr_levels(e))
    }

    fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<Error> {
        let bytes = match &v.value {
            Value::Number(s, _) => s.len(),
            other => other.clone().into_string().map_or(0, |s| s.len()),
        };
        self.shape.max_literal_bytes = self.shape.max_literal_bytes.max(bytes);
        ControlFlow::Continue(())
    }
}

/// Runs `work` on a new thread with a [`PLANNER_STACK_BYTES`] stack and awaits its
/// answer without blocking the runtime. `work` may drive futures on the runtime with
/// `Handle::block_on`. If the caller stops waiting (a timeout, a dropped request), the
/// thread still finishes its bounded work and drops what it made there.
pub async fn on_planner<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fastk-sql-plan".into())
        .stack_size(PLANNER_STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| Error::internal(format!("cannot start a SQL planning thread: {e}")))?;
    rx.await
        .map_err(|_| Error::internal("the SQL planning thread ended without an answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParserBuilder;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap()
    }

    fn parse(sql: &str) -> DfStatement {
        let mut s = DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .build()
            .unwrap()
            .parse_statements()
            .unwrap();
        assert_eq!(s.len(), 1);
        s.pop_front().unwrap()
    }

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    fn cfg() -> SqlConfig {
        SqlConfig::default()
    }

    #[test]
    fn operands_and_punctuation_are_free_operators_and_keywords_count() {
        let c = cfg();
        let n = count_operators(&c, &tokens("SELECT a, b FROM t WHERE a IN (1, 2, 'x')")).unwrap();
        // SELECT, FROM, WHERE, IN
        assert_eq!(n, 4);
        let n = count_operators(&c, &tokens("select 1 + 2 * 3 - x::int")).unwrap();
        // SELECT + * - ::  INT
        assert_eq!(n, 6);
        let long = format!("SELECT {}", chain("1", "+", c.max_query_operators + 1));
        let e = count_operators(&c, &tokens(&long)).unwrap_err();
        assert!(
            e.message.contains("sql.max_query_operators"),
            "{}",
            e.message
        );
    }

    #[test]
    fn flat_chains_count_their_links_as_depth() {
        let c = cfg();
        let at = |s: &str| check_shape(&c, &parse(s));
        let ok = format!("SELECT {}", chain("1", "+", 100));
        let shape = at(&ok).unwrap();
        assert!(shape.depth >= 100 && shape.depth < 110, "{shape:?}");
        for (term, op) in [
            ("1", "+"),
            ("'a'", "||"),
            ("x = 1", " OR "),
            ("x = 1", " AND "),
        ] {
            let q = format!("SELECT {}", chain(term, op, c.max_query_depth + 1));
            let e = at(&q).unwrap_err();
            assert!(
                e.message.contains("sql.max_query_depth"),
                "{op}: {}",
                e.message
            );
        }
        let unions = chain("SELECT 1", " UNION ALL ", c.max_query_depth + 1);
        assert!(
            at(&unions)
                .unwrap_err()
                .message
                .contains("sql.max_query_depth")
        );
        let unions = chain("SELECT 1", " UNION ALL ", 50);
        assert!(at(&unions).unwrap().depth >= 50);
        let joins = format!(
            "SELECT 1 FROM {}",
            (0..c.max_query_depth + 1)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(" CROSS JOIN ")
        );
        assert!(
            at(&joins)
                .unwrap_err()
                .message
                .contains("sql.max_query_depth")
        );
        let ctes = format!(
            "WITH {} SELECT * FROM c{}",
            (0..c.max_query_depth + 1)
                .map(|i| format!("c{i} AS (SELECT 1 AS v)"))
                .collect::<Vec<_>>()
                .join(", "),
            c.max_query_depth
        );
        assert!(
            at(&ctes)
                .unwrap_err()
                .message
                .contains("sql.max_query_depth")
        );
    }

    #[test]
    fn long_literals_shrink_the_batches() {
        let c = cfg();
        let lit = "x".repeat(1 << 20);
        let shape = check_shape(&c, &parse(&format!("SELECT '{lit}' AS v"))).unwrap();
        assert_eq!(shape.max_literal_bytes, 1 << 20);
        assert_eq!(shape.batch_rows(256 << 20), 256);
        let shape = check_shape(&c, &parse("SELECT 'ab', 1")).unwrap();
        assert_eq!(shape.batch_rows(256 << 20), 8192);
    }

    #[test]
    fn wide_lists_are_fine_until_the_node_limit() {
        let mut c = cfg();
        let q = format!("SELECT 1 WHERE 1 IN ({})", chain("1", ",", 5000));
        let shape = check_shape(&c, &parse(&q)).unwrap();
        assert!(shape.depth < 10, "{shape:?}");
        assert!(shape.nodes > 5000, "{shape:?}");
        c.max_query_nodes = 1000;
        let e = check_shape(&c, &parse(&q)).unwrap_err();
        assert!(e.message.contains("sql.max_query_nodes"), "{}", e.message);
    }

    /// The planner's stack holds the drop of the deepest tree gate 1 lets the parser
    /// build, with room to spare: measured here on a thread a quarter of its size.
    #[test]
    fn the_deepest_tree_the_parser_may_build_drops_on_a_quarter_of_the_planner_stack() {
        let c = cfg();
        let q = format!("SELECT {}", chain("1", "+", c.max_query_operators - 1));
        count_operators(&c, &tokens(&q)).unwrap();
        let h = std::thread::Builder::new()
            .stack_size(PLANNER_STACK_BYTES / 4)
            .spawn(move || {
                let s = parse(&q);
                let e = check_shape(&c, &s).unwrap_err();
                assert!(e.message.contains("sql.max_query_depth"));
                drop(s);
            })
            .unwrap();
        h.join().unwrap();
    }
}
