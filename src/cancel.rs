//! Cancellation as a value: whoever wants a run to stop (the Ctrl-C / SIGTERM handler, a
//! test) holds a [`Cancel`] and asks; the loops that can stop cleanly poll their clone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared stop request. Cloning shares it; the default has not been asked.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicUsize>);

impl Cancel {
    /// A fresh token nobody has asked yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder to stop; returns how many times it had been asked before.
    pub fn request(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    /// True once anyone asked.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::Cancel;

    #[test]
    fn clones_share_one_request() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(!b.is_requested());
        assert_eq!(a.request(), 0);
        assert!(b.is_requested());
        assert_eq!(b.request(), 1);
    }
}
