-- Samples of one metric on one line with time_ms in [start_ms, end_ms), in time order.
-- :line      line_id
-- :metric    metric
-- :start_ms  time_ms
-- :end_ms    time_ms
SELECT thing_name, line_id, metric, time_ms, "value", seq, ingest_time_ms
FROM curated_samples
WHERE line = :line
  AND event_date BETWEEN :start_ms_date AND :end_ms_date
  AND metric = :metric
  AND time_ms >= :start_ms
  AND time_ms < :end_ms
ORDER BY time_ms, thing_name, seq
