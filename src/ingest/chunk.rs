//! Token-aware chunking of parsed documents with text-splitter: never across a change of page or
//! heading path, and within one page+heading group filled up to `max_tokens`, split at the
//! largest semantic boundary that fits (paragraph, line, sentence, word...).

use super::{Error, Parsed};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use text_splitter::{ChunkConfig, ChunkSizer, TextSplitter};
use tokenizers::Tokenizer;

/// One chunk of a document, ready to embed and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkText {
    pub text: String,
    pub page: Option<u32>,
    pub headings: Vec<String>,
    /// Tokens in `text` as the embedding model's tokenizer counts them, without the special
    /// tokens (e.g. [CLS]/[SEP]) the model adds around every input. Estimated in
    /// [`Chunker::approximate`] mode.
    pub token_count: u32,
}

/// Splits [`Parsed`] documents into chunks sized for an embedding model.
pub struct Chunker {
    sizer: Sizer,
}

enum Sizer {
    Tokens(Box<Tokenizer>),
    Approximate,
}

/// Rough size of an English token in characters, for the model-less sizer.
const CHARS_PER_TOKEN: usize = 4;

fn approximate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(CHARS_PER_TOKEN)
}

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        match self {
            // text-splitter's own `impl ChunkSizer for Tokenizer` panics on a tokenizer error;
            // an estimate is better than a crash for text the vocabulary cannot encode.
            Sizer::Tokens(t) => t
                .encode_fast(chunk, false)
                .map(|e| e.len())
                .unwrap_or_else(|_| approximate_tokens(chunk)),
            Sizer::Approximate => approximate_tokens(chunk),
        }
    }
}

