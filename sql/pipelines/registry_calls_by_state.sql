-- Calls and their amount per state (an Avro or Protobuf enum, a JSON Schema enum: a
-- string column) and district (a field of a nested record, message or object).
-- Complete mode: each micro-batch replaces the result.
SELECT
    state,
    place['district'] AS district,
    count(*) AS calls,
    sum(amount) AS amount
FROM calls
GROUP BY state, place['district']
