//! Storage round trips, several at once: planning and group reads call storage once or twice
//! per file, and with thousands of small files (loose photos) the wait for each answer adds up.

/// How many calls are in flight at once.
pub const THREADS: usize = 8;

/// Applies `f` to every item, [`THREADS`] at a time (each thread takes a contiguous run of
/// items), and returns the results in the items' order, or the first error in that order.
///
/// # Errors
/// The first error `f` returned, in item order.
pub fn map<T, R, E>(items: &[T], f: impl Fn(&T) -> Result<R, E> + Sync) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(THREADS);
    let f = &f;
    let runs: Vec<Result<Vec<R>, E>> = std::thread::scope(|s| {
        let threads: Vec<_> = items
            .chunks(per)
            .map(|run| s.spawn(move || run.iter().map(f).collect()))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for run in runs {
        out.extend(run?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            super::map(&items, |i| Ok::<_, ()>(i * 2)).unwrap(),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        let err = super::map(&items, |&i| if i % 300 == 299 { Err(i) } else { Ok(i) });
        assert_eq!(err, Err(299));
        assert!(super::map(&[] as &[u32], |&i| Ok::<_, ()>(i))
            .unwrap()
            .is_empty());
    }
}
