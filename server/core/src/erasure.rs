//! A Reed–Solomon erasure code over GF(2⁸): `k` data shards and `n − k` parity shards, any
//! `k` of which give the data back. Backups held by friends use it so that a backup survives
//! `n − k` holders that vanish.
//!
//! The code is systematic (the first `k` shards are the data itself, cut in `k`) and its
//! parity rows form a Cauchy matrix `1 / (x_i + y_j)` with `x_i = k + i`, `y_j = j`: every
//! square submatrix of a Cauchy matrix is invertible, so any `k` shards decode. Small on
//! purpose — a few hundred bytes of tables, no unsafe code, no SIMD: a backup is encoded once
//! a day and decoded once in a device's life, at well over 100 MB/s either way.
//!
//! It does not check shards: a caller that cannot trust a shard must check it first (the
//! backup manifest names each shard by its BLAKE3 hash).

/// Shards a code may have at most.
pub const MAX_SHARDS: usize = 64;

/// Why shards could not be made or put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// `k` and `n` must satisfy 1 ≤ k ≤ n ≤ [`MAX_SHARDS`].
    #[error("a code needs 1 ≤ k ≤ n ≤ {MAX_SHARDS}")]
    Shape,
    /// Fewer than `k` distinct shards, a shard index out of range, or shards of unequal
    /// length.
    #[error("not enough distinct shards of the right length to decode")]
    Shards,
}

/// exp and log tables of GF(2⁸) with the polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11d), generator 2.
struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

const fn tables() -> Tables {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    Tables { exp, log }
}

static GF: Tables = tables();

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        GF.exp[usize::from(GF.log[usize::from(a)]) + usize::from(GF.log[usize::from(b)])]
    }
}

/// The inverse of a non-zero element.
fn inv(a: u8) -> u8 {
    debug_assert!(a != 0);
    GF.exp[255 - usize::from(GF.log[usize::from(a)])]
}

/// `out ^= c · input`, byte by byte, through a table of the 256 products of `c`.
fn mul_add(out: &mut [u8], input: &[u8], c: u8) {
    match c {
        0 => {}
        1 => out.iter_mut().zip(input).for_each(|(o, i)| *o ^= i),
        _ => {
            let mut table = [0u8; 256];
            for (x, t) in table.iter_mut().enumerate() {
                *t = mul(c, x as u8);
            }
            out.iter_mut()
                .zip(input)
                .for_each(|(o, i)| *o ^= table[usize::from(*i)]);
        }
    }
}

/// A `k`-of-`n` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    k: usize,
    n: usize,
}

impl Code {
    /// The code with `k` data shards out of `n`.
    pub fn new(k: usize, n: usize) -> Result<Self, ErasureError> {
        if k == 0 || k > n || n > MAX_SHARDS {
            return Err(ErasureError::Shape);
        }
        Ok(Self { k, n })
    }

    /// Shards needed to decode.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Shards made.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The length of each shard of `data_len` bytes of data.
    pub fn shard_len(&self, data_len: usize) -> usize {
        data_len.div_ceil(self.k).max(1)
    }

    /// Row `row` of the generator matrix: a unit vector for a data shard, a Cauchy row for
    /// a parity shard.
    fn row(&self, row: usize) -> Vec<u8> {
        (0..self.k)
            .map(|j| {
                if row < self.k {
                    u8::from(row == j)
                } else {
                    // x = row (≥ k) and y = j (< k) differ, so x + y (XOR) is never zero.
                    inv((row as u8) ^ (j as u8))
                }
            })
            .collect()
    }

    /// Cuts `data` into `n` shards of [`Self::shard_len`] bytes each (the last data shard
    /// padded with zeros).
    pub fn encode(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let len = self.shard_len(data.len());
        let mut shards: Vec<Vec<u8>> = (0..self.k)
            .map(|i| {
                let start = (i * len).min(data.len());
                let end = ((i + 1) * len).min(data.len());
                let mut shard = data[start..end].to_vec();
                shard.resize(len, 0);
                shard
            })
            .collect();
        for p in self.k..self.n {
            let mut parity = vec![0u8; len];
            for (j, c) in self.row(p).into_iter().enumerate() {
                mul_add(&mut parity, &shards[j], c);
            }
            shards.push(parity);
        }
        shards
    }

