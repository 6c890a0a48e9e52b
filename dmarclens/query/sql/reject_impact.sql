-- purpose: What p=reject would do, source by source: failing mail that receivers still delivered.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- would_reject is failing mail with no receiver override that was not
-- already rejected: what a reject policy would block. overridden is failing
-- mail the receiver let through for a stated reason (forwarded, mailing list,
-- local policy), which receivers tend to keep doing under reject. A source
-- with a high pass_rate and some would_reject is probably yours and partly
-- misconfigured: fix it before moving to reject.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
)
SELECT r.domain, r.source_ip, any_value(r.service_name) AS service_name, any_value(r.country) AS country,
       arg_max(r.policy_p, r.day) AS policy_p,
       sum(r.count)::BIGINT AS messages,
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass), 0)::BIGINT AS failed,
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass AND r.disposition = 'reject'), 0)::BIGINT
           AS already_rejected,
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass AND r.disposition <> 'reject'
                                       AND len(coalesce(r.override_reasons, [])) > 0), 0)::BIGINT AS overridden,
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass AND r.disposition <> 'reject'
                                       AND len(coalesce(r.override_reasons, [])) = 0), 0)::BIGINT AS would_reject,
       round(coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0) / sum(r.count), 3) AS pass_rate
FROM v_records r, bounds b
WHERE r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
  AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
GROUP BY r.domain, r.source_ip
HAVING overridden + would_reject > 0
ORDER BY would_reject DESC, overridden DESC, r.domain, r.source_ip;
