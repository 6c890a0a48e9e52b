-- purpose: Envelope-from domains that look like the policy domain (small edit distance or digit/letter swaps) without being it.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: max_distance int = 2 | flag registrable domains within this Damerau-Levenshtein distance
-- param: domain text = NULL | only this policy domain (default: every domain)
-- Lookalike bounce domains (examp1e.com, exarnple.com) are registered to
-- make phishing look routine. The homoglyph check folds 0→o, 1→l, 3→e,
-- 5→s, rn→m, vv→w before comparing; punycode (xn--) names are flagged too.
-- Your own policy domains are never reported as lookalikes of each other.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
own AS (
    SELECT DISTINCT domain FROM v_records
),
env AS (
    SELECT r.domain, r.envelope_from, r.source_ip, r.day, r.count, r.dmarc_pass,
           coalesce(nullif(regexp_extract(r.envelope_from,
               '[^.]+\.(?:(?:co|com|net|org|gov|edu|ac)\.[a-z]{2}|[^.]+)$'), ''), r.envelope_from) AS env_org,
           coalesce(nullif(regexp_extract(r.domain,
               '[^.]+\.(?:(?:co|com|net|org|gov|edu|ac)\.[a-z]{2}|[^.]+)$'), ''), r.domain) AS own_org
    FROM v_records r, bounds b
    WHERE r.envelope_from IS NOT NULL
      AND r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
),
scored AS (
    SELECT *,
           damerau_levenshtein(env_org, own_org) AS distance,
           replace(replace(replace(replace(replace(replace(replace(env_org,
               '0', 'o'), '1', 'l'), '3', 'e'), '5', 's'), 'rn', 'm'), 'vv', 'w'), 'i', 'l')
             = replace(replace(replace(replace(replace(replace(replace(own_org,
               '0', 'o'), '1', 'l'), '3', 'e'), '5', 's'), 'rn', 'm'), 'vv', 'w'), 'i', 'l') AS homoglyph,
           env_org LIKE 'xn--%' OR env_org LIKE '%.xn--%' AS punycode
    FROM env
    WHERE env_org <> own_org
      AND env_org NOT IN (SELECT domain FROM own)
)
SELECT domain, envelope_from, env_org AS envelope_org, distance, homoglyph, punycode,
       sum(count)::BIGINT AS messages,
       coalesce(sum(count) FILTER (WHERE dmarc_pass), 0)::BIGINT AS passed,
       min(day) AS first_seen, max(day) AS last_seen,
       list_sort(list_distinct(list(source_ip))) AS source_ips
FROM scored
WHERE distance <= $max_distance::INTEGER OR homoglyph OR punycode
GROUP BY domain, envelope_from, env_org, distance, homoglyph, punycode
ORDER BY distance, messages DESC, domain, envelope_from;
