//! Plots and HTML reports (in progress).
