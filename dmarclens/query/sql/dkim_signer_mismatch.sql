-- purpose: Mail that passed DMARC while carrying a passing DKIM signature from another organisation than the header From.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- The foreign signer shows who really handled the message: an ESP's shared
-- domain (sendgrid.net, a tenant's onmicrosoft.com name), a partner's platform.
-- A signer you do not recognise on mail that passes is the lead to follow.
-- Organisations are compared by their last two labels (three under co, com,
-- net, org, gov, edu or ac plus a country code); a rough stand-in for the
-- public suffix list.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
signed AS (
    SELECT r.domain, r.header_from, r.source_ip, r.service_name, r.day, r.count,
           unnest(r.dkim) AS sig
    FROM v_records r, bounds b
    WHERE r.dmarc_pass
      AND r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
),
orgs AS (
    SELECT *,
           coalesce(nullif(regexp_extract(sig.domain,
               '[^.]+\.(?:(?:co|com|net|org|gov|edu|ac)\.[a-z]{2}|[^.]+)$'), ''), sig.domain) AS signer_org,
           coalesce(nullif(regexp_extract(header_from,
               '[^.]+\.(?:(?:co|com|net|org|gov|edu|ac)\.[a-z]{2}|[^.]+)$'), ''), header_from) AS from_org
    FROM signed
    WHERE sig.result = 'pass' AND sig.domain IS NOT NULL
)
SELECT domain,
       sig.domain AS signer,
       list_sort(list_distinct(list(sig.selector))) AS selectors,
       list_sort(list_distinct(list(header_from))) AS header_froms,
       list_sort(list_distinct(list(source_ip))) AS source_ips,
       list_sort(list_distinct(list(service_name))) AS services,
       sum(count)::BIGINT AS messages,
       min(day) AS first_seen,
       max(day) AS last_seen
FROM orgs
WHERE signer_org <> from_org
GROUP BY domain, sig.domain
ORDER BY messages DESC, domain, signer;
