//! A second copy of a piece of WGSL under other names: how the paired forward step
//! (`rnn_step_pair`) gets a body per direction. WGSL cannot choose a binding at run time, and
//! one direction's code names its buffers directly, so the pair kernel holds that code twice:
//! once as written, once with every module-scope function and storage binding the piece
//! declares renamed (a suffix) and its `@binding(n)` moved to `n + shift`. The two copies then
//! run the very same arithmetic, each on its own direction's buffers.

use std::collections::HashSet;

/// One lexical piece of WGSL source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    /// A numeric literal (`4u`, `0.5`, `1e-3` in parts): copied as is.
    Number(&'a str),
    /// A comment or whitespace: copied as is, invisible to the renaming.
    Trivia(&'a str),
    /// Any other character.
    Punct(&'a str),
}

/// `src` split into tokens whose concatenation is `src`.
fn tokens(src: &str) -> Vec<Tok<'_>> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
            out.push(Tok::Trivia(&src[start..i]));
        } else if src[i..].starts_with("/*") {
            i = src[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2);
            out.push(Tok::Trivia(&src[start..i]));
        } else if c.is_ascii_whitespace() {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(Tok::Trivia(&src[start..i]));
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (word(bytes[i]) || bytes[i] == b'.') {
                i += 1;
            }
            out.push(Tok::Number(&src[start..i]));
        } else if word(c) {
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            out.push(Tok::Ident(&src[start..i]));
        } else {
            // One character (the source is ASCII where it matters; step over a whole UTF-8
            // character so slicing stays on boundaries).
            i += src[i..].chars().next().map_or(1, char::len_utf8);
            out.push(Tok::Punct(&src[start..i]));
        }
    }
    out
}

/// The names `toks` declares at module scope: every `fn NAME` and every `var<...> NAME`.
fn declared<'a>(toks: &[Tok<'a>]) -> HashSet<&'a str> {
    let code: Vec<Tok<'a>> = toks
        .iter()
        .copied()
        .filter(|t| !matches!(t, Tok::Trivia(_)))
        .collect();
    let mut names = HashSet::new();
    for (i, t) in code.iter().enumerate() {
        match t {
            Tok::Ident("fn") => {
                if let Some(Tok::Ident(n)) = code.get(i + 1) {
                    names.insert(*n);
                }
            }
            Tok::Ident("var") if code.get(i + 1) == Some(&Tok::Punct("<")) => {
                let close = code[i..].iter().position(|t| *t == Tok::Punct(">"));
                if let Some(Tok::Ident(n)) = close.and_then(|c| code.get(i + c + 1)) {
                    names.insert(*n);
                }
            }
            _ => {}
        }
    }
    names
}

/// `src` with every function and address-space variable it declares renamed `NAME{suffix}`
/// (at the declarations and at every use, member accesses such as `v.y` excepted), and every
/// `@binding(n)` made `@binding(n + shift)`. Names `src` uses but does not declare (override
/// constants, shared declarations, builtins) are left alone, so both copies share them.
pub(crate) fn wgsl_copy(src: &str, suffix: &str, shift: u32) -> String {
    let toks = tokens(src);
    let names = declared(&toks);
    let mut out = String::with_capacity(src.len() + src.len() / 8);
    // The last token that is not trivia, and the one before it.
    let mut prev: [Option<Tok<'_>>; 2] = [None, None];
    for &t in &toks {
        match t {
            Tok::Ident(n) if names.contains(n) && prev[0] != Some(Tok::Punct(".")) => {
                out.push_str(n);
                out.push_str(suffix);
            }
            Tok::Number(n)
                if prev[0] == Some(Tok::Punct("("))
                    && prev[1] == Some(Tok::Ident("binding"))
                    && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let v: u32 = n.parse().expect("a binding number");
                out.push_str(&(v + shift).to_string());
            }
            Tok::Ident(s) | Tok::Number(s) | Tok::Trivia(s) | Tok::Punct(s) => out.push_str(s),
        }
        if !matches!(t, Tok::Trivia(_)) {
            prev = [Some(t), prev[0]];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_declared_names_and_moves_bindings() {
        let src = "@group(0) @binding(5) var<storage, read_write> y: array<f32>;
// y and f in a comment stay
fn f(v: vec2<u32>) -> f32 { let y2 = v.y; return y[v.x] + f32(y2) + 1.5e-3 + g(4u); }";
        let got = wgsl_copy(src, "_d1", 8);
        let want = "@group(0) @binding(13) var<storage, read_write> y_d1: array<f32>;
// y and f in a comment stay
fn f_d1(v: vec2<u32>) -> f32 { let y2 = v.y; return y_d1[v.x] + f32(y2) + 1.5e-3 + g(4u); }";
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_suffix_and_shift_copy_verbatim() {
        let src = include_str!("../../shaders/rnn_step_direction.wgsl");
        assert_eq!(wgsl_copy(src, "", 0), src);
    }
}
