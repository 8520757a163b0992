-- Metabase: the columns of a saved native question that was never run, fetched by running it with LIMIT 0
-- source: https://github.com/metabase/metabase/issues/50105 ("currently we run the query with a LIMIT 0 to fetch the metadata"); https://github.com/metabase/metabase/issues/30170
-- expect: answered
-- charged: no

SELECT * FROM visits LIMIT 0
