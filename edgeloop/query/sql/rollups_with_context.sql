-- 1-minute rollups of one metric on one line joined to the line's context slices: each bucket
-- gets the context of the slice [slice_start_ms, slice_end_ms) it starts in (nulls outside every
-- slice), as functions/context/logic.py join_context does.
-- :line      line_id
-- :metric    metric
-- :start_ms  time_ms
-- :end_ms    time_ms
SELECT
  r.metric, r.bucket_start_ms, r."count", r."sum", r."min", r."max", r.sum2, r.m2,
  r."sum" / r."count" AS mean,
  r.m2 / r."count" AS variance,
  c.run_id, c.run_value, c.state_id, c.state_value, c.shift_id, c.shift_value,
  c.work_order_id, c.work_order_value, c.limits_id, c.limits_value,
  c.spec_target_metric, c.spec_lower, c.spec_upper
FROM rollups AS r
-- The slices are filtered in a subquery: Athena's injected `line` projection needs a static
-- equality on it, and a WHERE on c would turn the LEFT JOIN into an inner one.
LEFT JOIN (SELECT * FROM context_slices WHERE line = :line) AS c
  ON r.bucket_start_ms >= c.slice_start_ms
  AND r.bucket_start_ms < c.slice_end_ms
WHERE r.res = '1m'
  AND r.line = :line
  AND r."month" BETWEEN :start_ms_month AND :end_ms_month
  AND r.metric = :metric
  AND r.bucket_start_ms >= :start_ms
  AND r.bucket_start_ms < :end_ms
ORDER BY r.bucket_start_ms