impl Chunker {
    /// Loads a Hugging Face `tokenizer.json` (the embedding model's). Its own truncation and
    /// padding are switched off: chunks are sized here, and a truncating tokenizer would
    /// under-count long text.
    pub fn from_tokenizer_file(path: &Path) -> Result<Self, Error> {
        let load_error = |e: &dyn std::fmt::Display| {
            Error::Corrupt(format!("tokenizer {}: {e}", path.display()))
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| load_error(&e))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_error(&e))?;
        tokenizer.with_padding(None);
        Ok(Self {
            sizer: Sizer::Tokens(Box::new(tokenizer)),
        })
    }

    /// A chunker without a model: sizes text at about four characters per token. Chunks behave
    /// the same; counts are estimates (low for CJK scripts, where a character is about a token).
    pub fn approximate() -> Self {
        Self {
            sizer: Sizer::Approximate,
        }
    }

    /// Tokens in `text` as this chunker counts them.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.sizer.size(text)
    }

    /// Chunks of at most `max_tokens` tokens. Consecutive sections with the same page and
    /// heading path are merged (joined as paragraphs) while they fit, so small paragraphs share
    /// chunks; sections with a different page or heading path never do. A section too large
    /// for one chunk is split by text-splitter at its largest semantic boundaries (paragraphs,
    /// lines, sentences, words), its pieces sharing up to `overlap` tokens; `overlap` is
    /// clamped below `max_tokens`.
    ///
    /// Each section is tokenized once to plan the merge and each chunk once more for its exact
    /// count, so the cost stays linear in the text; only oversized sections go through
    /// text-splitter's search for split points.
    pub fn chunk(&self, parsed: &Parsed, max_tokens: usize, overlap: usize) -> Vec<ChunkText> {
        let capacity = max_tokens.max(1);
        let overlap = overlap.min(capacity - 1);
        let config = match ChunkConfig::new(capacity).with_overlap(overlap) {
            Ok(config) => config,
            // Unreachable after the clamp; chunking without overlap beats failing.
            Err(_) => ChunkConfig::new(capacity),
        };
        let splitter = TextSplitter::new(config.with_sizer(&self.sizer));
        let separator = self.sizer.size(SEPARATOR);

        let mut chunks = Vec::new();
        let groups = parsed
            .sections
            .chunk_by(|a, b| a.page == b.page && a.headings == b.headings);
        for group in groups {
            let Some(first) = group.first() else { continue };
            let mut pieces = Vec::new();
            let mut open = Open::default();
            for section in group {
                let text = section.text.trim();
                if text.is_empty() {
                    continue;
                }
                let tokens = self.sizer.size(text);
                if tokens > capacity {
                    self.close(&mut open, &splitter, capacity, &mut pieces);
                    let mut split = self.split(&splitter, text, capacity);
                    // The remainder stays open so the following small sections can join it.
                    let last = split.pop();
                    for piece in split {
                        let tokens = self.sizer.size(&piece);
                        pieces.push((piece, tokens));
                    }
                    if let Some(last) = last {
                        open.tokens = self.sizer.size(&last);
                        open.text = last;
                    }
                    continue;
                }
                // Token counts are close to additive (exactly, for WordPiece); the separator's
                // own count keeps the estimate on the safe side, and `close` checks it.
                if !open.text.is_empty() && open.tokens + separator + tokens > capacity {
                    self.close(&mut open, &splitter, capacity, &mut pieces);
                }
                if open.text.is_empty() {
                    open.text.push_str(text);
                    open.tokens = tokens;
                } else {
                    open.text.push_str(SEPARATOR);
                    open.text.push_str(text);
                    open.tokens += separator + tokens;
                }
            }
            self.close(&mut open, &splitter, capacity, &mut pieces);
            chunks.extend(pieces.into_iter().map(|(text, tokens)| ChunkText {
                text,
                page: first.page,
                headings: first.headings.clone(),
                token_count: u32::try_from(tokens).unwrap_or(u32::MAX),
            }));
        }
        chunks
    }

    /// Ends the open chunk with its exact token count; if merging made it larger than the
    /// estimate allowed for (a tokenizer that is not additive), it is split again.
    fn close(
        &self,
        open: &mut Open,
        splitter: &TextSplitter<&Sizer>,
        capacity: usize,
        pieces: &mut Vec<(String, usize)>,
    ) {
        let text = std::mem::take(&mut open.text);
        open.tokens = 0;
        if text.trim().is_empty() {
            return;
        }
        let tokens = self.sizer.size(&text);
        if tokens <= capacity {
            pieces.push((text, tokens));
            return;
        }
        for piece in self.split(splitter, &text, capacity) {
            let tokens = self.sizer.size(&piece);
            pieces.push((piece, tokens));
        }
    }

    fn split(&self, splitter: &TextSplitter<&Sizer>, text: &str, capacity: usize) -> Vec<String> {
        catch_unwind(AssertUnwindSafe(|| {
            splitter
                .chunks(text)
                .filter(|c| !c.trim().is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }))
        .unwrap_or_else(|_| self.hard_split(text, capacity))
    }

    /// Last resort if text-splitter panics: cut at character boundaries, shrinking each piece
    /// until it fits.
    fn hard_split(&self, text: &str, capacity: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let mut len = (capacity * CHARS_PER_TOKEN).min(chars.len() - start);
            loop {
                let piece: String = chars[start..start + len].iter().collect();
                if len == 1 || self.sizer.size(&piece) <= capacity {
                    out.push(piece);
                    break;
                }
                len = (len / 2).max(1);
            }
            start += len;
        }
        out
    }
}

/// Sections are joined as paragraphs, the boundary text-splitter ranks highest.
const SEPARATOR: &str = "\n\n";

/// The chunk being filled.
#[derive(Default)]
struct Open {
    text: String,
    tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Section;

