-- purpose: Sources (policy domain × IP) first seen in the last N days whose mail already passes DMARC.
-- param: days int = 14 | a source is new when its first message is within the last N days, as_of included
-- param: as_of date = NULL | the day to look back from (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- Abuse that passes DMARC usually comes from somewhere new: a fresh tenant in
-- your own provider, a new ESP account, a leaked API key used from a new pool.
-- Only data up to as_of counts, so the query can be replayed for a past day.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
sources AS (
    SELECT r.domain, r.source_ip,
           any_value(r.service_name) AS service_name, any_value(r.service_type) AS service_type,
           any_value(r.asn) AS asn, any_value(r.as_name) AS as_name, any_value(r.country) AS country,
           any_value(r.reverse_dns) AS reverse_dns,
           min(r.day) AS first_seen, max(r.day) AS last_seen,
           sum(r.count)::BIGINT AS messages,
           coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT AS passed,
           list_sort(list_distinct(list(r.org_name))) AS reporters
    FROM v_records r, bounds b
    WHERE r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
    GROUP BY r.domain, r.source_ip
)
SELECT s.domain, s.source_ip, s.service_name, s.service_type, s.asn, s.as_name, s.country, s.reverse_dns,
       s.first_seen, s.last_seen, s.messages, s.passed, round(s.passed / s.messages, 3) AS pass_rate,
       s.reporters
FROM sources s, bounds b
WHERE s.first_seen > b.as_of - $days::INTEGER
  AND s.passed > 0
ORDER BY s.passed DESC, s.domain, s.source_ip;
