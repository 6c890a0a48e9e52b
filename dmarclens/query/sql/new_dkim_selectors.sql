-- purpose: DKIM selectors (signing domain + selector) first seen in the last N days, with how their mail fared.
-- param: days int = 14 | a selector is new when first seen within the last N days, as_of included
-- param: as_of date = NULL | the day to look back from (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- A new selector on your own domain means someone published (or was given)
-- a new signing key: a new service, a new tenant, or an attacker with DNS or
-- admin access. Each one should match a change you know about.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
sigs AS (
    SELECT r.domain, r.day, r.source_ip, r.count, r.dmarc_pass, unnest(r.dkim) AS sig
    FROM v_records r, bounds b
    WHERE r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
),
per_selector AS (
    SELECT domain, sig.domain AS signing_domain, coalesce(sig.selector, '') AS selector,
           min(day) AS first_seen, max(day) AS last_seen,
           sum(count)::BIGINT AS messages,
           coalesce(sum(count) FILTER (WHERE sig.result = 'pass'), 0)::BIGINT AS dkim_pass,
           coalesce(sum(count) FILTER (WHERE dmarc_pass), 0)::BIGINT AS dmarc_pass,
           list_sort(list_distinct(list(source_ip))) AS source_ips
    FROM sigs
    WHERE sig.domain IS NOT NULL
    GROUP BY domain, sig.domain, coalesce(sig.selector, '')
)
SELECT p.*
FROM per_selector p, bounds b
WHERE p.first_seen > b.as_of - $days::INTEGER
ORDER BY p.first_seen DESC, p.messages DESC, p.domain, p.signing_domain, p.selector;
