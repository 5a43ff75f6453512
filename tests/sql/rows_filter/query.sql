-- Arrests only, with the crime type upper-cased and the hour of the call.
SELECT
    crime_id,
    upper(original_crime_type_name) AS crime_type,
    date_part('hour', call_date_time) AS hour
FROM police_calls
WHERE disposition = 'ARR'
