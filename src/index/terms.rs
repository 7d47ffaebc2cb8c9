//! Content terms of a text: the BM25 index's analysis (word splitting, lower-casing, accent
//! folding, English stemming) without English stop words.
//!
//! The index itself keeps stop words (they cost little in BM25, and dropping them changes
//! the schema's analyzer), but a query's stop words say nothing about whether a passage
//! answers it: "What is the capital of France?" shares "what", "is", "the", "of" with
//! almost every English passage. The relevance guard and the extractive answer's sentence
//! scoring look only at content terms. Pure functions; depends on nothing but tantivy's
//! tokenizers.

use std::collections::HashSet;
use std::sync::LazyLock;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};

/// English function words (articles, pronouns, auxiliaries, prepositions, conjunctions,
/// question words) and the politeness words of customer questions. Matched after
/// lower-casing and accent folding, before stemming.
pub const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
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
    "could",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
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
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "neither",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "please",
    "same",
    "shall",
    "she",
    "should",
    "so",
    "some",
    "such",
    "tell",
    "than",
    "thank",
    "thanks",
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
    "upon",
    "us",
    "very",
    "was",
    "we",
    "were",
    "what",
    "whatever",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yes",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The index's analysis chain with the stop words removed before stemming.
static CONTENT: LazyLock<TextAnalyzer> = LazyLock::new(|| {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
});

/// Every content term of `text` in order, repeats included (for term frequencies).
pub fn content_tokens(text: &str) -> Vec<String> {
    let mut analyzer = CONTENT.clone();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// Distinct content terms of `text`, in first-seen order, at most `max`.
pub fn content_terms(text: &str, max: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    content_tokens(text)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_dropped_and_content_words_stemmed() {
        assert_eq!(
            content_terms("What is the capital of France?", 64),
            ["capit", "franc"]
        );
        assert_eq!(
            content_tokens("Does the shop open on Sundays? The shop..."),
            ["shop", "open", "sunday", "shop"]
        );
        // Accents fold like the index's analysis; only stop words go.
        assert_eq!(
            content_terms("Où est le café", 64),
            ["ou", "est", "le", "cafe"]
        );
        assert!(content_terms("is it the one that you have", 64).is_empty());
        assert_eq!(content_terms("a b c d", 2), ["b", "c"]);
    }
}
