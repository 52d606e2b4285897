//! Source code: kept as is, tagged with its language; chunks split at blank-line blocks.

use crate::doc::{Ctx, Doc, decode_lossy};
use crate::{ConvertError, Converted, Format};

/// The language tag for a source file extension (lowercase, without the dot), if known.
#[must_use]
pub fn language_for_extension(ext: &str) -> Option<&'static str> {
    let lang = match ext {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "tsx" | "mts" => "typescript",
        "go" => "go",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => "cpp",
        "cs" => "csharp",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "scala" | "sc" => "scala",
        "swift" => "swift",
        "m" | "mm" => "objective-c",
        "rb" => "ruby",
        "php" => "php",
        "pl" | "pm" => "perl",
        "lua" => "lua",
        "r" => "r",
        "jl" => "julia",
        "hs" => "haskell",
        "ml" | "mli" => "ocaml",
        "fs" | "fsx" => "fsharp",
        "ex" | "exs" => "elixir",
        "erl" | "hrl" => "erlang",
        "clj" | "cljs" | "edn" => "clojure",
        "lisp" | "el" | "scm" | "rkt" => "lisp",
        "dart" => "dart",
        "zig" => "zig",
        "nim" => "nim",
        "v" | "sv" => "verilog",
        "vhd" | "vhdl" => "vhdl",
        "sh" | "bash" | "zsh" | "fish" | "ksh" => "shell",
        "ps1" | "psm1" => "powershell",
        "bat" | "cmd" => "batch",
        "sql" => "sql",
        "css" | "scss" | "sass" | "less" => "css",
        "vue" => "vue",
        "svelte" => "svelte",
        "proto" => "protobuf",
        "graphql" | "gql" => "graphql",
        "tf" | "hcl" => "hcl",
        "nix" => "nix",
        "cmake" => "cmake",
        "mk" | "makefile" => "make",
        "dockerfile" => "dockerfile",
        "asm" | "s" => "assembly",
        "tex" | "sty" => "latex",
        "ini" | "cfg" | "conf" => "ini",
        _ => return None,
    };
    Some(lang)
}

/// Converts source code: one line-located section, the language from the name's extension
/// (or the whole file name for `Makefile` / `Dockerfile`). Invalid UTF-8 is replaced.
pub(crate) fn convert(
    name: Option<&str>,
    bytes: &[u8],
    ctx: &mut Ctx<'_>,
) -> Result<Converted, ConvertError> {
    let (text, lossy) = decode_lossy(bytes);
    let mut doc = Doc::new(Format::SourceCode);
    doc.out.language = name.and_then(language_of_name).map(str::to_owned);
    crate::text::lines_section(&mut doc, ctx, &text)?;
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    Ok(doc.finish())
}

fn language_of_name(name: &str) -> Option<&'static str> {
    let path = std::path::Path::new(name);
    let file = path.file_name()?.to_str()?.to_ascii_lowercase();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| file.clone());
    language_for_extension(&ext)
}
