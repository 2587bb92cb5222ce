//! `wordcount`: words are maximal runs of letters (Unicode's Alphabetic characters and
//! combining marks, in UTF-8), lower-cased; output `word<TAB>count`. Bytes that are not UTF-8
//! separate words and are counted (`non_utf8_bytes`, warned about at the end of the job).

use crate::registry::{check_params, DynJob, JobError, JobInfo, Params};
use crate::runtime::table::ShortKey;
use crate::sdk::{self, push_u64, Combiner, Job, MapContext, ReduceContext, Values};

/// The `wordcount` job.
pub struct WordCount;

/// Registration of [`WordCount`].
pub const WORDCOUNT: JobInfo = JobInfo {
    name: "wordcount",
    about: "count words (maximal runs of Unicode letters, lower-cased)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("wordcount", p, &[])?;
        Ok(Box::new(WordCount))
    },
};

impl Job for WordCount {
    type Key = Vec<u8>;
    type Value = u64;
    const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);
    const STATE: bool = true;
    /// Version 1 split words at every byte beyond ASCII ("café" counted as "caf").
    const VERSION: u32 = 2;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        // A word has no zero byte. Its bytes are left unread where it has padded words, so
        // that the tokeniser need not write them (about 2% of the job).
        let not_utf8 = for_each_word(record, |word| match word.padded {
            Some(w) => ctx.emit_short(ShortKey::new(w, word.bytes.len()), 1),
            None => ctx.emit_encoded(word.bytes, 1),
        });
        if not_utf8 > 0 {
            ctx.count(NOT_UTF8, not_utf8);
        }
    }

    /// Words never span lines (a line break is no letter), so a block of lines is mapped as
    /// one text.
    fn map_lines(&mut self, lines: &[u8], ctx: &mut MapContext<'_, Self>) {
        self.map(lines, ctx);
    }

    fn reduce(&self, word: Vec<u8>, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
        let total: u64 = counts.sum();
        let buf = out.buffer();
        buf.extend_from_slice(&word);
        buf.push(b'\t');
        push_u64(buf, total);
        out.end_line();
    }
}

/// The counter of input bytes that are not UTF-8 (read as separators between words).
pub const NOT_UTF8: &str = "non_utf8_bytes";

/// The bytes of a `u64`, each `0x01`.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of each byte.
const HIGH: u64 = ONES * 0x80;
/// Each byte's case bit.
const CASE: u64 = ONES * 0x20;

/// Returns the high bit of each byte of `w` that is an ASCII letter (SWAR: eight bytes at
/// once, exact per byte, no carries between bytes). With the case bit set, letters are the
/// bytes strictly between 0x60 and 0x7b; bytes of 0x80 and up never are.
#[inline(always)]
fn letters(w: u64) -> u64 {
    let x = w | CASE;
    let low7 = x & (ONES * 0x7f);
    (ONES * (0x7f + 0x7b)).wrapping_sub(low7) & !x & (low7 + ONES * (0x7f - 0x60)) & HIGH
}

/// Returns the high bit of each byte of `w` that may be part of a word: an ASCII letter, or a
/// byte of 0x80 and up (part of a character beyond ASCII, sorted out by [`beyond_ascii`]).
#[inline(always)]
fn word_bytes(w: u64) -> u64 {
    letters(w) | (w & HIGH)
}

/// Reads eight bytes of `text` from `at`, zero-padded past its end (zero is no letter).
/// Near the end of a text of eight bytes or more, it shifts its last eight bytes down rather
/// than copying the rest through a buffer: every line's last word ends there.
#[inline(always)]
fn load(text: &[u8], at: usize) -> u64 {
    let n = text.len();
    let at8 = |i: usize| u64::from_le_bytes(text[i..i + 8].try_into().expect("8 bytes"));
    if at + 8 <= n {
        at8(at)
    } else if at >= n {
        0
    } else if n >= 8 {
        // The byte at `at` is byte `at + 8 - n` (1 to 7) of the last eight.
        at8(n - 8) >> (8 * (at + 8 - n))
    } else {
        let mut buf = [0u8; 8];
        buf[..n - at].copy_from_slice(&text[at..]);
        u64::from_le_bytes(buf)
    }
}

/// A word found by [`for_each_word`].
#[derive(Clone, Copy, Debug)]
pub struct Word<'a> {
    /// Its bytes, lower-cased.
    pub bytes: &'a [u8],
    /// For a word of up to 16 bytes, the same bytes as two little-endian `u64`s padded with
    /// zeros (no letter is zero, so the padding is unambiguous): a hash-table key that needs
    /// no copy through memory.
    pub padded: Option<[u64; 2]>,
}

