//! Linux swap partitions: only the header page (signature, UUID, label) is guest-visible state worth
//! keeping; the rest is exported as zeros without being read.

/// Page size the swap header was written with; the signature sits in the last 10 bytes of the first page.
pub const PAGE: u64 = 4096;

/// Does `page` (the first 4096 bytes of a partition) carry a SWAPSPACE2 signature?
pub fn is_swap(page: &[u8]) -> bool {
    page.len() >= PAGE as usize && &page[PAGE as usize - 10..PAGE as usize] == b"SWAPSPACE2"
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature() {
        let mut p = vec![0u8; 4096];
        assert!(!super::is_swap(&p));
        p[4086..].copy_from_slice(b"SWAPSPACE2");
        assert!(super::is_swap(&p));
        p[4086..].copy_from_slice(b"SWAP-SPACE");
        assert!(!super::is_swap(&p));
    }
}
