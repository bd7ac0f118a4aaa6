//! Priority levels (SPEC §6g): a queue has 1 to [`MAX_LEVELS`] levels, numbered from 0 (taken first). Each level
//! is a stream of its own with the queue's consumer group (level 0 is the ready stream, so a queue without
//! priorities is unchanged), and a worker reads them in an order this module decides: strictly by level, or
//! weighted so low levels never starve.

use crate::error::{Error, Result};

/// Most priority levels a queue can have (0 to 15).
pub const MAX_LEVELS: u8 = 16;

/// A queue's priority levels and how workers choose between them.
///
/// Strict (the default): a worker reads a level only when every level before it is empty, so a steady stream of
/// level-0 jobs can starve the others. Weighted: each read starts at a level picked in proportion to its weight
/// (then takes the rest in level order), so every level with a backlog gets its share.
///
/// ```
/// let strict = rill::Priorities::strict(3)?;            // levels 0, 1, 2
/// let weighted = rill::Priorities::weighted(&[6, 3, 1])?; // level 0 starts 60% of reads, level 2 10%
/// assert_eq!(weighted.levels(), 3);
/// # Ok::<(), rill::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priorities {
    levels: u8,
    weights: Option<Vec<u32>>,
}

impl Default for Priorities {
    /// One level: no priorities.
    fn default() -> Self {
        Priorities {
            levels: 1,
            weights: None,
        }
    }
}

impl Priorities {
    /// `levels` levels (1 to [`MAX_LEVELS`]; 1 = none), read strictly in order.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] outside 1 to [`MAX_LEVELS`].
    pub fn strict(levels: u8) -> Result<Self> {
        if !(1..=MAX_LEVELS).contains(&levels) {
            return Err(invalid("between 1 and 16 levels"));
        }
        Ok(Priorities {
            levels,
            weights: None,
        })
    }

    /// One level per weight, each read starting at a level picked in proportion to its weight.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for fewer than 2 or more than [`MAX_LEVELS`] weights, or a weight of 0.
    pub fn weighted(weights: &[u32]) -> Result<Self> {
        if weights.len() < 2 || weights.len() > MAX_LEVELS as usize {
            return Err(invalid("between 2 and 16 weights, one per level"));
        }
        if weights.contains(&0) {
            return Err(invalid("every weight must be at least 1"));
        }
        Ok(Priorities {
            levels: weights.len() as u8,
            weights: Some(weights.to_vec()),
        })
    }

    /// How many levels (1 = no priorities).
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// The weights, in weighted mode.
    pub fn weights(&self) -> Option<&[u32]> {
        self.weights.as_deref()
    }

    /// From the priorities hash's `levels` and `weights` (either may be empty: unset).
    pub(crate) fn from_fields(levels: &str, weights: &str) -> Result<Self> {
        let levels = if levels.is_empty() {
            1
        } else {
            levels
                .parse::<u8>()
                .map_err(|_| stored(format!("levels {levels:?}")))?
        };
        if weights.is_empty() {
            return Priorities::strict(levels).map_err(|_| stored(format!("levels {levels}")));
        }
        let w: Vec<u32> = weights
            .split(',')
            .map(|x| x.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| stored(format!("weights {weights:?}")))?;
        if w.len() != levels as usize {
            return Err(stored(format!("{} weights for {levels} levels", w.len())));
        }
        Priorities::weighted(&w).map_err(|_| stored(format!("weights {weights:?}")))
    }

    /// The hash's `weights` value (`''`: strict).
    pub(crate) fn weights_field(&self) -> String {
        self.weights.as_ref().map_or_else(String::new, |w| {
            w.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        })
    }
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidOption {
        option: "priorities",
        reason,
    }
}

fn stored(detail: String) -> Error {
    Error::Protocol {
        what: "priorities hash",
        detail,
    }
}

/// The order a worker reads its queue's levels in, read after read: strict order, or (weighted) starting at a
/// level chosen by smooth weighted round-robin, so over any run of reads each level starts a share of them equal
/// to its weight's, spread evenly rather than in bursts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOrder {
    priorities: Priorities,
    credit: Vec<i64>,
}

impl ReadOrder {
    pub(crate) fn new(priorities: Priorities) -> Self {
        let credit = vec![0; priorities.levels as usize];
        ReadOrder { priorities, credit }
    }

