//! all-MiniLM-L6-v2 (`p3ak-embed`) as the memory layer's [`TextEmbedder`].

use crate::TextEmbedder;

/// The embedding model, as [`crate::Memory`] and [`crate::store_embeddings`] want it.
pub struct MiniLm(p3ak_embed::Embedder);

impl MiniLm {
    pub fn new(embedder: p3ak_embed::Embedder) -> Self {
        Self(embedder)
    }
}

impl TextEmbedder for MiniLm {
    fn model(&self) -> &str {
        p3ak_embed::MODEL_NAME
    }

    fn dimensions(&self) -> usize {
        p3ak_embed::DIMENSIONS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}
