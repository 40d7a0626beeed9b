//! The subset of CEL that headroom's admission policy is written in, parsed
//! and evaluated with CEL's semantics: `||`, `&&` (commutative: a `false`
//! operand of `&&`, a `true` one of `||`, wins over an error), `!`, `==`,
//! `!=`, `in` (list membership, map keys), field selection (an absent key
//! is an error), `has(a.b)`, list literals, string, bool, int and null
//! literals, parentheses. Anything else does not parse, so the rendered
//! policy cannot drift out of what the tests evaluate.
//!
//! The maintained Rust CEL crate (`cel`) brings an ANTLR parser runtime
//! into the testbed; this subset is small enough to own, and since anything
//! outside it fails to parse, the rendered policy cannot use CEL that the
//! tests do not evaluate. Keep new rules within it, or extend it with the
//! semantics of the CEL specification.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

fn lex(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            tokens.push(Token::Int(digits.parse().map_err(|e| format!("{digits}: {e}"))?));
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        text.push(*chars.get(i + 1).ok_or("unterminated escape")?);
                        i += 2;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token::Str(text));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let punct = ["==", "!=", "&&", "||"]
                .into_iter()
                .find(|p| *p == two)
                .or_else(|| ["(", ")", "[", "]", ",", ".", "!"].into_iter().find(|p| p.starts_with(c)));
            let punct = punct.ok_or_else(|| format!("unsupported character {c:?} at {i}"))?;
            i += punct.len();
            tokens.push(Token::Punct(punct));
        }
    }
    Ok(tokens)
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Ident(String),
    Select(Box<Expr>, String),
    Has(Box<Expr>, String),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, punct: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Punct(p)) if *p == punct);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, punct: &str) -> Result<(), String> {
        if self.eat(punct) { Ok(()) } else { Err(format!("expected {punct:?} at token {}", self.at)) }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let left = self.unary()?;
        if self.eat("==") {
            Ok(Expr::Eq(Box::new(left), Box::new(self.unary()?)))
        } else if self.eat("!=") {
            Ok(Expr::Ne(Box::new(left), Box::new(self.unary()?)))
        } else if self.peek() == Some(&Token::Ident("in".into())) {
            self.at += 1;
            Ok(Expr::In(Box::new(left), Box::new(self.unary()?)))
        } else {
            Ok(left)
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") { Ok(Expr::Not(Box::new(self.unary()?))) } else { self.member() }
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut expr = self.primary()?;
        while self.eat(".") {
            match self.tokens.get(self.at).cloned() {
                Some(Token::Ident(field)) => {
                    self.at += 1;
                    expr = Expr::Select(Box::new(expr), field);
                }
                other => return Err(format!("expected a field name, got {other:?}")),
            }
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self.tokens.get(self.at).cloned().ok_or("unexpected end of expression")?;
        self.at += 1;
        match token {
            Token::Str(text) => Ok(Expr::Literal(Value::String(text))),
            Token::Int(n) => Ok(Expr::Literal(Value::from(n))),
            Token::Ident(word) => match word.as_str() {
                "true" | "false" => Ok(Expr::Literal(Value::Bool(word == "true"))),
                "null" => Ok(Expr::Literal(Value::Null)),
                "has" => {
                    self.expect("(")?;
                    let Expr::Select(target, field) = self.member()? else {
                        return Err("has() takes a field selection".into());
                    };
                    self.expect(")")?;
                    Ok(Expr::Has(target, field))
                }
                _ if self.peek() == Some(&Token::Punct("(")) => Err(format!("function {word}() is not supported")),
                _ => Ok(Expr::Ident(word)),
            },
            Token::Punct("(") => {
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Punct("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Token::Punct(p) => Err(format!("unexpected {p:?}")),
        }
    }
}

/// Parses `source`; an expression outside the subset is an error.
pub fn parse(source: &str) -> Result<Expr, String> {
    let mut parser = Parser { tokens: lex(source)?, at: 0 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected {token:?} after the expression")),
    }
}

/// Evaluates `expr` with the variables `lookup` gives.
pub fn eval(expr: &Expr, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
    let boolean = |expr: &Expr| -> Result<bool, String> {
        match eval(expr, lookup)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("no such overload: a bool was expected, got {other}")),
        }
    };
    match expr {
        Expr::Literal(value) => Ok(value.clone()),
        Expr::Ident(name) => lookup(name).ok_or_else(|| format!("undeclared reference to '{name}'")),
        Expr::Select(target, field) => match eval(target, lookup)? {
            Value::Object(map) => map.get(field).cloned().ok_or_else(|| format!("no such key: {field}")),
            other => Err(format!("no such key: {field} (on {other})")),
        },
        Expr::Has(target, field) => match eval(target, lookup)? {
            Value::Object(map) => Ok(Value::Bool(map.contains_key(field))),
            other => Err(format!("has() on {other}")),
        },
        Expr::List(items) => items.iter().map(|item| eval(item, lookup)).collect::<Result<_, _>>().map(Value::Array),
        Expr::Not(inner) => Ok(Value::Bool(!boolean(inner)?)),
        // CEL's logical operators are commutative over errors.
        Expr::And(left, right) => match (boolean(left), boolean(right)) {
            (Ok(false), _) | (_, Ok(false)) => Ok(Value::Bool(false)),
            (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Expr::Or(left, right) => match (boolean(left), boolean(right)) {
            (Ok(true), _) | (_, Ok(true)) => Ok(Value::Bool(true)),
            (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Expr::Eq(left, right) => Ok(Value::Bool(eval(left, lookup)? == eval(right, lookup)?)),
        Expr::Ne(left, right) => Ok(Value::Bool(eval(left, lookup)? != eval(right, lookup)?)),
        Expr::In(item, container) => {
            let item = eval(item, lookup)?;
            match eval(container, lookup)? {
                Value::Array(items) => Ok(Value::Bool(items.contains(&item))),
                Value::Object(map) => Ok(Value::Bool(item.as_str().is_some_and(|key| map.contains_key(key)))),
                other => Err(format!("no such overload: in {other}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(source: &str, vars: Value) -> Result<Value, String> {
        eval(&parse(source)?, &|name| vars.get(name).cloned())
    }

    #[test]
    fn the_subset_evaluates_as_cel_does() {
        let vars = json!({"o": {"name": "a", "spec": {"role": "R"}}, "old": null, "groups": ["g", "h"]});
        for (source, expected) in [
            ("o.name in ['a', 'b']", true),
            ("o.name in ['b']", false),
            ("'g' in groups && has(o.spec)", true),
            ("has(o.status)", false),
            ("!has(o.spec.role) || o.spec.role == \"R\"", true),
            ("o.name != 'a' || (o.spec.role == 'X')", false),
            // A false (&&) or true (||) operand wins over an error, either side.
            ("o.missing == 'x' && false", false),
            ("false && old.spec == 1", false),
            ("o.missing == 'x' || true", true),
        ] {
            assert_eq!(run(source, vars.clone()), Ok(Value::Bool(expected)), "{source}");
        }
        for erroneous in ["o.missing == 'x'", "true && old.spec == 1", "has(old.spec)", "unknown", "o.name && true"] {
            assert!(run(erroneous, vars.clone()).is_err(), "{erroneous}");
        }
        for unsupported in ["o.name.startsWith('a')", "size(groups) > 0", "o.name + 'x'", "'unterminated", "a ? b : c"]
        {
            assert!(parse(unsupported).is_err(), "{unsupported}");
        }
    }
}
