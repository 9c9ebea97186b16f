-- Rollups of one metric on one line at one resolution, buckets starting in [start_ms, end_ms),
-- with mean = sum / count and variance = m2 / count (population; m2 is the stable centered sum).
-- :line        line_id
-- :metric      metric
-- :resolution  choice(1m,5m,1h,1d)
-- :start_ms    time_ms
-- :end_ms      time_ms
SELECT
  metric, bucket_start_ms, "count", "sum", "min", "max", sum2, m2,
  "sum" / "count" AS mean,
  m2 / "count" AS variance
FROM rollups
WHERE res = :resolution
  AND line = :line
  AND "month" BETWEEN :start_ms_month AND :end_ms_month
  AND metric = :metric
  AND bucket_start_ms >= :start_ms
  AND bucket_start_ms < :end_ms
ORDER BY bucket_start_ms
