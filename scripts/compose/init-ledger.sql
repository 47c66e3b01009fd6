-- The migration ledger's database, beside Airflow's metadata database on the same server.
-- Postgres runs this once, when docker-entrypoint-initdb.d meets an empty data volume; the
-- ledger creates its own tables on first use. Its connection is AIRFLOW_CONN_HDH_LEDGER.
CREATE DATABASE hdh_ledger;