/// Keeps the low `n` bytes of `w` (`n` at most 8).
#[inline(always)]
fn low_bytes(w: u64, n: usize) -> u64 {
    if n >= 8 {
        w
    } else {
        w & ((1u64 << (8 * n)) - 1)
    }
}

/// Calls `f` with each word of `text`, lower-cased: a maximal run of letters, which are the
/// characters of Unicode's Alphabetic property and combining marks (general category M: an
/// accent written as its own character stays in its word). Text is read as UTF-8; bytes that
/// are not UTF-8 separate words, and their number is returned.
///
/// Letters and bytes of 0x80 and up are found eight bytes at a time. A word of ASCII letters
/// (nearly every word of English text) is lower-cased on the stack if it has up to 64 bytes (a
/// letter with its case bit set is its lower-case form), in a `Vec` if longer. A run of
/// letters with a byte of 0x80 and up is decoded, split and lower-cased a character at a time
/// by [`Beyond::split`].
#[inline]
pub fn for_each_word(text: &[u8], mut f: impl FnMut(Word<'_>)) -> u64 {
    let n = text.len();
    let mut buf = [0u8; 64];
    let mut long = Vec::new();
    let mut beyond = Beyond::default();
    let mut i = 0;
    loop {
        // One call of `f` per word, so that it is inlined here: the words of a run beyond
        // ASCII are split into `beyond` first, and handed out from there.
        let word = if beyond.pending() {
            beyond.take()
        } else {
            if i >= n {
                break;
            }
            // The next letter, or byte beyond ASCII.
            let w = load(text, i);
            let m = word_bytes(w);
            if m == 0 {
                i += 8;
                continue;
            }
            i += (m.trailing_zeros() / 8) as usize;
            if i >= n {
                break;
            }
            let start = i;
            if w & m & m.wrapping_neg() != 0 {
                i = run_end(text, start);
                beyond.split(&text[start..i]);
                continue;
            }
            // The end of its ASCII letters; if a byte beyond ASCII comes next, the whole run
            // goes to `beyond`.
            let past_ascii = loop {
                let w = load(text, i);
                let rest = !letters(w) & HIGH;
                if rest != 0 {
                    i += (rest.trailing_zeros() / 8) as usize;
                    break w & rest & rest.wrapping_neg() != 0;
                }
                i += 8;
            };
            if past_ascii {
                i = run_end(text, i);
                beyond.split(&text[start..i]);
                continue;
            }
            let end = i.min(n);
            i = end;
            let len = end - start;
            if len <= 64 {
                let w0 = load(text, start) | CASE;
                let w1 = if len > 8 {
                    load(text, start + 8) | CASE
                } else {
                    0
                };
                buf[..8].copy_from_slice(&w0.to_le_bytes());
                buf[8..16].copy_from_slice(&w1.to_le_bytes());
                let mut k = 16;
                while k < len {
                    buf[k..k + 8].copy_from_slice(&(load(text, start + k) | CASE).to_le_bytes());
                    k += 8;
                }
                let padded =
                    (len <= 16).then(|| [low_bytes(w0, len), low_bytes(w1, len.saturating_sub(8))]);
                Word {
                    bytes: &buf[..len],
                    padded,
                }
            } else {
                long.clear();
                long.extend(text[start..end].iter().map(|b| b | 0x20));
                Word {
                    bytes: &long,
                    padded: None,
                }
            }
        };
        f(word);
    }
    beyond.not_utf8
}

/// Returns where the run of ASCII letters and bytes of 0x80 and up from `at` ends.
fn run_end(text: &[u8], mut at: usize) -> usize {
    loop {
        let rest = !word_bytes(load(text, at)) & HIGH;
        if rest != 0 {
            return (at + (rest.trailing_zeros() / 8) as usize).min(text.len());
        }
        at += 8;
    }
}

/// Whether `c` is a letter: Alphabetic, or a combining mark. The General Punctuation (U+2000
/// to U+206F: dashes, quotation marks, the characters beyond ASCII that most often end a word)
/// holds neither, and no mark is below U+0300: those skip the tables.
fn is_letter(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    if ('\u{2000}'..='\u{206f}').contains(&c) {
        return false;
    }
    c.is_alphabetic()
        || (c >= '\u{300}' && c.general_category_group() == GeneralCategoryGroup::Mark)
}

/// The lower-case form of `c` if it is a letter of Latin-1 (U+00C0 to U+00FF but for × and
/// ÷: the accented letters of Western European languages), whose capitals are their small
/// letters less 0x20; else `None`, and the general tables decide.
fn latin1_letter_lower(c: char) -> Option<char> {
    match c {
        '\u{d7}' | '\u{f7}' => None,
        '\u{c0}'..='\u{de}' => char::from_u32(c as u32 + 0x20),
        '\u{df}'..='\u{ff}' => Some(c),
        _ => None,
    }
}

/// The words of a run beyond ASCII, split by [`Beyond::split`] and handed out one at a time
/// by [`Beyond::take`]; and the bytes not UTF-8 seen so far.
#[derive(Default)]
struct Beyond {
    /// The words, lower-cased, one after another (UTF-8).
    words: Vec<u8>,
    /// Where each word ends in `words`.
    ends: Vec<usize>,
    /// The next word to hand out.
    next: usize,
    not_utf8: u64,
}

impl Beyond {
    fn pending(&self) -> bool {
        self.next < self.ends.len()
    }

    /// The next word (there must be one: [`Self::pending`]).
    fn take(&mut self) -> Word<'_> {
        let start = match self.next {
            0 => 0,
            k => self.ends[k - 1],
        };
        let bytes = &self.words[start..self.ends[self.next]];
        self.next += 1;
        // A character other than NUL has no zero byte in UTF-8: the padding is unambiguous.
        let padded = (bytes.len() <= 16).then(|| {
            let mut b = [0u8; 16];
            b[..bytes.len()].copy_from_slice(bytes);
            let half = |h: &[u8]| u64::from_le_bytes(h.try_into().expect("8 bytes"));
            [half(&b[..8]), half(&b[8..])]
        });
        Word { bytes, padded }
    }

    /// Ends the word being split, if it has begun.
    fn end_word(&mut self) {
        if self.words.len() > self.ends.last().copied().unwrap_or(0) {
            self.ends.push(self.words.len());
        }
    }

    fn push(&mut self, c: char) {
        self.words
            .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }

    /// Splits `run` (ASCII letters and bytes of 0x80 and up) into words: decoded as UTF-8,
    /// lower-cased a character at a time; the bytes of each maximal part of it that is not
    /// UTF-8 (as [`std::str::Utf8Error::error_len`] delimits them) separate words and are
    /// counted. Out of line: most text never comes here.
    #[cold]
    #[inline(never)]
    fn split(&mut self, run: &[u8]) {
        self.words.clear();
        self.ends.clear();
        self.next = 0;
        let mut i = 0;
        while i < run.len() {
            let b = run[i];
            if b < 0x80 {
                // An ASCII letter: a run holds no other ASCII byte.
                self.words.push(b | 0x20);
                i += 1;
                continue;
            }
            let width = match b {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => 0,
            };
            let c = run
                .get(i..i + width)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.chars().next());
            match c {
                Some(c) => {
                    i += width;
                    if let Some(lower) = latin1_letter_lower(c) {
                        self.push(lower);
                    } else if is_letter(c) {
                        c.to_lowercase().for_each(|l| self.push(l));
                    } else {
                        self.end_word();
                    }
                }
                None => {
                    let bad = std::str::from_utf8(&run[i..])
                        .err()
                        .and_then(|e| e.error_len())
                        .unwrap_or(run.len() - i);
                    self.not_utf8 += bad as u64;
                    i += bad;
                    self.end_word();
                }
            }
        }
        self.end_word();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, a character at a time: maximal runs of letters, lower-cased; each
    /// byte that is not UTF-8 separates words and is counted.
    fn naive(mut text: &[u8]) -> (Vec<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let mut w = String::new();
        let mut bad = 0;
        let mut flush = |w: &mut String| {
            if !w.is_empty() {
                out.push(std::mem::take(w).into_bytes());
            }
        };
        while !text.is_empty() {
            let (valid, skip) = match std::str::from_utf8(text) {
                Ok(s) => (s, 0),
                Err(e) => (
                    std::str::from_utf8(&text[..e.valid_up_to()]).expect("valid"),
                    e.error_len().unwrap_or(text.len() - e.valid_up_to()),
                ),
            };
            for c in valid.chars() {
                if is_letter(c) {
                    w.push_str(&c.to_lowercase().collect::<String>());
                } else {
                    flush(&mut w);
                }
            }
            if skip > 0 {
                flush(&mut w);
                bad += skip as u64;
            }
            text = &text[valid.len() + skip..];
        }
        flush(&mut w);
        (out, bad)
    }

    fn words(text: &[u8]) -> (Vec<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let bad = for_each_word(text, |w| {
            if let Some([lo, hi]) = w.padded {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&lo.to_le_bytes());
                b[8..].copy_from_slice(&hi.to_le_bytes());
                assert_eq!(&b[..w.bytes.len()], w.bytes);
                assert!(b[w.bytes.len()..].iter().all(|&x| x == 0));
            }
            out.push(w.bytes.to_vec())
        });
        (out, bad)
    }

    fn strings(text: &str) -> Vec<String> {
        words(text.as_bytes())
            .0
            .into_iter()
            .map(|w| String::from_utf8(w).expect("UTF-8"))
            .collect()
    }

    #[test]
    fn every_byte_is_classified_as_the_definition_says() {
        for b in 0..=255u8 {
            let text = [b'x', b, b'y'];
            assert_eq!(words(&text), naive(&text), "byte {b:#04x}");
        }
        let long = "Ab".repeat(50);
        let long_accented = "Äb".repeat(50);
        for text in [
            "",
            "a",
            "Hello, World!",
            "é café",
            "x1y2z",
            &long,
            &long_accented,
            "The END",
        ] {
            assert_eq!(words(text.as_bytes()), naive(text.as_bytes()), "{text:?}");
        }
    }

    #[test]
    fn words_beyond_ascii_are_whole_and_lower_cased() {
        assert_eq!(
            strings("Café in Zürich, Straße"),
            ["café", "in", "zürich", "straße"]
        );
        // Quotation marks and apostrophes beyond ASCII separate words as ASCII ones do.
        assert_eq!(strings("“Don’t,” she said"), ["don", "t", "she", "said"]);
        // An accent written as its own character (decomposed text) stays in its word.
        assert_eq!(strings("CAFE\u{301} noir"), ["cafe\u{301}", "noir"]);
        assert_eq!(strings("ΟΔΥΣΣΕΥΣ и Москва"), ["οδυσσευσ", "и", "москва"]);
        assert_eq!(
            strings("日本語のテキスト 2024年"),
            ["日本語のテキスト", "年"]
        );
        // A word beyond 16 bytes is handed out without its padded form.
        assert_eq!(strings("Überraschungsangriffe"), ["überraschungsangriffe"]);
    }

    #[test]
    fn letters_are_found_as_the_general_tables_say() {
        use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
        for c in (0..=0x2fff_u32).filter_map(char::from_u32) {
            let mark = c.general_category_group() == GeneralCategoryGroup::Mark;
            assert_eq!(is_letter(c), c.is_alphabetic() || mark, "{c:?}");
        }
    }

    #[test]
    fn latin1_letters_are_lower_cased_as_the_general_tables_say() {
        for c in '\u{80}'..='\u{ff}' {
            if let Some(lower) = latin1_letter_lower(c) {
                assert!(c.is_alphabetic(), "{c:?}");
                assert_eq!(c.to_lowercase().collect::<Vec<_>>(), [lower], "{c:?}");
            } else {
                assert!(
                    !('\u{c0}'..='\u{ff}').contains(&c) || !c.is_alphabetic(),
                    "{c:?}"
                );
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_separate_words_and_are_counted() {
        // Latin-1 "café olé": each é is one byte that is not UTF-8.
        assert_eq!(
            words(b"caf\xe9 ol\xe9s"),
            (vec![b"caf".to_vec(), b"ol".to_vec(), b"s".to_vec()], 2)
        );
        // A character cut short at the end of the text.
        assert_eq!(words(b"abc\xc3"), (vec![b"abc".to_vec()], 1));
        assert_eq!(words("plain ascii".as_bytes()).1, 0);
    }

    proptest! {
        #[test]
        fn words_are_found_as_a_character_at_a_time(
            text in prop::collection::vec(
                prop_oneof![
                    4 => (b'a'..=b'z').prop_map(|b| vec![b]),
                    2 => (b'A'..=b'Z').prop_map(|b| vec![b]),
                    2 => Just(vec![b' ']),
                    1 => any::<u8>().prop_map(|b| vec![b]),
                    2 => prop::sample::select(vec!['é', 'Ü', 'ß', 'İ', '’', '\u{301}', 'Ω', '語', '—', '\u{10348}'])
                        .prop_map(|c| c.to_string().into_bytes()),
                ],
                0..200,
            ).prop_map(|parts| parts.concat())
        ) {
            prop_assert_eq!(words(&text), naive(&text));
        }
    }
}