    fn section(text: &str, page: Option<u32>, headings: &[&str]) -> Section {
        Section {
            text: text.to_owned(),
            page,
            headings: headings.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn doc(sections: Vec<Section>) -> Parsed {
        Parsed {
            sections,
            ..Parsed::default()
        }
    }

    #[test]
    fn merges_small_sections_but_never_across_headings_or_pages() {
        let parsed = doc(vec![
            section("Alpha one.", Some(1), &["A"]),
            section("Alpha two.", Some(1), &["A"]),
            section("Beta.", Some(1), &["A", "B"]),
            section("Alpha again.", Some(1), &["A"]),
            section("Page two.", Some(2), &["A"]),
        ]);
        let chunks = Chunker::approximate().chunk(&parsed, 400, 60);
        let got: Vec<(&str, Option<u32>, usize)> = chunks
            .iter()
            .map(|c| (c.text.as_str(), c.page, c.headings.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Alpha one.\n\nAlpha two.", Some(1), 1),
                ("Beta.", Some(1), 2),
                ("Alpha again.", Some(1), 1),
                ("Page two.", Some(2), 1),
            ]
        );
        assert_eq!(chunks[0].token_count, 6); // 22 chars / 4, rounded up
    }

    #[test]
    fn splits_long_sections_within_bounds_with_overlap() {
        let sentence = "The quick brown fox jumps over the lazy dog near the river bank. ";
        let long = sentence.repeat(200);
        let parsed = doc(vec![section(&long, None, &["Long"])]);
        let chunker = Chunker::approximate();
        let chunks = chunker.chunk(&parsed, 100, 15);
        assert!(chunks.len() >= 30, "only {} chunks", chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            assert!(
                c.token_count as usize <= 100,
                "chunk of {} tokens",
                c.token_count
            );
            // Only the last chunk may be a small remainder.
            if i + 1 < chunks.len() {
                assert!(
                    c.token_count >= 80,
                    "chunk of {} tokens is too small",
                    c.token_count
                );
            }
            assert_eq!(c.headings, vec!["Long".to_owned()]);
        }
        // Overlap: consecutive chunks share text.
        let tail: String = chunks[0]
            .text
            .chars()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(
            chunks[1].text.contains(tail.trim()),
            "no overlap between {:?} and {:?}",
            chunks[0].text,
            chunks[1].text
        );
    }

    #[test]
    fn remainder_of_a_split_section_absorbs_following_small_sections() {
        let long = "Sentence number one is here. ".repeat(40); // 1160 chars, 290 tokens
        let parsed = doc(vec![
            section(&long, None, &[]),
            section("Short tail.", None, &[]),
            section("Another.", None, &[]),
        ]);
        let chunks = Chunker::approximate().chunk(&parsed, 100, 10);
        let last = chunks.last().unwrap();
        assert!(
            last.text
                .ends_with("Sentence number one is here.\n\nShort tail.\n\nAnother."),
            "{last:?}"
        );
        assert!(chunks.iter().all(|c| c.token_count <= 100));
        // Every sentence survives the split.
        let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert!(joined.matches("Sentence number one").count() >= 40);
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let parsed = doc(vec![section("word ".repeat(50).as_str(), None, &[])]);
        let chunker = Chunker::approximate();
        assert!(!chunker.chunk(&parsed, 0, 0).is_empty());
        assert!(!chunker.chunk(&parsed, 5, 500).is_empty());
        assert!(chunker.chunk(&Parsed::default(), 400, 60).is_empty());
        let unbroken = doc(vec![section(&"x".repeat(10_000), None, &[])]);
        let chunks = chunker.chunk(&unbroken, 50, 0);
        assert!(chunks.iter().all(|c| c.token_count <= 50));
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), 10_000);
    }

    #[test]
    fn missing_tokenizer_file_is_an_error() {
        let err = Chunker::from_tokenizer_file(Path::new("/nonexistent/tokenizer.json"));
        assert!(matches!(err, Err(Error::Corrupt(_))));
    }

    #[test]
    fn real_tokenizer_counts_tokens_and_bounds_chunks() {
        let Some(dir) = crate::test_model::model_dir(
            "ingest::chunk::real_tokenizer_counts_tokens_and_bounds_chunks",
        ) else {
            return;
        };
        let chunker = Chunker::from_tokenizer_file(&dir.join("tokenizer.json")).unwrap();
        // MiniLM's WordPiece: "hello world" is two tokens without [CLS]/[SEP].
        assert_eq!(chunker.count_tokens("hello world"), 2);
        let long =
            "Employees receive twenty-five days of paid leave per calendar year. ".repeat(300);
        let parsed = doc(vec![section(&long, Some(3), &["Leave"])]);
        let chunks = chunker.chunk(&parsed, 400, 60);
        assert!(chunks.len() >= 5);
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.token_count <= 400, "chunk of {} tokens", c.token_count);
            if i + 1 < chunks.len() {
                assert!(c.token_count >= 300, "chunk of {} tokens", c.token_count);
            }
            assert_eq!(c.page, Some(3));
            assert_eq!(c.token_count as usize, chunker.count_tokens(&c.text));
        }
        // Truncation is off: a long text is counted in full, not cut at the model's 128/256.
        assert!(chunker.count_tokens(&long) > 3000);
    }
}
