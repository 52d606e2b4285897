//! Property tests: chunking never loses, duplicates or reorders text and never exceeds
//! `max_chars`.

#![cfg(test)]

use std::collections::BTreeMap;

use p3ak_convert::{ChunkOptions, Converted, Format, Location, Section, chunk};
use proptest::prelude::*;

fn text_strategy() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        8 => "[a-zA-Z0-9éß漢]{1,12}",
        1 => "[a-z]{40,300}",
    ];
    let sep = prop_oneof![
        Just(" ".to_owned()),
        Just("  ".to_owned()),
        Just("\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("\n    ".to_owned()),
        Just("\t".to_owned()),
    ];
    prop::collection::vec((word, sep), 0..200)
        .prop_map(|parts| parts.into_iter().map(|(w, s)| w + &s).collect())
}

fn doc(texts: Vec<String>) -> Converted {
    Converted {
        format: Format::PlainText,
        title: None,
        metadata: BTreeMap::new(),
        language: None,
        sections: texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| Section {
                heading_path: vec![format!("h{i}")],
                text,
                location: Location::Document,
            })
            .collect(),
        attachments: Vec::new(),
        warnings: Vec::new(),
    }
}

fn non_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunks_preserve_text_and_bounds(
        texts in prop::collection::vec(text_strategy(), 1..4),
        target in 1usize..300,
        extra in 0usize..300,
    ) {
        let max = target + extra;
        let d = doc(texts.clone());
        let chunks = chunk(&d, &ChunkOptions { target_chars: target, max_chars: max });
        for c in &chunks {
            prop_assert!(!c.text.trim().is_empty());
            prop_assert!(c.text.chars().count() <= max, "{} > {max}", c.text.chars().count());
        }
        // Per section: the non-whitespace characters, in order, exactly once.
        for (i, text) in texts.iter().enumerate() {
            let path = vec![format!("h{i}")];
            let joined: String = chunks
                .iter()
                .filter(|c| c.heading_path == path)
                .map(|c| non_ws(&c.text))
                .collect();
            prop_assert_eq!(joined, non_ws(text));
        }
        // Words are kept whole unless a word alone is longer than max.
        let longest = texts
            .iter()
            .flat_map(|t| t.split_whitespace())
            .map(|w| w.chars().count())
            .max()
            .unwrap_or(0);
        if longest <= max {
            let words: Vec<&str> = texts.iter().flat_map(|t| t.split_whitespace()).collect();
            let chunk_words: Vec<&str> =
                chunks.iter().flat_map(|c| c.text.split_whitespace()).collect();
            prop_assert_eq!(chunk_words, words);
        }
    }
}
