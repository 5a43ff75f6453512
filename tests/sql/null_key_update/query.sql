-- Calls per original crime type per hour. Update mode: every micro-batch MERGEs the
-- (hour, crime type) rows it changed, with their new totals.
SELECT
    window_start,
    window_end,
    original_crime_type_name,
    count(*) AS calls
FROM tumble(police_calls, call_date_time, '1 hour')
GROUP BY window_start, window_end, original_crime_type_name
