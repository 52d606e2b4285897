//! Search: BM25, semantic and structure signals over the chunks, fused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use p3ak_vault::DocId;
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Searcher, TantivyDocument, Term};

use crate::fusion::{self, Fusion, Part, Ranked, Signal};
use crate::memory::{Memory, id_of};
use crate::schema::{Fields, query_terms};
use crate::{MemoryError, Result};

/// Joins a chunk's headings in the index and in results.
pub const HEADING_SEPARATOR: &str = " › ";
/// Characters of a snippet.
const SNIPPET_CHARS: usize = 240;

/// Which signals rank the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bm25,
    Semantic,
    Hybrid,
}

/// A search.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    pub query: &'a str,
    /// Results wanted.
    pub k: usize,
    pub mode: Mode,
    /// Only chunks of documents carrying all these tags.
    pub tags: BTreeMap<String, String>,
    pub fusion: Fusion,
    /// Candidates each signal contributes to the fusion (at least `k`).
    pub candidates: usize,
}

impl<'a> SearchRequest<'a> {
    pub fn new(query: &'a str) -> Self {
        Self {
            query,
            k: 10,
            mode: Mode::Hybrid,
            tags: BTreeMap::new(),
            fusion: Fusion::Convex,
            candidates: 100,
        }
    }
}

/// The text of a result with the query's terms located.
#[derive(Debug, Clone, Serialize)]
pub struct Snippet {
    pub text: String,
    /// Byte ranges of `text` that matched the query's terms.
    pub highlights: Vec<(usize, usize)>,
}

impl Snippet {
    /// The text with each highlight wrapped in `open` … `close`.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 8 * self.highlights.len());
        let mut at = 0;
        for &(start, end) in &self.highlights {
            let (Some(before), Some(inside)) =
                (self.text.get(at..start), self.text.get(start..end))
            else {
                continue;
            };
            out.push_str(before);
            out.push_str(open);
            out.push_str(inside);
            out.push_str(close);
            at = end;
        }
        out.push_str(self.text.get(at..).unwrap_or_default());
        out
    }
}

/// How one signal placed a result (`--explain`).
pub type SignalDetail = Part;

/// One result: a chunk of a document.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: DocId,
    /// The chunk's position in its document.
    pub chunk: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub heading_path: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub snippet: Snippet,
    pub score: f32,
    pub signals: Vec<SignalDetail>,
}

/// Results, and what ranked them.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    pub mode: Mode,
    pub fusion: &'static str,
    /// Signals that took part.
    pub signals: Vec<Signal>,
    /// Chunks with embeddings out of all chunks (semantic coverage).
    pub embedded_chunks: usize,
    pub chunks: usize,
    /// Why a signal was left out or is partial, for the operator.
    pub notes: Vec<String>,
}

/// Large searches running now in this process (they share rayon's pool).
static LARGE_SEARCHES_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One large search counted in [`LARGE_SEARCHES_RUNNING`] while it lives.
struct Running {
    before: usize,
}

