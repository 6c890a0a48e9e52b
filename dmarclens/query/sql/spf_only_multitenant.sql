-- purpose: DMARC passes that rest on SPF alone from shared (multi-tenant) providers, where any other customer could pass too.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: service_types text = Email Provider,Marketing,SaaS,Email Security,IaaS,Web Host,MSP | comma-separated service types that count as multi-tenant
-- param: domain text = NULL | only this policy domain (default: every domain)
-- An `include:` of a shared provider in your SPF record authorizes every
-- tenant of that provider; without aligned DKIM nothing tells your mail
-- from theirs. These are the sources to move to aligned DKIM first.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
kinds AS (
    SELECT [lower(trim(x)) for x in string_split($service_types::VARCHAR, ',')] AS types
)
SELECT r.domain, r.source_ip, any_value(r.service_name) AS service_name, any_value(r.service_type) AS service_type,
       any_value(r.as_name) AS as_name,
       list_sort(list_distinct(list(r.envelope_from))) AS envelope_froms,
       sum(r.count)::BIGINT AS messages,
       count(DISTINCT r.day) AS days_seen,
       min(r.day) AS first_seen,
       max(r.day) AS last_seen
FROM v_records r, bounds b, kinds k
WHERE r.dmarc_pass AND r.spf_aligned AND NOT r.dkim_aligned
  AND list_contains(k.types, lower(r.service_type))
  AND r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
  AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
GROUP BY r.domain, r.source_ip
ORDER BY messages DESC, r.domain, r.source_ip;
