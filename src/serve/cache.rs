//! The frame cache: encoded images keyed by a hash of their content (and of the proposals
//! they were encoded with), least recently used first out, bounded in bytes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pipeline::Encoded;

/// A content key (SHA-256 of the image bytes and the proposals).
pub type FrameKey = [u8; 32];

struct Entry {
    encoded: Arc<Encoded>,
    bytes: usize,
    used: u64,
}

/// An LRU cache of encoded frames holding at most `capacity` bytes of features.
pub struct FrameCache {
    capacity: usize,
    held: usize,
    tick: u64,
    entries: HashMap<FrameKey, Entry>,
}

impl FrameCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity: capacity_bytes,
            held: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The cached encoding of `key`, marked as just used.
    pub fn get(&mut self, key: &FrameKey) -> Option<Arc<Encoded>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|e| {
            e.used = tick;
            e.encoded.clone()
        })
    }

    /// Caches an encoding; the least recently used ones leave until it fits. An encoding
    /// larger than the whole cache is not kept.
    pub fn insert(&mut self, key: FrameKey, encoded: Arc<Encoded>) {
        let bytes = encoded.bytes();
        if bytes > self.capacity {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.held -= old.bytes;
        }
        while self.held + bytes > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.held -= e.bytes;
            }
        }
        self.tick += 1;
        self.held += bytes;
        self.entries.insert(
            key,
            Entry {
                encoded,
                bytes,
                used: self.tick,
            },
        );
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Family;

    fn frame(bytes: usize) -> Arc<Encoded> {
        Arc::new(Encoded::new(Family::UniRes, 1, 1, Default::default(), 0u8).with_bytes(bytes))
    }

    #[test]
    fn least_recently_used_frames_leave_first() {
        let mut c = FrameCache::new(100);
        c.insert([1; 32], frame(40));
        c.insert([2; 32], frame(40));
        assert!(c.get(&[1; 32]).is_some()); // 1 is now the most recent
        c.insert([3; 32], frame(40)); // evicts 2
        assert!(c.get(&[2; 32]).is_none());
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
        assert_eq!((c.len(), c.held_bytes()), (2, 80));
        c.insert([4; 32], frame(101)); // larger than the cache: not kept
        assert_eq!(c.len(), 2);
        c.insert([3; 32], frame(10)); // replacing an entry frees its bytes
        assert_eq!(c.held_bytes(), 50);
    }
}
