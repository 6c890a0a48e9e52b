-- purpose: Header-from subdomains of a policy domain first seen in the last N days.
-- param: days int = 14 | a subdomain is new when first seen within the last N days, as_of included
-- param: as_of date = NULL | the day to look back from (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- Subdomains fall under sp= (often weaker than p=) and are a favourite for
-- spoofing; a new one that passes is a new service someone set up.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
subs AS (
    SELECT r.domain, r.header_from,
           min(r.day) AS first_seen, max(r.day) AS last_seen,
           sum(r.count)::BIGINT AS messages,
           coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT AS passed,
           list_sort(list_distinct(list(r.source_ip))) AS source_ips
    FROM v_records r, bounds b
    WHERE r.day <= b.as_of
      AND r.header_from <> r.domain AND r.header_from LIKE '%.' || r.domain
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
    GROUP BY r.domain, r.header_from
)
SELECT s.*
FROM subs s, bounds b
WHERE s.first_seen > b.as_of - $days::INTEGER
ORDER BY s.first_seen DESC, s.messages DESC, s.domain, s.header_from;
