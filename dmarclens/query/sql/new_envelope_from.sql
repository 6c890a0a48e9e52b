-- purpose: Envelope-from (RFC5321.MailFrom) domains never seen before the last N days, per policy domain.
-- param: days int = 14 | a domain is new when first seen within the last N days, as_of included
-- param: as_of date = NULL | the day to look back from (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- The envelope-from names the bounce domain of the platform that sent the
-- mail; a new one is a new platform or a new account on one.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
per_domain AS (
    SELECT r.domain, r.envelope_from,
           min(r.day) AS first_seen, max(r.day) AS last_seen,
           sum(r.count)::BIGINT AS messages,
           coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT AS passed,
           coalesce(sum(r.count) FILTER (WHERE r.spf_aligned), 0)::BIGINT AS spf_aligned,
           list_sort(list_distinct(list(r.source_ip))) AS source_ips
    FROM v_records r, bounds b
    WHERE r.day <= b.as_of AND r.envelope_from IS NOT NULL
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
    GROUP BY r.domain, r.envelope_from
)
SELECT p.*
FROM per_domain p, bounds b
WHERE p.first_seen > b.as_of - $days::INTEGER
ORDER BY p.first_seen DESC, p.messages DESC, p.domain, p.envelope_from;
