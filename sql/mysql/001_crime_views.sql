-- BI views over the mirrored tables, for Power BI, Grafana or any MySQL client.
-- lakestream applies every file of this folder in name order when its sync task
-- starts; each statement is CREATE OR REPLACE, so applying again is safe. The BI
-- account (mysql.bi_user) may SELECT these views and nothing else.
-- Times are San Francisco local time, as in the source data.

-- Calls per hour, all crime types together.
CREATE OR REPLACE VIEW v_calls_per_hour AS
SELECT window_start AS hour_start,
       SUM(calls) AS calls
FROM crime_type_hourly
GROUP BY window_start;

-- Calls per hour and crime type.
CREATE OR REPLACE VIEW v_calls_per_hour_by_type AS
SELECT window_start AS hour_start,
       original_crime_type_name AS crime_type,
       calls
FROM crime_type_hourly;

-- The 10 most frequent crime types of the latest day with calls.
CREATE OR REPLACE VIEW v_top_crime_types_latest_day AS
SELECT DATE(h.window_start) AS day,
       h.original_crime_type_name AS crime_type,
       SUM(h.calls) AS calls
FROM crime_type_hourly h
WHERE h.window_start >= (SELECT DATE(MAX(window_start)) FROM crime_type_hourly)
GROUP BY DATE(h.window_start), h.original_crime_type_name
ORDER BY calls DESC, crime_type
LIMIT 10;

-- Calls per disposition, with its radio-code description ('No radio code' if none).
CREATE OR REPLACE VIEW v_calls_per_disposition AS
SELECT disposition,
       description,
       calls
FROM disposition_summary;

-- The closed 10-minute windows (sliding every 5 minutes) of the latest hour: final
-- counts, never changed once written.
CREATE OR REPLACE VIEW v_latest_closed_windows AS
SELECT window_start,
       window_end,
       original_crime_type_name AS crime_type,
       calls
FROM crime_type_windows
WHERE window_end > (SELECT MAX(window_end) - INTERVAL 1 HOUR FROM crime_type_windows);
