//! FER2013 CSV reading (in progress).
