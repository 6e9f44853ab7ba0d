//! The database schema: the migrations in `migrations/`, embedded in the binary.
//!
//! They are listed here rather than gathered by `sqlx::migrate!` so that building brizo does
//! not compile sqlx's proc-macro crate, which brings a second build of sqlx-core, sqlx-sqlite
//! and SQLite's C library (for the compiler's host) into every cold build. The versions,
//! descriptions and checksums are the ones `sqlx::migrate!` gives, so a database made by an
//! earlier build migrates on. A test checks that every file in `migrations/` is listed.

use std::borrow::Cow;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL) of each migration, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "jobs", include_str!("../../migrations/0001_jobs.sql")),
    (
        2,
        "assets and agreements",
        include_str!("../../migrations/0002_assets_and_agreements.sql"),
    ),
    (
        3,
        "receipts",
        include_str!("../../migrations/0003_receipts.sql"),
    ),
    (
        4,
        "results did",
        include_str!("../../migrations/0004_results_did.sql"),
    ),
    (
        5,
        "routing",
        include_str!("../../migrations/0005_routing.sql"),
    ),
    (
        6,
        "cleared",
        include_str!("../../migrations/0006_cleared.sql"),
    ),
    (
        7,
        "approval",
        include_str!("../../migrations/0007_approval.sql"),
    ),
    (
        8,
        "release",
        include_str!("../../migrations/0008_release.sql"),
    ),
    (
        9,
        "sealed",
        include_str!("../../migrations/0009_sealed.sql"),
    ),
    (
        10,
        "jobs by date",
        include_str!("../../migrations/0010_jobs_by_date.sql"),
    ),
    (
        11,
        "jobs by agreement",
        include_str!("../../migrations/0011_jobs_by_agreement.sql"),
    ),
    (
        12,
        "jobs in flight",
        include_str!("../../migrations/0012_jobs_in_flight.sql"),
    ),
];

/// The migrator that brings a database up to this build's schema.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in migrations/ is listed, under the version and description its name gives
    /// (what `sqlx::migrate!` would read), with its current contents.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "migrations/ holds {files:?}");
        for (name, &(version, description, sql)) in files.iter().zip(MIGRATIONS) {
            let (number, rest) = name.trim_end_matches(".sql").split_once('_').unwrap();
            assert_eq!(number.parse::<i64>().unwrap(), version, "{name}");
            assert_eq!(rest.replace('_', " "), description, "{name}");
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                sql,
                "{name}"
            );
        }
        let migrator = migrator();
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }
}
