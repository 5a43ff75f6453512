-- Refresh-ready facts for Power BI's incremental refresh and "detect data changes"
-- (docs/bi.md has the policy and its Power Query). One view per mirrored table, every
-- column as it is plus the refresh columns the sync keeps:
--   period_utc   DATETIME, UTC: the row's period (its window start; for a table
--                without event time, the commit time of the version that wrote it);
--                RangeStart/RangeEnd filter this column.
--   date_key     INT yyyymmdd: the period's day in San Francisco (the source's zone),
--                for a policy on an integer date key.
--   updated_at   DATETIME, UTC: commit time of the Delta version whose sync last wrote
--                the row; MAX(updated_at) per partition is the change marker.
--   lake_version the Delta version whose sync last wrote the row.
-- ALGORITHM = MERGE: a filter on these views is a filter on the indexed base columns,
-- so each partition's query and its change poll are index range scans.

CREATE OR REPLACE ALGORITHM = MERGE VIEW fact_crime_type_hourly AS
SELECT window_start AS hour_start_utc,
       window_end AS hour_end_utc,
       original_crime_type_name AS crime_type,
       calls,
       _lake_period AS period_utc,
       _lake_date_key AS date_key,
       _lake_updated_at AS updated_at,
       _lake_version AS lake_version
FROM crime_type_hourly;

CREATE OR REPLACE ALGORITHM = MERGE VIEW fact_crime_type_windows AS
SELECT window_start AS window_start_utc,
       window_end AS window_end_utc,
       original_crime_type_name AS crime_type,
       calls,
       _lake_period AS period_utc,
       _lake_date_key AS date_key,
       _lake_updated_at AS updated_at,
       _lake_version AS lake_version
FROM crime_type_windows;

-- A complete-mode table is replaced whole by every batch: all its rows share the
-- latest commit time as period and marker, so a refresh reads it whole.
CREATE OR REPLACE ALGORITHM = MERGE VIEW fact_disposition_summary AS
SELECT disposition,
       description,
       calls,
       _lake_period AS period_utc,
       _lake_date_key AS date_key,
       _lake_updated_at AS updated_at,
       _lake_version AS lake_version
FROM disposition_summary;