    /// Puts `data_len` bytes of data back together from at least `k` shards, given with
    /// their index. Extra shards are ignored.
    pub fn decode(
        &self,
        shards: &[(usize, &[u8])],
        data_len: usize,
    ) -> Result<Vec<u8>, ErasureError> {
        let len = self.shard_len(data_len);
        let mut chosen: Vec<(usize, &[u8])> = Vec::with_capacity(self.k);
        for &(index, shard) in shards {
            if index >= self.n || shard.len() != len {
                return Err(ErasureError::Shards);
            }
            if chosen.len() < self.k && !chosen.iter().any(|(i, _)| *i == index) {
                chosen.push((index, shard));
            }
        }
        if chosen.len() < self.k {
            return Err(ErasureError::Shards);
        }
        // Data shards first, in order: with all of them there is nothing to solve.
        chosen.sort_by_key(|(i, _)| *i);
        let mut data = Vec::with_capacity(len * self.k);
        if chosen.iter().enumerate().all(|(pos, (i, _))| pos == *i) {
            for (_, shard) in &chosen {
                data.extend_from_slice(shard);
            }
        } else {
            let inverse = self.invert(&chosen)?;
            for row in inverse {
                let mut out = vec![0u8; len];
                for (c, (_, shard)) in row.into_iter().zip(&chosen) {
                    mul_add(&mut out, shard, c);
                }
                data.extend_from_slice(&out);
            }
        }
        data.truncate(data_len);
        Ok(data)
    }

    /// The inverse of the generator rows of the chosen shards (Gauss–Jordan).
    fn invert(&self, chosen: &[(usize, &[u8])]) -> Result<Vec<Vec<u8>>, ErasureError> {
        let k = self.k;
        let mut m: Vec<Vec<u8>> = chosen.iter().map(|(i, _)| self.row(*i)).collect();
        let mut out: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..k).map(|j| u8::from(i == j)).collect())
            .collect();
        for col in 0..k {
            let pivot = (col..k)
                .find(|&r| m[r][col] != 0)
                .ok_or(ErasureError::Shards)?;
            m.swap(col, pivot);
            out.swap(col, pivot);
            let scale = inv(m[col][col]);
            for j in 0..k {
                m[col][j] = mul(m[col][j], scale);
                out[col][j] = mul(out[col][j], scale);
            }
            for r in 0..k {
                let factor = m[r][col];
                if r != col && factor != 0 {
                    for j in 0..k {
                        let (a, b) = (m[col][j], out[col][j]);
                        m[r][j] ^= mul(factor, a);
                        out[r][j] ^= mul(factor, b);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_arithmetic_holds() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
        // Distributive over XOR, spot-checked.
        for (a, b, c) in [(3u8, 7u8, 200u8), (255, 128, 1), (29, 76, 143)] {
            assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
        }
    }

    #[test]
    fn every_choice_of_k_shards_decodes() {
        let code = Code::new(3, 5).unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let shards = code.encode(&data);
        assert_eq!(shards.len(), 5);
        assert!(shards.iter().all(|s| s.len() == 334));
        assert_eq!(&shards[0][..], &data[..334]);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let picked = [
                        (c, &shards[c][..]),
                        (a, &shards[a][..]),
                        (b, &shards[b][..]),
                    ];
                    assert_eq!(
                        code.decode(&picked, data.len()).unwrap(),
                        data,
                        "{a} {b} {c}"
                    );
                }
            }
        }
        let two = [(0, &shards[0][..]), (4, &shards[4][..])];
        assert_eq!(code.decode(&two, data.len()), Err(ErasureError::Shards));
        let twice = [
            (1, &shards[1][..]),
            (1, &shards[1][..]),
            (4, &shards[4][..]),
        ];
        assert_eq!(code.decode(&twice, data.len()), Err(ErasureError::Shards));
    }

    #[test]
    fn shapes_are_checked() {
        assert!(Code::new(0, 1).is_err());
        assert!(Code::new(3, 2).is_err());
        assert!(Code::new(1, MAX_SHARDS + 1).is_err());
        let one = Code::new(1, 1).unwrap();
        assert_eq!(one.encode(b""), vec![vec![0u8]]);
        assert_eq!(one.decode(&[(0, &[0u8][..])], 0).unwrap(), b"");
    }

    proptest! {
        #[test]
        fn any_k_shards_give_the_data_back(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            k in 1usize..8,
            extra in 0usize..6,
            seed in any::<u64>(),
        ) {
            let n = k + extra;
            let code = Code::new(k, n).unwrap();
            let shards = code.encode(&data);
            // A pseudo-random choice of k distinct shards.
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let picked: Vec<(usize, &[u8])> =
                order[..k].iter().map(|&i| (i, &shards[i][..])).collect();
            prop_assert_eq!(code.decode(&picked, data.len()).unwrap(), data);
        }
    }
}