    /// The levels to read next, in order: every level once.
    pub(crate) fn next(&mut self) -> Vec<u8> {
        let n = self.priorities.levels;
        let first = match &self.priorities.weights {
            None => 0,
            Some(w) => {
                let total: i64 = w.iter().map(|&x| i64::from(x)).sum();
                for (c, &x) in self.credit.iter_mut().zip(w) {
                    *c += i64::from(x);
                }
                // The highest credit starts; ties go to the lower level.
                let (best, _) =
                    self.credit
                        .iter()
                        .enumerate()
                        .fold(
                            (0, i64::MIN),
                            |(bi, bc), (i, &c)| {
                                if c > bc { (i, c) } else { (bi, bc) }
                            },
                        );
                self.credit[best] -= total;
                best as u8
            }
        };
        std::iter::once(first)
            .chain((0..n).filter(|&l| l != first))
            .collect()
    }
}

/// A delivery's address inside a worker: its entry id, suffixed `@<level>` above level 0, because entry ids
/// repeat across the levels' streams. Level 0 borrows (no allocation on a queue without priorities).
pub(crate) fn address(level: u8, entry_id: &str) -> std::borrow::Cow<'_, str> {
    if level == 0 {
        std::borrow::Cow::Borrowed(entry_id)
    } else {
        std::borrow::Cow::Owned(format!("{entry_id}@{level}"))
    }
}

/// The level and entry id of an [`address`].
pub(crate) fn split_address(address: &str) -> (u8, &str) {
    match address.rsplit_once('@') {
        Some((entry, level)) => (level.parse().unwrap_or(0), entry),
        None => (0, address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_levels_apart() {
        assert_eq!(address(0, "5-0"), "5-0");
        assert_eq!(address(3, "5-0"), "5-0@3");
        assert_ne!(address(0, "5-0"), address(1, "5-0"));
        assert_eq!(split_address("5-0"), (0, "5-0"));
        assert_eq!(split_address("5-0@3"), (3, "5-0"));
        assert_eq!(split_address(&address(15, "1-2")), (15, "1-2"));
    }

    #[test]
    fn levels_and_weights_are_checked() {
        assert!(Priorities::strict(0).is_err());
        assert!(Priorities::strict(17).is_err());
        assert_eq!(Priorities::strict(16).unwrap().levels(), 16);
        assert!(Priorities::weighted(&[1]).is_err());
        assert!(Priorities::weighted(&[3, 0]).is_err());
        assert!(Priorities::weighted(&[1; 17]).is_err());
        assert_eq!(Priorities::default().levels(), 1);
    }

    #[test]
    fn stored_fields_round_trip() {
        for p in [
            Priorities::default(),
            Priorities::strict(4).unwrap(),
            Priorities::weighted(&[5, 3, 1]).unwrap(),
        ] {
            let levels = if p.levels() == 1 {
                String::new()
            } else {
                p.levels().to_string()
            };
            assert_eq!(
                Priorities::from_fields(&levels, &p.weights_field()).unwrap(),
                p
            );
        }
        assert!(Priorities::from_fields("3", "1,2").is_err());
        assert!(Priorities::from_fields("x", "").is_err());
        assert!(Priorities::from_fields("40", "").is_err());
        assert!(Priorities::from_fields("2", "1,0").is_err());
    }

    #[test]
    fn strict_order_is_by_level() {
        let mut o = ReadOrder::new(Priorities::strict(3).unwrap());
        assert_eq!(o.next(), vec![0, 1, 2]);
        assert_eq!(o.next(), vec![0, 1, 2]);
        assert_eq!(ReadOrder::default().next(), vec![0]);
    }

    #[test]
    fn weighted_order_starts_each_level_in_proportion() {
        let mut o = ReadOrder::new(Priorities::weighted(&[6, 3, 1]).unwrap());
        let mut starts = [0; 3];
        for _ in 0..1000 {
            let order = o.next();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2], "every level once");
            assert!(
                order[1..].windows(2).all(|w| w[0] < w[1]),
                "then in level order"
            );
            starts[order[0] as usize] += 1;
        }
        assert_eq!(starts, [600, 300, 100]);
        // Spread out: level 2 never waits more than 10 reads for its turn.
        let mut since = 0;
        for _ in 0..100 {
            since = if o.next()[0] == 2 { 0 } else { since + 1 };
            assert!(since < 10);
        }
    }
}
