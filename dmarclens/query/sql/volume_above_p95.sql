-- purpose: Sources whose volume on as_of exceeds their own 95th percentile over the previous days.
-- param: as_of date = NULL | the day to check (default: the newest day in the data)
-- param: baseline_days int = 28 | how many days before as_of make the baseline
-- param: factor float = 1.0 | flag when today's volume > factor × p95
-- param: min_baseline_days int = 7 | ignore sources seen on fewer baseline days (see new_passing_sources)
-- param: min_messages int = 20 | ignore sources with fewer messages on as_of
-- param: domain text = NULL | only this policy domain (default: every domain)
-- A compromised account inside an authorized provider passes DMARC like the
-- real mail; what gives it away is volume. The baseline counts only days on
-- which the source sent, so an irregular sender is compared with its busy days.
-- The newest day may still be incomplete (reports arrive over a day or two),
-- which can hide a spike but never invents one.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
daily AS (
    SELECT r.domain, r.source_ip, r.day, sum(r.count)::BIGINT AS messages,
           coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT AS passed,
           any_value(r.service_name) AS service_name
    FROM v_records r, bounds b
    WHERE r.day >= b.as_of - $baseline_days::INTEGER AND r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
    GROUP BY r.domain, r.source_ip, r.day
),
baseline AS (
    SELECT d.domain, d.source_ip, quantile_cont(d.messages, 0.95) AS p95, median(d.messages) AS median,
           count(*) AS baseline_days_seen
    FROM daily d, bounds b
    WHERE d.day < b.as_of
    GROUP BY d.domain, d.source_ip
)
SELECT t.domain, t.source_ip, t.service_name, t.day, t.messages, t.passed,
       round(s.p95, 1) AS p95, s.median, s.baseline_days_seen,
       round(t.messages / s.p95, 2) AS ratio
FROM daily t
JOIN baseline s USING (domain, source_ip)
JOIN bounds b ON t.day = b.as_of
WHERE s.baseline_days_seen >= $min_baseline_days::INTEGER
  AND t.messages >= $min_messages::INTEGER
  AND t.messages > $factor::DOUBLE * s.p95
ORDER BY ratio DESC, t.domain, t.source_ip;
