-- Rollups of one role (the use case's taxonomy) across lines whose metric keys and units differ,
-- converted to the role's unit: role value = key value * scale + offset. sum, mean, min and max
-- convert linearly (a negative scale swaps min and max); variance scales by scale^2.
-- :use_case    use_case
-- :role        role
-- :lines       line_ids
-- :resolution  choice(1m,5m,1h,1d)
-- :start_ms    time_ms
-- :end_ms      time_ms
WITH taxonomy (line, metric, role, unit, scale, "offset") AS (
  VALUES
    :taxonomy
)
SELECT
  r.line, t.role, t.unit, r.metric, r.bucket_start_ms, r."count",
  r."sum" * t.scale + r."count" * t."offset" AS "sum",
  CASE WHEN t.scale > 0 THEN r."min" ELSE r."max" END * t.scale + t."offset" AS "min",
  CASE WHEN t.scale > 0 THEN r."max" ELSE r."min" END * t.scale + t."offset" AS "max",
  (r."sum" / r."count") * t.scale + t."offset" AS mean,
  (r.m2 / r."count") * t.scale * t.scale AS variance
FROM rollups AS r
JOIN taxonomy AS t
  ON t.line = r.line
  AND t.metric = r.metric
WHERE r.res = :resolution
  AND r.line IN (:lines)
  AND t.role = :role
  AND r."month" BETWEEN :start_ms_month AND :end_ms_month
  AND r.bucket_start_ms >= :start_ms
  AND r.bucket_start_ms < :end_ms
ORDER BY r.line, r.bucket_start_ms
