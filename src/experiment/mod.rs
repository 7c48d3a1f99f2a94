//! Experiments: cross-validation folds, sweep grids, learning-rate schedules, early stopping
//! and results tables (pure logic, used by the training loop), and [`runner`], which trains
//! one run per fold or sweep configuration.
//!
//! - [`folds`]: [`kfold`], [`stratified_kfold`], [`cv_summary`];
//! - [`grid`]: sweep files → [`RunSpec`]s ([`load_grid`], [`parse_grid`]);
//! - [`schedule`]: [`LrSchedule`] and the per-epoch [`Scheduler`];
//! - [`early_stop`]: [`EarlyStopping`] on validation accuracy;
//! - [`results`]: [`RunResult`] rows as CSV and a sortable HTML table;
//! - [`runner`]: `fergpu cv` and `fergpu sweep`, one run folder per fold or configuration.

pub mod early_stop;
pub mod folds;
pub mod grid;
pub mod results;
pub mod runner;
pub mod schedule;

pub use early_stop::{Decision, EarlyStopping};
pub use folds::{cv_summary, kfold, stratified_kfold, Fold};
pub use grid::{load_grid, parse_grid, RunSpec, SettingValue, SETTINGS};
pub use results::{results_csv, results_html, write_results_csv, RunResult};
pub use schedule::{LrSchedule, Scheduler};
