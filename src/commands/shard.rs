//! `backup --shard K/N`: which repositories one of N independent runs takes, so that a CI matrix or
//! a Kubernetes Indexed Job splits a registry without coordination.

use sha2::{Digest as _, Sha256};

/// Shard K (1-based) of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This run's shard, 1 to `of`.
    pub k: u32,
    /// How many shards there are.
    pub of: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || {
            format!(
                "{s:?} is not K/N: give this run's shard K of N shards, 1 <= K <= N (e.g. --shard 1/4 to --shard 4/4; K may be written I+1 for a 0-based index: in a Kubernetes Indexed Job, --shard $(JOB_COMPLETION_INDEX)+1/4)"
            )
        };
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        // `I+1`: a 0-based index as Kubernetes substitutes `$(JOB_COMPLETION_INDEX)`, where no
        // shell is there to add one.
        let k: u32 = match k.split_once('+') {
            Some((i, one)) => {
                let i: u32 = i.trim().parse().map_err(|_| bad())?;
                let one: u32 = one.trim().parse().map_err(|_| bad())?;
                i.checked_add(one).ok_or_else(bad)?
            }
            None => k.trim().parse().map_err(|_| bad())?,
        };
        let of: u32 = n.trim().parse().map_err(|_| bad())?;
        if of == 0 || k == 0 || k > of {
            return Err(bad());
        }
        Ok(Shard { k, of })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.of)
    }
}

impl Shard {
    /// Whether this shard takes the repository at `path` (its name without the registry): the
    /// first 8 bytes of the SHA-256 of the path, big-endian, modulo N, is K - 1. Every run, on any
    /// machine and with any version that documents this rule, puts a repository in the same shard;
    /// the registry's host name is left out so that a mirror under another name splits the same.
    pub fn takes(&self, path: &str) -> bool {
        let hash = Sha256::digest(path.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first) % u64::from(self.of) == u64::from(self.k - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_not_k_of_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { k: 2, of: 4 }));
        assert_eq!(" 1 / 1 ".parse::<Shard>(), Ok(Shard { k: 1, of: 1 }));
        assert_eq!("0+1/4".parse::<Shard>(), Ok(Shard { k: 1, of: 4 }));
        assert_eq!("3+1/4".parse::<Shard>(), Ok(Shard { k: 4, of: 4 }));
        for bad in ["0/4", "5/4", "1/0", "4", "a/b", "-1/4", "1/4/2", "", "4+1/4", "+1/4", "1+/4"] {
            let e = bad.parse::<Shard>().expect_err(bad);
            assert!(e.contains("1 <= K <= N"), "{e}");
        }
    }

    #[test]
    fn every_repository_falls_in_exactly_one_shard_and_always_the_same() {
        let paths: Vec<String> = (0..500).map(|i| format!("team-{}/app{i}", i % 7)).collect();
        for n in [1u32, 2, 3, 8] {
            let mut sizes = vec![0usize; n as usize];
            for p in &paths {
                let owners: Vec<u32> = (1..=n).filter(|&k| Shard { k, of: n }.takes(p)).collect();
                assert_eq!(owners.len(), 1, "{p} in {n} shards: {owners:?}");
                sizes[(owners[0] - 1) as usize] += 1;
            }
            // Spread evenly enough that no shard is idle or doing most of the work.
            assert!(sizes.iter().all(|&s| s * n as usize > paths.len() / 2), "{n}: {sizes:?}");
        }
        // The rule is documented (cli.md); this pins it so that a change is noticed.
        assert!(
            Shard { k: 1, of: 2 }.takes("library/alpine")
                != Shard { k: 2, of: 2 }.takes("library/alpine")
        );
        let pinned: Vec<bool> =
            ["a", "b", "c", "d"].iter().map(|p| Shard { k: 1, of: 2 }.takes(p)).collect();
        let expected: Vec<bool> =
            ["a", "b", "c", "d"].iter().map(|p| Sha256::digest(p.as_bytes())[7] % 2 == 0).collect();
        assert_eq!(pinned, expected);
    }
}
