//! Man pages (roff with the `man` macros): `.TH` is the title, `.SH` / `.SS` headings,
//! font and size escapes stripped.

use crate::doc::{Ctx, Doc, decode_lossy};
use crate::{ConvertError, Converted, Format};

/// Converts a man page. Invalid UTF-8 is replaced (with a warning). Requests other than the
/// common `man` macros (`.de`, `.if`, `.ds`, tbl/eqn blocks, …) are dropped with their
/// arguments; text lines are kept. Gzip-compressed pages are not supported.
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let (source, lossy) = decode_lossy(bytes);
    let mut doc = Doc::new(Format::Man);
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    let mut saw_macro = false;
    // Next text line is a `.TP` tag: end it with a line break.
    let mut tag_line = false;
    for raw in source.lines() {
        if let Some(request) = raw.strip_prefix('.').or_else(|| raw.strip_prefix('\'')) {
            let request = request.trim_start();
            let (name, rest) = request.split_once([' ', '\t']).unwrap_or((request, ""));
            let args = parse_args(rest);
            let joined = |sep: &str| {
                args.iter()
                    .map(|a| unescape(a))
                    .collect::<Vec<_>>()
                    .join(sep)
            };
            match name {
                "TH" => {
                    saw_macro = true;
                    let title = args.first().map(|t| unescape(t)).unwrap_or_default();
                    let section = args.get(1).map(|s| unescape(s)).unwrap_or_default();
                    if !title.is_empty() {
                        doc.out.title = Some(if section.is_empty() {
                            title.clone()
                        } else {
                            format!("{title}({section})")
                        });
                        doc.out.metadata.insert("section".to_owned(), section);
                    }
                    if let Some(date) = args.get(2).map(|d| unescape(d)).filter(|d| !d.is_empty()) {
                        doc.out.metadata.insert("date".to_owned(), date);
                    }
                }
                "SH" => {
                    saw_macro = true;
                    doc.heading(1, &joined(" "));
                }
                "SS" => {
                    saw_macro = true;
                    doc.heading(2, &joined(" "));
                }
                "PP" | "LP" | "P" | "sp" | "HP" => doc.paragraph_break(),
                "br" | "nf" | "fi" | "EX" | "EE" => doc.line_break(),
                "TP" => {
                    doc.paragraph_break();
                    tag_line = true;
                }
                "IP" => {
                    doc.paragraph_break();
                    let tag = args.first().map(|t| unescape(t)).unwrap_or_default();
                    if !tag.is_empty() {
                        doc.push(ctx, &tag)?;
                        doc.line_break();
                    }
                }
                "B" | "I" | "SM" | "SB" => {
                    doc.push(ctx, &joined(" "))?;
                    doc.push(ctx, " ")?;
                }
                "BR" | "RB" | "BI" | "IB" | "RI" | "IR" => {
                    doc.push(ctx, &joined(""))?;
                    doc.push(ctx, " ")?;
                }
                "UR" | "MT" => {}
                "UE" | "ME" => doc.push(ctx, " ")?,
                _ => {}
            }
            if tag_line
                && name != "TP"
                && matches!(name, "B" | "I" | "BR" | "RB" | "BI" | "IB" | "RI" | "IR")
            {
                doc.line_break();
                tag_line = false;
            }
            continue;
        }
        let line = unescape(raw);
        doc.push(ctx, &line)?;
        if tag_line {
            tag_line = false;
            doc.line_break();
        } else {
            doc.push(ctx, "\n")?;
        }
    }
    if !saw_macro && doc.out.title.is_none() {
        doc.warn("no man page macros found");
    }
    Ok(doc.finish())
}

/// Splits request arguments, honouring double quotes (`""` inside quotes is a quote).
fn parse_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

/// Removes roff escapes: fonts (`\fB`, `\f(CW`, `\f[..]`), sizes (`\s+2`), comments (`\"`),
/// strings (`\*x`), and maps common special characters (`\(em`, `\-`, `\e`).
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { break };
        match e {
            '"' | '#' => break,
            'f' | 'F' | '*' | 'n' | 'g' | 'k' | 'm' | 'M' | 'Y' | 'V' => {
                // One-character name, `(xx` two-character name, or `[name]`.
                skip_name(&mut chars);
            }
            's' => {
                if matches!(chars.peek(), Some('+' | '-')) {
                    chars.next();
                }
                if chars.peek() == Some(&'(') {
                    chars.next();
                    chars.next();
                    chars.next();
                } else if chars.peek() == Some(&'[') {
                    skip_name(&mut chars);
                } else {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                }
            }
            '(' => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(special(&name));
            }
            '[' => {
                let name: String = chars.by_ref().take_while(|c| *c != ']').take(32).collect();
                out.push_str(special(&name));
            }
            'e' | '\\' => out.push('\\'),
            '-' => out.push('-'),
            ' ' | '~' | '0' => out.push(' '),
            '&' | '|' | '^' | ',' | '/' | ')' | 'c' | ':' | '%' | '{' | '}' => {}
            'o' | 'h' | 'v' | 'w' | 'l' | 'L' | 'D' | 'X' | 'b' | 'x' | 'z' | 'A' | 'B' | 'N'
            | 'R' => {
                // Escapes with a quoted argument: drop the argument.
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn skip_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('(') => {
            chars.next();
            chars.next();
        }
        Some('[') => {
            for c in chars.by_ref() {
                if c == ']' {
                    break;
                }
            }
        }
        _ => {}
    }
}

fn special(name: &str) -> &'static str {
    match name {
        "em" => "\u{2014}",
        "en" => "\u{2013}",
        "hy" | "mi" => "-",
        "bu" => "\u{2022}",
        "lq" | "Lq" => "\u{201C}",
        "rq" | "Rq" => "\u{201D}",
        "oq" => "\u{2018}",
        "cq" | "aq" => "'",
        "dq" => "\"",
        "co" => "\u{a9}",
        "rg" => "\u{ae}",
        "tm" => "\u{2122}",
        "de" => "\u{b0}",
        "mu" => "\u{d7}",
        "<=" => "\u{2264}",
        ">=" => "\u{2265}",
        "->" => "\u{2192}",
        "<-" => "\u{2190}",
        "ti" => "~",
        "ha" => "^",
        "rs" => "\\",
        "sl" => "/",
        "ba" | "or" => "|",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            unescape(r#"\fBls\fR \-l \(em a\e b \" comment"#),
            "ls -l \u{2014} a\\ b "
        );
        assert_eq!(
            unescape(r"\f(CWcode\fP \s-1small\s0 \[co]"),
            "code small \u{a9}"
        );
    }

    #[test]
    fn args() {
        assert_eq!(
            parse_args(r#"LS 1 "2024-01-01" "GNU ""core"" utils""#),
            vec!["LS", "1", "2024-01-01", "GNU \"core\" utils"]
        );
    }
}
