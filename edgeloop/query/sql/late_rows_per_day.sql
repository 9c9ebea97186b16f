-- Rows that arrived beyond the lateness SLA, per line and ingest date (UTC), with their delays.
-- :lines      line_ids
-- :from_date  date
-- :to_date    date
SELECT
  line, ingest_date,
  COUNT(*) AS late_rows,
  COUNT(DISTINCT thing_name) AS things,
  MIN(ingest_time_ms - time_ms) AS min_delay_ms,
  MAX(ingest_time_ms - time_ms) AS max_delay_ms
FROM late_samples
WHERE line IN (:lines)
  AND ingest_date BETWEEN :from_date AND :to_date
GROUP BY line, ingest_date
ORDER BY line, ingest_date
