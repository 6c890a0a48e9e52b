-- purpose: The top sources of DMARC-failing mail in each country, countries ordered by failing volume.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: top int = 5 | sources to list per country
-- param: domain text = NULL | only this policy domain (default: every domain)
-- Countries come from the IP database; '??' means unknown. Forwarded mail
-- fails too and shows up under the forwarder's country (see forwarded_share).
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
per_source AS (
    SELECT coalesce(r.country, '??') AS country, r.source_ip,
           any_value(r.service_name) AS service_name, any_value(r.as_name) AS as_name,
           coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass), 0)::BIGINT AS failed,
           sum(r.count)::BIGINT AS messages,
           list_sort(list_distinct(list(r.domain))) AS domains
    FROM v_records r, bounds b
    WHERE r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
    GROUP BY coalesce(r.country, '??'), r.source_ip
),
ranked AS (
    SELECT *,
           sum(failed) OVER (PARTITION BY country)::BIGINT AS country_failed,
           row_number() OVER (PARTITION BY country ORDER BY failed DESC, source_ip) AS rank
    FROM per_source
    WHERE failed > 0
)
SELECT country, country_failed, rank, source_ip, service_name, as_name, failed, messages, domains
FROM ranked
WHERE rank <= $top::INTEGER
ORDER BY country_failed DESC, country, rank;
