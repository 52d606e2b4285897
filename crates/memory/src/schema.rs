//! The search index's schema and its text analysis.

use tantivy::Index;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, TokenStream,
};

/// Name of the analyzer registered on every index.
pub(crate) const ANALYZER: &str = "p3ak";
/// Bumped when the schema or the analysis changes; an index of another version is rebuilt.
/// 2: English stemming.
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// One field per part of a chunk.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// The document's id (32 hex digits): one term per chunk, for deletes and filters.
    pub(crate) doc: Field,
    /// The id's high and low 64 bits, as fast fields: chunk addresses without stored reads.
    pub(crate) doc_hi: Field,
    pub(crate) doc_lo: Field,
    /// The chunk's position within its document.
    pub(crate) ord: Field,
    /// The document's title (structure signal).
    pub(crate) title: Field,
    /// The chunk's heading path, joined with " › " (structure signal).
    pub(crate) heading: Field,
    /// The chunk's text (full-text signal).
    pub(crate) body: Field,
    /// `key=value` for each of the document's tags (filters).
    pub(crate) tag: Field,
    /// Where in the document: page, sheet, slide, message (shown only).
    pub(crate) location: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = |stored: bool| {
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let options = TextOptions::default().set_indexing_options(indexing);
        if stored {
            options.set_stored()
        } else {
            options
        }
    };
    let fields = Fields {
        doc: builder.add_text_field("doc", STRING | STORED),
        doc_hi: builder.add_u64_field("doc_hi", FAST),
        doc_lo: builder.add_u64_field("doc_lo", FAST),
        ord: builder.add_u64_field("ord", INDEXED | STORED | FAST),
        title: builder.add_text_field("title", text(true)),
        heading: builder.add_text_field("heading", text(true)),
        body: builder.add_text_field("body", text(true)),
        tag: builder.add_text_field("tag", STRING),
        location: builder.add_text_field("location", STORED),
    };
    (builder.build(), fields)
}

/// Words split at anything not a letter or digit, long tokens dropped, lowercased, accents
/// folded, then reduced to their stem by the English Snowball stemmer ("connections",
/// "connected" → "connect"). Without stemming a query's word forms had to match the text's
/// exactly, and BM25 fell behind SQLite FTS5 with its porter stemmer on every collection (see
/// docs/search.md). The stemmer leaves words of other languages mostly alone; the semantic
/// signal covers them.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// [`analyzer`] without the stemmer: the words a query's function words are recognised in.
fn words() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

pub(crate) fn register(index: &Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

/// The terms of a query, in order, each once. Function words ("how", "does", "the") are
/// dropped unless nothing else is left: in a question they match nearly every chunk and
/// only add noise to the ranking.
pub(crate) fn query_terms(query: &str) -> Vec<String> {
    let mut words = words();
    let mut stream = words.token_stream(query);
    let mut all: Vec<String> = Vec::new();
    while stream.advance() {
        let text = &stream.token().text;
        if !all.contains(text) {
            all.push(text.clone());
        }
    }
    let content: Vec<String> = all
        .iter()
        .filter(|t| STOPWORDS.binary_search(&t.as_str()).is_err())
        .cloned()
        .collect();
    let kept = if content.is_empty() { all } else { content };
    // The index holds stems: stem the kept words the same way.
    let mut stemmer = analyzer();
    let mut terms: Vec<String> = Vec::new();
    for word in kept {
        let mut stream = stemmer.token_stream(&word);
        while stream.advance() {
            let text = &stream.token().text;
            if !terms.contains(text) {
                terms.push(text.clone());
            }
        }
    }
    terms
}

/// English function words (the common NLTK list), sorted for binary search.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "s",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn query_terms_drop_function_words_unless_nothing_is_left() {
        assert_eq!(
            query_terms("Why does Python use indentation?"),
            vec!["python", "use", "indent"]
        );
        assert_eq!(
            query_terms("to be or not to be"),
            vec!["to", "be", "or", "not"]
        );
        assert_eq!(query_terms("Café CAFÉ"), vec!["cafe"]);
        assert_eq!(
            query_terms("connecting connections"),
            vec!["connect"],
            "word forms meet at their stem"
        );
        assert!(query_terms("  ?! ").is_empty());
    }
}
