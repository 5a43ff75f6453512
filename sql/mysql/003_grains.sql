-- Pre-rolled counts for dashboards: the sync's grains of [mysql.grains.crime_calls],
-- calls per minute, hour and San Francisco day by crime type, recounted from the calls
-- table whenever new calls (late ones too) touch a period. Indexed on (period_utc,
-- updated_at) and (date_key, updated_at): Grafana's $__timeFilter(period_utc) and a
-- Power BI partition on period_utc or date_key are index range scans.
--   period_utc   DATETIME, UTC: the minute, the hour, or the day's local midnight.
--   date_key     INT yyyymmdd: the period's day in San Francisco.
--   updated_at   commit time of the calls version whose sync last recounted the row.

CREATE OR REPLACE ALGORITHM = MERGE VIEW grain_calls_minute AS
SELECT period_utc, date_key, original_crime_type_name AS crime_type, calls,
       updated_at, lake_version
FROM crime_calls_minute;

CREATE OR REPLACE ALGORITHM = MERGE VIEW grain_calls_hour AS
SELECT period_utc, date_key, original_crime_type_name AS crime_type, calls,
       updated_at, lake_version
FROM crime_calls_hour;

CREATE OR REPLACE ALGORITHM = MERGE VIEW grain_calls_day AS
SELECT period_utc, date_key, STR_TO_DATE(date_key, '%Y%m%d') AS day,
       original_crime_type_name AS crime_type, calls, updated_at, lake_version
FROM crime_calls_day;
