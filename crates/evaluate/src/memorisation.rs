//! Did the model compose or copy? The longest stretch of a generated piece found verbatim
//! in the training set, and the share of its n-grams that occur there.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

/// A verbatim copy: `length` items starting at `position` of training piece `source`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CopiedRun {
    pub length: usize,
    pub source: String,
    pub position: usize,
}

fn hash_of<T: Hash>(items: &[T]) -> u64 {
    let mut hasher = DefaultHasher::new();
    items.hash(&mut hasher);
    hasher.finish()
}

/// Where a run of `length` items of `generated` occurs in `corpus`, if one does.
fn find_run<T: Hash + Eq>(generated: &[T], corpus: &[(String, Vec<T>)], length: usize) -> Option<CopiedRun> {
    if length == 0 {
        return Some(CopiedRun::default());
    }
    let mut index: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for (piece, (_, items)) in corpus.iter().enumerate() {
        for (position, window) in items.windows(length).enumerate() {
            index.entry(hash_of(window)).or_default().push((piece, position));
        }
    }
    for window in generated.windows(length) {
        for &(piece, position) in index.get(&hash_of(window)).into_iter().flatten() {
            // Equal hashes are checked item by item: a collision never counts as a copy.
            if corpus[piece].1[position..position + length] == *window {
                return Some(CopiedRun { length, source: corpus[piece].0.clone(), position });
            }
        }
    }
    None
}

/// The longest run of `generated` that occurs verbatim in one piece of `corpus`.
pub fn longest_copied_run<T: Hash + Eq>(generated: &[T], corpus: &[(String, Vec<T>)]) -> CopiedRun {
    let longest_piece = corpus.iter().map(|(_, items)| items.len()).max().unwrap_or(0);
    // A run of length n contains runs of every shorter length: binary search on the length.
    let (mut low, mut high) = (0, generated.len().min(longest_piece));
    let mut best = CopiedRun::default();
    while low < high {
        let middle = (low + high).div_ceil(2);
        match find_run(generated, corpus, middle) {
            Some(run) => {
                best = run;
                low = middle;
            }
            None => high = middle - 1,
        }
    }
    best
}

/// Share of the `n`-grams of `generated` that occur anywhere in `corpus` (0 when it has none).
pub fn copied_ngram_share<T: Hash + Eq + Clone>(generated: &[T], corpus: &[(String, Vec<T>)], n: usize) -> f64 {
    let known: HashSet<&[T]> = corpus.iter().flat_map(|(_, items)| items.windows(n)).collect();
    let grams: Vec<&[T]> = generated.windows(n).collect();
    if grams.is_empty() {
        return 0.0;
    }
    grams.iter().filter(|g| known.contains(*g)).count() as f64 / grams.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verbatim_excerpt_is_found_with_its_source() {
        let corpus = vec![
            ("a.mid".to_string(), (0..50u32).collect::<Vec<_>>()),
            ("b.mid".to_string(), (100..200u32).collect::<Vec<_>>()),
        ];
        let excerpt: Vec<u32> = (130..160).collect();
        let run = longest_copied_run(&excerpt, &corpus);
        assert_eq!(run, CopiedRun { length: 30, source: "b.mid".into(), position: 30 });
        assert_eq!(copied_ngram_share(&excerpt, &corpus, 8), 1.0);

        let mixed: Vec<u32> = [&[1000, 1001][..], &(10..20).collect::<Vec<_>>(), &[2000, 2001, 2002]].concat();
        assert_eq!(longest_copied_run(&mixed, &corpus).length, 10);
        let share = copied_ngram_share(&mixed, &corpus, 8);
        assert!((share - 3.0 / 8.0).abs() < 1e-12, "3 of the 8 8-grams lie inside the copy: {share}");
        assert_eq!(longest_copied_run(&[5000u32, 5001], &corpus).length, 0);
    }
}
