-- Calls per disposition, with the description from the radio_code lookup table.
-- A disposition without a code keeps its calls (left join) and is labelled as such.
-- Complete mode: every micro-batch replaces the whole result atomically.
SELECT
    c.disposition,
    coalesce(r.description, 'No radio code') AS description,
    count(*) AS calls
FROM police_calls c
LEFT JOIN radio_code r ON c.disposition = r.disposition_code
GROUP BY c.disposition, coalesce(r.description, 'No radio code')
