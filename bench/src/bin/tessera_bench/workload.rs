//! What the generator asks for: keys drawn from a distribution over a fixed key space, and an
//! operation drawn from the read/write/CAS mix.
//!
//! Everything here is deterministic from a seed (a SplitMix64 stream per connection), so two
//! runs with the same flags send the same keys in the same order per connection.
//!
//! Keys are `<letter><12-digit index>`. The letter is a hash of the index, so keys spread over
//! the whole byte range (the default layout splits at "m") and the hottest zipfian keys do not
//! all land in one Region.

/// A small, fast, seedable generator (SplitMix64). Not cryptographic; it only has to be
/// uniform enough to pick keys and operations.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); `n` must not be 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// How keys are chosen from `0..key_count`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    Uniform,
    /// Zipfian with exponent `theta` (YCSB uses 0.99): rank 0 is the hottest key.
    Zipfian {
        theta: f64,
    },
}

/// Draws key indexes. Zipfian follows Gray et al., "Quickly generating billion-record
/// synthetic databases" (the YCSB generator), with the zeta constants computed once.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    key_count: u64,
    zipf: Option<Zipf>,
}

#[derive(Clone, Debug)]
struct Zipf {
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl KeyChooser {
    /// # Panics
    /// If `key_count` is 0 or a zipfian `theta` is not in (0, 1).
    pub fn new(key_count: u64, distribution: KeyDistribution) -> KeyChooser {
        assert!(key_count > 0, "empty key space");
        let zipf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipfian { theta } => {
                assert!(
                    theta > 0.0 && theta < 1.0,
                    "zipfian theta {theta} not in (0, 1)"
                );
                let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
                let zeta_n = zeta(key_count);
                let zeta_2 = zeta(2.min(key_count));
                let n = key_count as f64;
                Some(Zipf {
                    theta,
                    alpha: 1.0 / (1.0 - theta),
                    zeta_n,
                    eta: (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
                })
            }
        };
        KeyChooser { key_count, zipf }
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// The next key index, in `0..key_count`.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let Some(z) = &self.zipf else {
            return rng.below(self.key_count);
        };
        let u = rng.next_f64();
        let uz = u * z.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(z.theta) {
            return 1.min(self.key_count - 1);
        }
        let rank = (self.key_count as f64 * (z.eta * u - z.eta + 1.0).powf(z.alpha)) as u64;
        rank.min(self.key_count - 1)
    }
}

/// The bytes of key `index`: a letter spread by a hash of the index, then the index.
pub fn key_bytes(index: u64) -> Vec<u8> {
    // FNV-1a over the index's bytes picks the letter.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in index.to_le_bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let letter = b'a' + (hash % 26) as u8;
    let mut key = Vec::with_capacity(13);
    key.push(letter);
    key.extend_from_slice(format!("{index:012}").as_bytes());
    key
}

/// The kinds of operation the generator sends; each has its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Read,
    Write,
    Cas,
}

impl OpKind {
    pub const ALL: [OpKind; 3] = [OpKind::Read, OpKind::Write, OpKind::Cas];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Cas => "cas",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Percentages of reads, writes and compare-and-swaps; they sum to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpMix {
    pub read_percent: u32,
    pub write_percent: u32,
    pub cas_percent: u32,
}

impl OpMix {
    /// Parses `read:write:cas` percentages, e.g. `50:50:0`.
    ///
    /// # Errors
    /// When there are not three numbers or they do not sum to 100.
    pub fn parse(text: &str) -> Result<OpMix, String> {
        let parts: Vec<u32> = text
            .split(':')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("mix {text:?}: {e}"))?;
        let [read_percent, write_percent, cas_percent] = parts[..] else {
            return Err(format!("mix {text:?}: expected READ:WRITE:CAS percentages"));
        };
        if read_percent + write_percent + cas_percent != 100 {
            return Err(format!("mix {text:?}: percentages must sum to 100"));
        }
        Ok(OpMix {
            read_percent,
            write_percent,
            cas_percent,
        })
    }

    pub fn next(&self, rng: &mut Rng) -> OpKind {
        let roll = rng.below(100) as u32;
        if roll < self.read_percent {
            OpKind::Read
        } else if roll < self.read_percent + self.write_percent {
            OpKind::Write
        } else {
            OpKind::Cas
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_keys_cover_the_space_evenly() {
        let chooser = KeyChooser::new(10, KeyDistribution::Uniform);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn zipfian_frequencies_follow_the_power_law() {
        let theta = 0.99;
        let n = 1000;
        let chooser = KeyChooser::new(n, KeyDistribution::Zipfian { theta });
        let mut rng = Rng::new(7);
        let draws = 1_000_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        let zeta: f64 = (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum();
        // Ranks 0 and 1 are exact in this generator; the tail is approximate.
        for rank in [0usize, 1] {
            let expected = draws as f64 / ((rank + 1) as f64).powf(theta) / zeta;
            let got = counts[rank] as f64;
            assert!(
                (got / expected - 1.0).abs() < 0.02,
                "rank {rank}: {got} vs {expected}"
            );
        }
        assert!(counts[0] > counts[9] * 5 && counts[9] > counts[99] * 5);
    }

    #[test]
    fn keys_spread_over_both_default_regions() {
        let below_m = (0..10_000)
            .filter(|i| key_bytes(*i) < b"m".to_vec())
            .count();
        assert!((3_500..6_500).contains(&below_m), "{below_m}");
        assert_eq!(key_bytes(42).len(), 13);
    }

    #[test]
    fn mix_parses_and_draws_in_proportion() {
        assert!(OpMix::parse("50:40").is_err());
        assert!(OpMix::parse("50:40:20").is_err());
        let mix = OpMix::parse("20:70:10").unwrap();
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[mix.next(&mut rng).index()] += 1;
        }
        assert!((19_000..21_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
    }
}