impl Running {
    fn enter() -> Running {
        Running {
            before: LARGE_SEARCHES_RUNNING.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// No other large search was running when this one started.
    fn alone(&self) -> bool {
        self.before == 0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        LARGE_SEARCHES_RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// From this many vectors a hybrid search scans them while it runs the text searches (the
/// scan's own split over the cores starts there too); below, both are too quick to overlap.
const PARALLEL_SIGNALS_MIN_ROWS: usize = 16_384;

impl Memory<'_> {
    /// Searches. `query_vector` is the query's embedding when a model is available: without
    /// it a hybrid search falls back to the other signals and says so.
    pub fn search(
        &self,
        request: &SearchRequest<'_>,
        query_vector: Option<&[f32]>,
    ) -> Result<SearchResults> {
        let searcher = self.reader.searcher();
        let status_chunks = self.chunks.len();
        let (lists, terms, notes) = self.ranked_lists(&searcher, request, query_vector)?;
        let bm25_query = self.text_query(&terms, &[self.fields.body], &request.tags);
        let signals = lists.iter().map(|l| l.signal).collect();
        let fused = fusion::fuse(&lists, request.fusion, |k| k.0);

        let snippets = if terms.is_empty() {
            None
        } else {
            let mut generator =
                SnippetGenerator::create(&searcher, &*bm25_query, self.fields.body)?;
            generator.set_max_num_chars(SNIPPET_CHARS);
            Some(generator)
        };
        let mut hits = Vec::with_capacity(request.k);
        for f in fused.into_iter().take(request.k) {
            let Some(address) = self.chunks.get(&f.key) else {
                continue;
            };
            let Some(id) = id_of(f.key.0) else {
                continue;
            };
            let doc: TantivyDocument = searcher.doc(*address)?;
            let info = self.docs.get(&f.key.0);
            hits.push(Hit {
                id,
                chunk: f.key.1,
                title: info.and_then(|d| d.title.clone()),
                source: info.and_then(|d| d.source.clone()),
                heading_path: split_heading(&first_str(&doc, self.fields.heading)),
                location: Some(first_str(&doc, self.fields.location)).filter(|l| !l.is_empty()),
                snippet: snippet(&doc, self.fields.body, snippets.as_ref()),
                score: f.score,
                signals: f.parts,
            });
        }
        Ok(SearchResults {
            hits,
            mode: request.mode,
            fusion: request.fusion.name(),
            signals,
            embedded_chunks: self.vectors.len(),
            chunks: status_chunks,
            notes,
        })
    }

    /// Each signal's ranked chunks for `request` (its mode decides which signals run), before
    /// fusion: the evaluation fuses them in many ways without searching again.
    pub(crate) fn signal_lists(
        &self,
        request: &SearchRequest<'_>,
        query_vector: Option<&[f32]>,
    ) -> Result<Vec<Ranked<(u128, u32)>>> {
        let searcher = self.reader.searcher();
        Ok(self.ranked_lists(&searcher, request, query_vector)?.0)
    }

    /// Each signal's ranked chunks for a search, before fusion, with the query's terms and
    /// the notes for the operator.
    #[expect(clippy::type_complexity, reason = "private; named at its two callers")]
    fn ranked_lists(
        &self,
        searcher: &Searcher,
        request: &SearchRequest<'_>,
        query_vector: Option<&[f32]>,
    ) -> Result<(Vec<Ranked<(u128, u32)>>, Vec<String>, Vec<String>)> {
        let candidates = request.candidates.max(request.k);
        let terms = query_terms(request.query);
        let status_chunks = self.chunks.len();
        let mut notes = Vec::new();
        let semantic_wanted = matches!(request.mode, Mode::Semantic | Mode::Hybrid);
        let semantic_vector = match (semantic_wanted, query_vector) {
            (false, _) => None,
            (true, None) => {
                if request.mode == Mode::Semantic {
                    return Err(MemoryError::Invalid(
                        "semantic search needs the embedding model: run `p3ak models install`"
                            .into(),
                    ));
                }
                notes.push(
                    "semantic ranking is off: no embedding model installed (`p3ak models install`)"
                        .to_owned(),
                );
                None
            }
            (true, Some(v)) if self.vectors.len() == 0 => {
                let _ = v;
                notes.push(format!(
                    "semantic ranking is off: no chunk has an embedding yet ({status_chunks} pending; see `p3ak vault status`)"
                ));
                None
            }
            (true, Some(v)) => {
                if self.vectors.len() < status_chunks {
                    notes.push(format!(
                        "semantic ranking covers {} of {status_chunks} chunks; the rest are still being embedded",
                        self.vectors.len()
                    ));
                }
                Some(v)
            }
        };
        if terms.is_empty() && semantic_vector.is_none() {
            return Err(MemoryError::Invalid(
                "the query has no words to search for".into(),
            ));
        }

        let filter = self.tag_filter(&request.tags);
        let text_lists = || -> Result<Vec<Ranked<(u128, u32)>>> {
            let mut lists = Vec::new();
            if request.mode != Mode::Semantic && !terms.is_empty() {
                let query = self.text_query(&terms, &[self.fields.body], &request.tags);
                lists.push(Ranked {
                    signal: Signal::Bm25,
                    weight: fusion::weight(Signal::Bm25),
                    hits: self.run_text(searcher, &*query, candidates)?,
                });
            }
            if request.mode == Mode::Hybrid && !terms.is_empty() {
                let query = self.text_query(
                    &terms,
                    &[self.fields.title, self.fields.heading],
                    &request.tags,
                );
                lists.push(Ranked {
                    signal: Signal::Structure,
                    weight: fusion::weight(Signal::Structure),
                    hits: self.run_text(searcher, &*query, candidates)?,
                });
            }
            Ok(lists)
        };
        let semantic_list = || {
            semantic_vector.map(|vector| {
                // Deleted documents' rows are skipped by the table itself.
                let keep: Option<&(dyn Fn(u128) -> bool + Sync)> =
                    (!request.tags.is_empty()).then_some(&filter);
                let hits = self
                    .nearest_rows(vector, candidates, keep)
                    .into_iter()
                    .filter_map(|(row, score)| Some((*self.vectors.keys.get(row)?, score)))
                    .collect();
                Ranked {
                    signal: Signal::Semantic,
                    weight: fusion::weight(Signal::Semantic),
                    hits,
                }
            })
        };
        // A large table's scan and the text searches run at once: a hybrid query waits for the
        // longer of the two instead of their sum. Alone, the whole search runs on rayon's pool
        // (`join`: the scan's parts are then split among the pool's own threads, no wake-ups).
        // With other searches running, this thread keeps the text searches and only the scan
        // goes to the pool: a pool thread waiting inside `join` steals other searches' work, and
        // with every search doing that, 50 concurrent clients saw a p99 of 3 s (measured).
        let (text, semantic) =
            if semantic_vector.is_some() && self.vectors.len() >= PARALLEL_SIGNALS_MIN_ROWS {
                let running = Running::enter();
                if running.alone() {
                    rayon::join(text_lists, semantic_list)
                } else {
                    let mut semantic = None;
                    let text = rayon::in_place_scope(|scope| {
                        scope.spawn(|_| semantic = semantic_list());
                        text_lists()
                    });
                    (text, semantic)
                }
            } else {
                (text_lists(), semantic_list())
            };
        let mut lists = text?;
        lists.extend(semantic);
        Ok((lists, terms, notes))
    }

    /// Documents passing the tag filter.
    fn tag_filter<'a>(&'a self, tags: &'a BTreeMap<String, String>) -> impl Fn(u128) -> bool + 'a {
        move |doc| {
            tags.is_empty()
                || self.docs.get(&doc).is_some_and(|d| {
                    tags.iter()
                        .all(|(k, v)| d.tags.get(k).is_some_and(|have| have == v))
                })
        }
    }

    /// Any of `terms` in any of `fields`, within the documents that carry `tags`.
    fn text_query(
        &self,
        terms: &[String],
        fields: &[Field],
        tags: &BTreeMap<String, String>,
    ) -> Box<dyn Query> {
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for field in fields {
            for term in terms {
                let query = TermQuery::new(
                    Term::from_field_text(*field, term),
                    IndexRecordOption::WithFreqs,
                );
                should.push((Occur::Should, Box::new(query)));
            }
        }
        let any_term: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        if tags.is_empty() {
            return any_term;
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, any_term)];
        for (k, v) in tags {
            let tag = TermQuery::new(
                Term::from_field_text(self.fields.tag, &format!("{k}={v}")),
                IndexRecordOption::Basic,
            );
            // A filter: it must match and adds nothing to the score.
            must.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(tag), 0.0)),
            ));
        }
        Box::new(BooleanQuery::new(must))
    }

    /// The top chunks of a text query, of live documents only.
    fn run_text(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        limit: usize,
    ) -> Result<Vec<((u128, u32), f32)>> {
        let top = searcher.search(query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            if let Some(key) = self.key_of(searcher, address)?
                && self.docs.contains_key(&key.0)
            {
                out.push((key, score));
            }
        }
        Ok(out)
    }

    fn key_of(&self, searcher: &Searcher, address: DocAddress) -> Result<Option<(u128, u32)>> {
        let segment = searcher.segment_reader(address.segment_ord);
        let fast = segment.fast_fields();
        let hi = fast.u64("doc_hi")?.first(address.doc_id);
        let lo = fast.u64("doc_lo")?.first(address.doc_id);
        let ord = fast.u64("ord")?.first(address.doc_id);
        Ok(match (hi, lo, ord) {
            (Some(hi), Some(lo), Some(ord)) => Some((
                (u128::from(hi) << 64) | u128::from(lo),
                u32::try_from(ord).unwrap_or(u32::MAX),
            )),
            _ => None,
        })
    }
}

