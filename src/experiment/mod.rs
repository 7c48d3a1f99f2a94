//! Experiments above single runs: cross-validation folds, sweep grids and the tables that
//! compare their runs, and [`runner`], which trains one run per fold or sweep configuration.
//!
//! - [`folds`]: [`kfold`], [`stratified_kfold`], [`cv_summary`];
//! - [`grid`]: sweep files → [`RunSpec`]s ([`load_grid`], [`parse_grid`]);
//! - [`results`]: [`RunResult`] rows as CSV and a sortable HTML table;
//! - [`runner`]: `fergpu cv` and `fergpu sweep`, one run folder per fold or configuration;
//! - [`plan`], [`tasks`]: the same experiments as a plan of numbered tasks that a scheduler
//!   (Slurm job arrays, Kubernetes indexed Jobs) runs one by one, and their collection.
//!
//! Nothing below this module imports it.

pub mod folds;
pub mod grid;
pub mod plan;
pub mod results;
pub mod runner;
pub mod tasks;

pub use folds::{cv_summary, kfold, stratified_kfold, Fold};
pub use grid::{load_grid, parse_grid, RunSpec, SettingValue};
pub use results::{results_csv, results_html, RunResult};
