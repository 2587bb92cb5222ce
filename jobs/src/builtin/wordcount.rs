//! `wordcount`: words are maximal runs of ASCII letters, lower-cased; output `word<TAB>count`.

use crate::registry::{check_params, DynJob, JobError, JobInfo, Params};
use crate::runtime::table::ShortKey;
use crate::sdk::{self, push_u64, Combiner, Job, MapContext, ReduceContext, Values};

/// The `wordcount` job.
pub struct WordCount;

/// Registration of [`WordCount`].
pub const WORDCOUNT: JobInfo = JobInfo {
    name: "wordcount",
    about: "count words (maximal runs of ASCII letters, lower-cased)",
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

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        // A word has no zero byte. Its bytes are left unread where it has padded words, so
        // that the tokeniser need not write them (about 2% of the job).
        for_each_word(record, |word| match word.padded {
            Some(w) => ctx.emit_short(ShortKey::new(w, word.bytes.len()), 1),
            None => ctx.emit_encoded(word.bytes, 1),
        });
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

/// Calls `f` with each word of `text` (a maximal run of ASCII letters), lower-cased. Letters
/// are found eight bytes at a time; a word of up to 64 bytes is lower-cased on the stack
/// (a letter with its case bit set is its lower-case form), a longer one in a `Vec`.
#[inline]
pub fn for_each_word(text: &[u8], mut f: impl FnMut(Word<'_>)) {
    let n = text.len();
    let mut buf = [0u8; 64];
    let mut i = 0;
    while i < n {
        // The next letter.
        let m = letters(load(text, i));
        if m == 0 {
            i += 8;
            continue;
        }
        i += (m.trailing_zeros() / 8) as usize;
        if i >= n {
            break;
        }
        // The end of its word.
        let start = i;
        loop {
            let rest = !letters(load(text, i)) & HIGH;
            if rest != 0 {
                i += (rest.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let end = i.min(n);
        let len = end - start;
        // One call of `f` per word, so that it is inlined here.
        let long: Vec<u8>;
        let word = if len <= 64 {
            let w0 = load(text, start) | CASE;
            let w1 = if len > 8 {
                load(text, start + 8) | CASE
            } else {
                0
            };
            buf[..8].copy_from_slice(&w0.to_le_bytes());
            buf[8..16].copy_from_slice(&w1.to_le_bytes());
            for (k, chunk) in buf
                .chunks_exact_mut(8)
                .enumerate()
                .take(len.div_ceil(8))
                .skip(2)
            {
                chunk.copy_from_slice(&(load(text, start + 8 * k) | CASE).to_le_bytes());
            }
            let padded =
                (len <= 16).then(|| [low_bytes(w0, len), low_bytes(w1, len.saturating_sub(8))]);
            Word {
                bytes: &buf[..len],
                padded,
            }
        } else {
            long = text[start..end].iter().map(|b| b | 0x20).collect();
            Word {
                bytes: &long,
                padded: None,
            }
        };
        f(word);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: maximal runs of ASCII letters, lower-cased, a byte at a time.
    fn naive(text: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut w = Vec::new();
        for &b in text {
            if b.is_ascii_alphabetic() {
                w.push(b.to_ascii_lowercase());
            } else if !w.is_empty() {
                out.push(std::mem::take(&mut w));
            }
        }
        if !w.is_empty() {
            out.push(w);
        }
        out
    }

    fn words(text: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for_each_word(text, |w| {
            if let Some([lo, hi]) = w.padded {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&lo.to_le_bytes());
                b[8..].copy_from_slice(&hi.to_le_bytes());
                assert_eq!(&b[..w.bytes.len()], w.bytes);
                assert!(b[w.bytes.len()..].iter().all(|&x| x == 0));
            }
            out.push(w.bytes.to_vec())
        });
        out
    }

    #[test]
    fn every_byte_is_classified_as_the_definition_says() {
        for b in 0..=255u8 {
            let text = [b'x', b, b'y'];
            assert_eq!(words(&text), naive(&text), "byte {b:#04x}");
        }
        let long = "Ab".repeat(50);
        for text in [
            "",
            "a",
            "Hello, World!",
            "é café",
            "x1y2z",
            &long,
            "The END",
        ] {
            assert_eq!(words(text.as_bytes()), naive(text.as_bytes()), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn words_are_found_as_a_byte_at_a_time(
            text in prop::collection::vec(
                prop_oneof![4 => b'a'..=b'z', 2 => b'A'..=b'Z', 2 => Just(b' '), 1 => any::<u8>()],
                0..300,
            )
        ) {
            prop_assert_eq!(words(&text), naive(&text));
        }
    }
}
