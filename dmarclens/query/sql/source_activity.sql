-- purpose: Day-by-day activity of one source IP: which domains, which reporters, what passed.
-- param: ip text | the source IP to look at
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- The drill-down after any other query flagged an IP.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
)
SELECT r.day, r.domain, r.org_name AS reporter,
       sum(r.count)::BIGINT AS messages,
       coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT AS passed,
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass), 0)::BIGINT AS failed,
       list_sort(list_distinct(list(r.header_from))) AS header_froms,
       list_sort(list_distinct(list(r.envelope_from))) AS envelope_froms,
       list_sort(list_distinct(list(r.disposition))) AS dispositions
FROM v_records r, bounds b
WHERE r.source_ip = $ip::VARCHAR
  AND r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
GROUP BY r.day, r.domain, r.org_name
ORDER BY r.day, r.domain, reporter;
