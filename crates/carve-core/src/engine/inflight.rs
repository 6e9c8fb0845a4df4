//! At most one operation per volume at a time. A second call for a volume that
//! is busy gets ABORTED right away (the CSI spec's answer for "an operation is
//! pending for this volume"); the caller's retry then finds a settled state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Held while the operation runs; dropping it frees the key, also on panic or
/// cancellation of the request future.
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    pub fn try_acquire(&self, key: &str) -> Option<Guard> {
        let mut keys = self.keys.lock().expect("in-flight set poisoned");
        keys.insert(key.to_string()).then(|| Guard {
            keys: self.keys.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_until_release() {
        let f = InFlight::default();
        let g = f.try_acquire("a").unwrap();
        assert!(f.try_acquire("a").is_none());
        assert!(f.try_acquire("b").is_some());
        drop(g);
        assert!(f.try_acquire("a").is_some());
    }
}
