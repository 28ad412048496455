-- setup: the extension installs its schema, tables, view and API
CREATE EXTENSION wasend;
SELECT n.nspname, c.relname, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'wasend' AND c.relkind IN ('r', 'v')
 ORDER BY 2;
SELECT p.oid::regprocedure AS api
  FROM pg_proc p
 WHERE p.proname LIKE 'wasend\_%' AND p.pronamespace = 'wasend'::regnamespace
 ORDER BY p.oid::regprocedure::text;
-- the settings are defined, with their documented defaults
SELECT name, setting, unit, context FROM pg_settings
 WHERE name LIKE 'wasend.%' AND name NOT IN ('wasend.workers') ORDER BY name;
