-- BI views over the mirrored tables, for Power BI, Grafana or any MySQL client.
-- lakestream applies every file of this folder in name order when its sync task
-- starts; each statement is CREATE OR REPLACE, so applying again is safe. The BI
-- account (mysql.bi_user) may SELECT these views and nothing else.
-- The mirrored tables hold UTC instants. The columns named for people (hour_start,
-- day, window_start, ...) are San Francisco local time (lakestream_local_time, kept
-- by lakestream from its own zone database); the *_utc columns are for tools that
-- convert themselves (Grafana: dashboard time zone America/Los_Angeles).

-- Calls per hour, all crime types together.
CREATE OR REPLACE VIEW v_calls_per_hour AS
SELECT lakestream_local_time(window_start, 'America/Los_Angeles') AS hour_start,
       window_start AS hour_start_utc,
       SUM(calls) AS calls
FROM crime_type_hourly
GROUP BY window_start;

-- Calls per hour and crime type.
CREATE OR REPLACE VIEW v_calls_per_hour_by_type AS
SELECT lakestream_local_time(window_start, 'America/Los_Angeles') AS hour_start,
       window_start AS hour_start_utc,
       original_crime_type_name AS crime_type,
       calls
FROM crime_type_hourly;

-- The 10 most frequent crime types of the latest (local) day with calls.
CREATE OR REPLACE VIEW v_top_crime_types_latest_day AS
SELECT DATE(lakestream_local_time(h.window_start, 'America/Los_Angeles')) AS day,
       h.original_crime_type_name AS crime_type,
       SUM(h.calls) AS calls
FROM crime_type_hourly h
WHERE lakestream_local_time(h.window_start, 'America/Los_Angeles') >=
      (SELECT DATE(lakestream_local_time(MAX(window_start), 'America/Los_Angeles'))
       FROM crime_type_hourly)
GROUP BY 1, h.original_crime_type_name
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
SELECT lakestream_local_time(window_start, 'America/Los_Angeles') AS window_start,
       lakestream_local_time(window_end, 'America/Los_Angeles') AS window_end,
       window_start AS window_start_utc,
       window_end AS window_end_utc,
       original_crime_type_name AS crime_type,
       calls
FROM crime_type_windows
WHERE window_end > (SELECT MAX(window_end) - INTERVAL 1 HOUR FROM crime_type_windows);
