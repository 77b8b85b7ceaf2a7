//! A full outer join of two sorted sequences: how the planner walks desired beside actual, and a
//! container's wanted environment beside its running one, without building the set of every key.

use std::cmp::Ordering;

/// Pairs up the items of `left` and `right`, both sorted by key with each key at most once per side:
/// every key once, in order, with what each side has for it.
pub(crate) fn join<K: Ord, A, B>(
    left: impl Iterator<Item = (K, A)>,
    right: impl Iterator<Item = (K, B)>,
) -> impl Iterator<Item = (K, Option<A>, Option<B>)> {
    let (mut left, mut right) = (left.peekable(), right.peekable());
    std::iter::from_fn(move || {
        let order = match (left.peek(), right.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((l, _)), Some((r, _))) => l.cmp(r),
        };
        Some(match order {
            Ordering::Less => left.next().map(|(k, a)| (k, Some(a), None))?,
            Ordering::Greater => right.next().map(|(k, b)| (k, None, Some(b)))?,
            Ordering::Equal => {
                let ((k, a), (_, b)) = (left.next()?, right.next()?);
                (k, Some(a), Some(b))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_comes_once_in_order_with_both_sides() {
        let left = [(1, 'a'), (3, 'c'), (4, 'd')];
        let right = [(2, "two"), (3, "three"), (5, "five")];
        let joined: Vec<_> = join(left.into_iter(), right.into_iter()).collect();
        assert_eq!(
            joined,
            [
                (1, Some('a'), None),
                (2, None, Some("two")),
                (3, Some('c'), Some("three")),
                (4, Some('d'), None),
                (5, None, Some("five")),
            ]
        );
        assert_eq!(join(left.into_iter(), std::iter::empty::<(i32, ())>()).count(), 3);
    }
}
