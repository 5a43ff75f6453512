-- Calls per original crime type in 10-minute windows sliding every 5 minutes.
-- Append mode: each window is written once, when the watermark (60 minutes behind the
-- latest call time) passes its end, and never changes after.
SELECT
    window_start,
    window_end,
    original_crime_type_name,
    count(*) AS calls
FROM hop(police_calls, call_date_time, '10 minutes', '5 minutes')
GROUP BY window_start, window_end, original_crime_type_name