pub(crate) fn first_str(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn split_heading(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(HEADING_SEPARATOR).map(str::to_owned).collect()
}

/// The text a chunk's embedding is computed from: its heading path, then its text.
pub(crate) fn embedding_text(doc: &TantivyDocument, fields: &Fields) -> String {
    let heading = first_str(doc, fields.heading);
    let body = first_str(doc, fields.body);
    if heading.is_empty() {
        body
    } else {
        format!("{heading}\n{body}")
    }
}

fn snippet(doc: &TantivyDocument, body: Field, generator: Option<&SnippetGenerator>) -> Snippet {
    if let Some(generator) = generator {
        let s = generator.snippet_from_doc(doc);
        if !s.highlighted().is_empty() {
            return Snippet {
                text: s.fragment().to_owned(),
                highlights: s.highlighted().iter().map(|r| (r.start, r.end)).collect(),
            };
        }
    }
    // No term matched (a semantic hit): the chunk's beginning, cut at a word.
    let text = first_str(doc, body);
    let mut end = text.len();
    if let Some((i, _)) = text.char_indices().nth(SNIPPET_CHARS) {
        end = text
            .get(..i)
            .and_then(|t| t.rfind(char::is_whitespace))
            .unwrap_or(i);
    }
    Snippet {
        text: text.get(..end).unwrap_or_default().trim_end().to_owned(),
        highlights: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_mark_their_highlights() {
        let s = Snippet {
            text: "the vault is encrypted".into(),
            highlights: vec![(4, 9), (13, 22)],
        };
        assert_eq!(s.marked("[", "]"), "the [vault] is [encrypted]");
        let bad = Snippet {
            text: "é".into(),
            highlights: vec![(0, 1)],
        };
        assert_eq!(
            bad.marked("[", "]"),
            "é",
            "a range off a char boundary is skipped"
        );
    }
}
