//! A one-dimensional tensor of i32, enough for the demo's self-test.

/// Host data for a kernel, with a checksum to compare results by.
pub struct Tensor(pub Vec<i32>);

impl Tensor {
    /// 0, 1, ..., n-1.
    pub fn arange(n: usize) -> Tensor {
        Tensor((0..n as i32).collect())
    }

    /// CRC-32 of the little-endian bytes.
    pub fn checksum(&self) -> u32 {
        let bytes: Vec<u8> = self.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        demo_crc::crc32(&bytes)
    }

    /// The first index where `self` is not `other` plus `delta`.
    pub fn first_mismatch(&self, other: &Tensor, delta: i32) -> Option<usize> {
        self.0
            .iter()
            .zip(&other.0)
            .position(|(a, b)| *a != b + delta)
            .or_else(|| (self.0.len() != other.0.len()).then(|| self.0.len().min(other.0.len())))
    }
}
